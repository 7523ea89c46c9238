-- tracking.db 0001: what the milter and the pixel endpoint share, in a database of its own so that the
-- milter's user can open it without being able to read the main database (admins, account hashes).
-- The tables tracked_messages and pixel_opens moved here from the main database (its 0005); `mailserver
-- init` copies their rows over before the main database drops them. Never edit once landed.

CREATE TABLE tracked_messages (
    id          INTEGER PRIMARY KEY,
    tracking_id TEXT    NOT NULL UNIQUE,        -- the 128-bit random id in the pixel URL
    sender      TEXT    NOT NULL,
    recipients  TEXT    NOT NULL,               -- all envelope recipients, comma-separated
    subject     TEXT    NOT NULL DEFAULT '',
    -- aliases.id in the main database; no foreign key can cross the two files: the dashboard's
    -- connections set it to NULL when the alias is deleted (a TEMP trigger, see src/db.rs), and
    -- every apply clears ids of aliases that no longer exist.
    alias_id    INTEGER,
    created_at  TEXT    NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX tracked_messages_created ON tracked_messages (created_at);
CREATE INDEX tracked_messages_alias ON tracked_messages (alias_id, created_at);

CREATE TABLE pixel_opens (
    id          INTEGER PRIMARY KEY,
    tracking_id TEXT    NOT NULL REFERENCES tracked_messages (tracking_id) ON DELETE CASCADE,
    client_ip   TEXT    NOT NULL DEFAULT '',
    user_agent  TEXT    NOT NULL DEFAULT '',
    opened_at   TEXT    NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX pixel_opens_message ON pixel_opens (tracking_id, opened_at);
CREATE INDEX pixel_opens_opened ON pixel_opens (opened_at);

-- The tracking policy, rendered by root's apply from the main database after every change: the
-- addresses of active aliases with tracking on, in active domains, with their aliases.id.
CREATE TABLE tracked_aliases (
    address  TEXT    NOT NULL PRIMARY KEY,
    alias_id INTEGER NOT NULL
);

-- Settings the milter needs, rendered by apply likewise (PIXEL_BASE_URL).
CREATE TABLE policy_settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
