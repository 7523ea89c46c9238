-- 0004: the dashboard's login state moves from the web process's memory into the database, where
-- `mailserver admin reset-password` (another process) can clear it, and a restart of the dashboard
-- neither forgets a lockout nor logs anyone out.

-- Failed (and in-flight) login attempts, per client address and per address + user name. A row is
-- counted before the password is checked and deleted by a successful login; see
-- src/store/login_limiter.rs. Times are Unix seconds.
CREATE TABLE login_failures (
    key          TEXT    PRIMARY KEY,              -- 'ip <address>' or 'ip+user <address> <name>'
    attempts     INTEGER NOT NULL,
    last_attempt INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX login_failures_last_attempt ON login_failures (last_attempt);

-- Dashboard sessions. Only the SHA-256 of the cookie's random id is stored, so a copy of the
-- database does not hand out live sessions. See src/store/sessions.rs. Times are Unix seconds.
CREATE TABLE admin_sessions (
    id_sha256  TEXT    PRIMARY KEY,                 -- lowercase hex
    username   TEXT    NOT NULL REFERENCES admins (username) ON DELETE CASCADE,
    csrf       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX admin_sessions_username ON admin_sessions (username);
CREATE INDEX admin_sessions_last_seen ON admin_sessions (last_seen);
