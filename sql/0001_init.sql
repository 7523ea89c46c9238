-- 0001: the initial schema. Never edit a migration once it has landed; add 0002_... instead.
-- Times are UTC text in SQLite's 'YYYY-MM-DD HH:MM:SS' form. Booleans are 0/1 with CHECKs.

CREATE TABLE admins (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    totp_secret   TEXT,
    totp_enabled  INTEGER NOT NULL DEFAULT 0 CHECK (totp_enabled IN (0, 1)),
    created_at    TEXT    NOT NULL DEFAULT (datetime('now')),
    updated_at    TEXT    NOT NULL DEFAULT (datetime('now'))
);

CREATE TABLE domains (
    id               INTEGER PRIMARY KEY,
    domain           TEXT    NOT NULL UNIQUE,
    active           INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    dkim_selector    TEXT,
    dkim_private_key TEXT,
    dkim_public_key  TEXT,
    created_at       TEXT    NOT NULL DEFAULT (datetime('now')),
    updated_at       TEXT    NOT NULL DEFAULT (datetime('now'))
);

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    domain_id     INTEGER NOT NULL REFERENCES domains (id) ON DELETE RESTRICT,
    username      TEXT    NOT NULL,             -- the local part; the address is username@domain
    password_hash TEXT    NOT NULL,             -- PHC string, $argon2id$...
    name          TEXT    NOT NULL DEFAULT '',
    active        INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    quota         INTEGER NOT NULL DEFAULT 0 CHECK (quota >= 0),   -- MiB; 0 = unlimited
    created_at    TEXT    NOT NULL DEFAULT (datetime('now')),
    updated_at    TEXT    NOT NULL DEFAULT (datetime('now')),
    UNIQUE (domain_id, username)
);

CREATE TABLE aliases (
    id               INTEGER PRIMARY KEY,
    domain_id        INTEGER NOT NULL REFERENCES domains (id) ON DELETE RESTRICT,
    source           TEXT    NOT NULL UNIQUE,   -- full address, or '@domain' for a catch-all
    destination      TEXT    NOT NULL,          -- comma-separated addresses
    active           INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    tracking_enabled INTEGER NOT NULL DEFAULT 0 CHECK (tracking_enabled IN (0, 1)),
    created_at       TEXT    NOT NULL DEFAULT (datetime('now')),
    updated_at       TEXT    NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX aliases_domain ON aliases (domain_id);

CREATE TABLE tracked_messages (
    id         INTEGER PRIMARY KEY,
    message_id TEXT    NOT NULL UNIQUE,         -- the 128-bit random tracking id in the pixel URL
    sender     TEXT    NOT NULL,
    recipient  TEXT    NOT NULL,                -- all envelope recipients, comma-separated
    subject    TEXT    NOT NULL DEFAULT '',
    alias_id   INTEGER REFERENCES aliases (id) ON DELETE SET NULL,
    created_at TEXT    NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX tracked_messages_created ON tracked_messages (created_at);
CREATE INDEX tracked_messages_alias ON tracked_messages (alias_id, created_at);

CREATE TABLE pixel_opens (
    id         INTEGER PRIMARY KEY,
    message_id TEXT    NOT NULL REFERENCES tracked_messages (message_id) ON DELETE CASCADE,
    client_ip  TEXT    NOT NULL DEFAULT '',
    user_agent TEXT    NOT NULL DEFAULT '',
    opened_at  TEXT    NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX pixel_opens_message ON pixel_opens (message_id, opened_at);
CREATE INDEX pixel_opens_opened ON pixel_opens (opened_at);

-- Server settings (host name, ports, relay host, ...), written by `mailserver init` from the environment.
CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
