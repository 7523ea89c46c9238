//! mailserver: the library shared by the admin CLI (`mailserver`), the tracking milter
//! (`mailserver-milter`) and the dashboard (`mailserver-web`).
//!
//! The database is the source of truth. [`store`] changes it; [`render`] turns one consistent snapshot
//! of it into every file Postfix, Dovecot and OpenDKIM run on (pure, no I/O); [`apply`] validates those
//! files, swaps them in atomically and reloads the daemons that need it. Every value that reaches a
//! configuration file is one of the validated types in [`names`].

pub mod applier;
pub mod apply;
pub mod day;
pub mod db;
pub mod dkim;
pub mod dkim_keys;
pub mod dns;
pub mod init;
pub mod logging;
pub mod names;
pub mod password;
pub mod password_policy;
pub mod paths;
pub mod render;
pub mod requeue;
pub mod settings;
pub mod store;
pub mod system;
pub mod tls;
pub mod tracking;
