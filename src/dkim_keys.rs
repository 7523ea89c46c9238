//! The DKIM private key files: `dkim/<domain>/<selector>.private`, the keys' only copy.
//!
//! Why files and not the database: the dashboard's user can read the main database, and must never
//! read a private key (issue 12). So the key pair is made here, by root's apply, never by the
//! process that asked for it: adding a domain or rotating its key only stores a selector, and
//! [`ensure`] (run by every apply before the snapshot is read) makes each missing key, writes its
//! file and stores the public half for the DNS records. A key whose file exists is kept (its public
//! half is read back from it when the database lacks it, e.g. after a crash between the two
//! writes); a database of an older version that still holds private keys has them written to their
//! files (when missing) and cleared.
//!
//! Who can touch what: `dkim/` is root's (0755); each domain's directory is root:opendkim 0750, so
//! only root writes there and only OpenDKIM (and root) can enter; each key is opendkim 0600, as
//! OpenDKIM's RequireSafeKeys wants. A key is written to a temp file made with `O_EXCL |
//! O_NOFOLLOW`, given to opendkim through its descriptor, synced and renamed into place.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::apply::{ApplyError, io};
use crate::dkim;
use crate::paths::Paths;
use crate::store::{StoreError, domains};
use crate::system::{self, Owner, SystemUsers};

/// The mode of each domain's key directory (root:opendkim).
pub const DIR_MODE: u32 = 0o750;
/// The mode of each key file (opendkim's).
pub const KEY_MODE: u32 = 0o600;

/// What [`ensure`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Made {
    /// Key files written (new keys, or keys moved out of the database).
    pub written: Vec<PathBuf>,
}

/// Makes every missing key, moves private keys out of the database, and stores the public keys.
pub fn ensure(paths: &Paths, conn: &Connection, users: &SystemUsers) -> Result<Made, ApplyError> {
    let mut made = Made::default();
    // Keys an older version kept in the database: to their files first, then out of the database.
    for (id, selector, pem) in domains::legacy_private_keys(conn)? {
        let Some(record) = domains::list(conn)?.into_iter().find(|d| d.id == id) else {
            continue;
        };
        let path = paths.dkim_key(&record.domain, &selector);
        key_dir(&path, users)?;
        if !is_file(&path) {
            write_key(&path, pem.as_bytes(), users)?;
            made.written.push(path);
        }
        domains::forget_private_key(conn, id, &selector)?;
    }
    for record in domains::list(conn)? {
        let Some(key) = &record.dkim else { continue };
        let path = paths.dkim_key(&record.domain, &key.selector);
        key_dir(&path, users)?;
        if is_file(&path) {
            system::own_safely(&path, Owner::Opendkim, KEY_MODE, users)
                .map_err(|e| unsafe_key(&path, e))?;
            if key.public_b64.is_none() {
                let public = dkim::public_of(&read_key(&path)?).map_err(StoreError::from)?;
                domains::set_public_key(conn, record.id, &key.selector, &public)?;
            }
            continue;
        }
        let pair = dkim::generate().map_err(StoreError::from)?;
        write_key(&path, pair.private_pem.as_bytes(), users)?;
        made.written.push(path);
        // After a rotation meanwhile this stores nothing: the next apply makes the new selector's
        // key, and this file is pruned.
        domains::set_public_key(conn, record.id, &key.selector, &pair.public_b64)?;
        tracing::info!(domain = %record.domain, selector = %key.selector, "made a DKIM key");
    }
    Ok(made)
}

