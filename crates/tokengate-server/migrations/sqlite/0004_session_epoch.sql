-- A per-user session epoch: "log out everywhere", a password change and
-- disabling move it on; a session is created only under the epoch its login
-- read, and refreshes only while its epoch is the user's. A login still
-- hashing when the epoch moves cannot start a session that outlives it.
ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN user_epoch INTEGER NOT NULL DEFAULT 0;
