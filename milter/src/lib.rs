//! mailserver-milter: adds an open-tracking pixel to HTML mail sent through tracked aliases.
//!
//! It sits first on Postfix's `smtpd_milters`, before OpenDKIM, so the signature covers the pixel.
//! [`rewrite`] is the pure MIME/HTML transform (no I/O); the other modules are the glue around it:
//! which mail is tracked and where it is recorded ([`policy`]), the milter callbacks ([`session`]),
//! the listening socket ([`listener`]), and the daemon's batched log output ([`log`]). Every failure passes the message through unchanged.

pub mod listener;
pub mod log;
pub mod policy;
pub mod rewrite;
pub mod session;
