-- 0002: remember the last TOTP time step accepted per admin, so a code cannot be replayed.
ALTER TABLE admins ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT 0;
