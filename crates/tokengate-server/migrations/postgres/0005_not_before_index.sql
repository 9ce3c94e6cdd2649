-- Every running server re-reads the revocations of the last access-token
-- lifetime every 2 seconds (a revocation committed late, or by a host whose
-- clock lags, must still arrive): global logouts need an index too.
CREATE INDEX users_not_before ON users(not_before);
