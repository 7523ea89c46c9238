//! The `settings` table: one `KEY = value` row per setting, written by `mailserver init` from the
//! environment and read by every process. What the values mean and how they are validated is
//! [`crate::settings`]; this module only stores and loads them.

use std::collections::BTreeMap;

use rusqlite::Connection;

use crate::settings::{Settings, SettingsError};

/// Loads the settings `mailserver init` stored.
pub fn load(conn: &Connection) -> Result<Settings, SettingsError> {
    let map = stored(conn)?;
    if map.is_empty() {
        return Err(SettingsError::NotInitialised);
    }
    Settings::from_map(&map)
}

/// Merges the environment over what is stored (and over `defaults` for keys never set), validates,
/// and stores the result.
pub fn init_from_env(
    conn: &Connection,
    env: impl Fn(&str) -> Option<String>,
    defaults: &BTreeMap<String, String>,
) -> Result<Settings, SettingsError> {
    let settings = Settings::merge(stored(conn)?, env, defaults)?;
    let tx = conn.unchecked_transaction()?;
    for (k, v) in settings.to_map() {
        tx.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (k, v),
        )?;
    }
    tx.commit()?;
    Ok(settings)
}

fn stored(conn: &Connection) -> Result<BTreeMap<String, String>, SettingsError> {
    let mut stmt = conn.prepare("SELECT key, value FROM settings")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored values survive a later init whose environment lacks them; a present variable wins.
    #[test]
    fn init_keeps_what_the_environment_does_not_set() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open(&dir.path().join("t.db"), 1).unwrap();
        let conn = pool.get().unwrap();
        assert!(matches!(load(&conn), Err(SettingsError::NotInitialised)));
        let defaults = [("HOSTNAME".to_string(), "mx.example.com".to_string())].into();
        let env = |k: &str| (k == "SMTP_PORT").then(|| "2525".to_string());
        init_from_env(&conn, env, &defaults).unwrap();
        let env = |k: &str| (k == "HOSTNAME").then(|| "mail.example.org".to_string());
        let s = init_from_env(&conn, env, &BTreeMap::new()).unwrap();
        assert_eq!(s.ports.smtp, 2525);
        assert_eq!(s.hostname.to_string(), "mail.example.org");
        assert_eq!(load(&conn).unwrap().to_map(), s.to_map());
    }
}
