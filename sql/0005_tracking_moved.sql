-- 0005: tracked_messages and pixel_opens moved to their own database, tracking.db (sql/tracking/), so
-- that the milter reads nothing else. `mailserver init` (root) copies their rows into tracking.db and
-- commits that before this migration drops them here (src/db.rs, `move_tracking`); a database with
-- tracking rows is never migrated without a tracking.db to copy them to.
-- BIN_DIR and RELAYHOST are no longer settings: they end up in command lines and in main.cf, which root
-- acts on, so they come from root's environment and the image only (see src/settings.rs).
-- domains.dkim_private_key stays as a column, NULL everywhere after the first apply (the key files are
-- the source of truth); a later migration may drop it.
DROP TABLE pixel_opens;
DROP TABLE tracked_messages;
DELETE FROM settings WHERE key IN ('BIN_DIR', 'RELAYHOST');