fn unsafe_key(path: &Path, e: system::UnsafePathError) -> ApplyError {
    ApplyError::Io {
        action: "check",
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// True when `path` is there as a file of its own (a link or anything else counts as missing, and
/// is replaced by the rename).
fn is_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

fn read_key(path: &Path) -> Result<String, ApplyError> {
    let mut text = String::new();
    system::open_unlinked_regular(path)
        .map_err(|e| unsafe_key(path, e))?
        .read_to_string(&mut text)
        .map_err(io("read", path))?;
    Ok(text)
}

/// Creates (or puts right) the key's directory: root:opendkim 0750. Its parent `dkim/` is root's
/// alone, so the name cannot have been replaced by anyone else.
fn key_dir(key: &Path, users: &SystemUsers) -> Result<(), ApplyError> {
    let dir = key.parent().expect("a key file has a directory");
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    Owner::RootOpendkimGroup
        .set_on(dir, DIR_MODE, users)
        .map_err(io("set the owner and mode of", dir))
}

/// Writes a key file through [`system::replace_file`] ([`KEY_MODE`]), made OpenDKIM's through its
/// descriptor.
fn write_key(path: &Path, pem: &[u8], users: &SystemUsers) -> Result<(), ApplyError> {
    system::replace_file(path, pem, KEY_MODE, |out, _| {
        if nix::unistd::geteuid().is_root() {
            let (uid, gid) = Owner::Opendkim.ids(users);
            nix::unistd::fchown(out, Some(uid), Some(gid))?;
        }
        Ok(())
    })
    .map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::names::Domain;
    use crate::store::testutil;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn makes_missing_keys_once_and_keeps_them() {
        let (dir, conn) = testutil::conn();
        let paths = Paths::new(dir.path());
        let users = SystemUsers::fixed_for_tests();
        let d = Domain::parse("example.com").unwrap();
        domains::add(&conn, &d).unwrap();
        let made = ensure(&paths, &conn, &users).unwrap();
        let key = paths.dkim_key(&d, &dkim::first_selector());
        assert_eq!(made.written, std::slice::from_ref(&key));
        assert_eq!(mode(&key), KEY_MODE);
        assert_eq!(mode(key.parent().unwrap()), DIR_MODE);
        let public = domains::get(&conn, &d)
            .unwrap()
            .dkim
            .unwrap()
            .public_b64
            .unwrap();
        assert_eq!(
            dkim::public_of(&fs::read_to_string(&key).unwrap()).unwrap(),
            public
        );
        // Again: nothing to make, the same key.
        assert_eq!(ensure(&paths, &conn, &users).unwrap(), Made::default());
        let again = domains::get(&conn, &d)
            .unwrap()
            .dkim
            .unwrap()
            .public_b64
            .unwrap();
        assert_eq!(again, public);
        // The public key lost (a crash after the file was written): read back from the file.
        conn.execute("UPDATE domains SET dkim_public_key = NULL", [])
            .unwrap();
        assert_eq!(ensure(&paths, &conn, &users).unwrap(), Made::default());
        let back = domains::get(&conn, &d).unwrap().dkim.unwrap().public_b64;
        assert_eq!(back.as_deref(), Some(public.as_str()));
        // A rotation: a new selector, a new key in a new file.
        let selector = domains::rotate_dkim(&conn, &d).unwrap();
        let made = ensure(&paths, &conn, &users).unwrap();
        assert_eq!(made.written, [paths.dkim_key(&d, &selector)]);
    }

    /// A database of an older version held the private key: it goes to its file, and out of the
    /// database; the public key stays what it was.
    #[test]
    fn moves_private_keys_out_of_the_database() {
        let (dir, conn) = testutil::conn();
        let paths = Paths::new(dir.path());
        let users = SystemUsers::fixed_for_tests();
        let pair = dkim::generate().unwrap();
        conn.execute(
            "INSERT INTO domains (domain, dkim_selector, dkim_private_key, dkim_public_key)
             VALUES ('old.example', 'mail', ?1, ?2)",
            (&pair.private_pem, &pair.public_b64),
        )
        .unwrap();
        let key = dir.path().join("dkim/old.example/mail.private");
        let made = ensure(&paths, &conn, &users).unwrap();
        assert_eq!(made.written, std::slice::from_ref(&key));
        assert_eq!(fs::read_to_string(&key).unwrap(), pair.private_pem);
        let (private, public): (Option<String>, String) = conn
            .query_row(
                "SELECT dkim_private_key, dkim_public_key FROM domains",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((private, public), (None, pair.public_b64));
    }

    /// A link planted where a temp file will be made is not followed: the temp file is new.
    #[test]
    fn a_planted_temp_link_is_not_followed() {
        let (dir, conn) = testutil::conn();
        let paths = Paths::new(dir.path());
        let users = SystemUsers::fixed_for_tests();
        let d = Domain::parse("example.com").unwrap();
        domains::add(&conn, &d).unwrap();
        let key = paths.dkim_key(&d, &dkim::first_selector());
        fs::create_dir_all(key.parent().unwrap()).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        let tmp = key
            .parent()
            .unwrap()
            .join(format!(".mail.private.tmp{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        ensure(&paths, &conn, &users).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(fs::read_to_string(&key).unwrap().contains("PRIVATE KEY"));
    }
}
