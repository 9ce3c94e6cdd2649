-- Key rotation: a key is published when created, signs from activates_at,
-- and verifies until retired_at (the end of the last token it signed).
ALTER TABLE signing_keys ADD COLUMN activates_at BIGINT;
UPDATE signing_keys SET activates_at = created_at;
