-- GET /admin/stats counts the audit rows of its window (at most a week) by
-- hour and kind: `WHERE at >= $1 AND at < $2 GROUP BY bucket, kind`. On
-- (at, kind) that is one range scan of the index alone (SQLite: a covering
-- index; PostgreSQL: an index-only scan), never a read of the rows' details.
-- It replaces the index on (at) alone, which it serves as well (the
-- retention prune, `at < $1`), so each audit row still costs one index
-- more than the table, not two.
CREATE INDEX audit_events_at_kind ON audit_events(at, kind);
DROP INDEX audit_events_at;
