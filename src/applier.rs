//! The applier: the one small root process that applies configuration on behalf of unprivileged ones.
//!
//! `mailserver-web` runs as its own user (`mailserver-web`), so it can change the database but can
//! neither write the daemons' files (owned by root, postfix, opendkim) nor reload them. After a change
//! it asks the applier, over a unix socket that only the dashboard's group (`mailserver-web`) can
//! reach, to render and apply the database as it now is (and to make the DKIM keys it lacks, which
//! the dashboard never sees). The request carries no data: the applier reads everything from
//! the database itself, through the same validated types as any other apply, so a compromised
//! dashboard can ask for nothing the CLI could not do. Root callers (the CLI, `init`, tests) apply in
//! process; both paths take the same lock in [`apply::apply`].
//!
//! It also answers whether each daemon runs, since the daemons' pid files are root's alone.
//!
//! Protocol, one request per connection: the client sends `apply\n` or `status\n`; the applier
//! answers `ok\n` (for status, followed by one `NAME\tup|down` line per daemon) or `error\n`
//! followed by the error message, and closes the connection.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::apply::{self, ApplyError, io};
use crate::db::{self, DbError};
use crate::paths::Paths;
use crate::system::{self, SystemUsers};

/// How long a client waits for an apply (validation runs the daemons' checkers: seconds at most).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const APPLY: &[u8] = b"apply\n";
const STATUS: &[u8] = b"status\n";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Applies the configuration: in this process ([`apply::apply`]) when it runs as root, else
/// delegated to the applier over [`Paths::applier_socket`].
pub fn apply_or_delegate(paths: &Paths, conn: &mut Connection) -> Result<(), ApplyError> {
    if is_root() {
        apply::apply(paths, conn).map(|_| ())
    } else {
        request(&paths.applier_socket(), APPLY).map(|_| ())
    }
}

/// Whether each daemon is up ([`system::daemon_status`]); asked of the applier when not root. A
/// daemon whose state cannot be learned counts as down.
pub fn daemon_status(paths: &Paths) -> Vec<(&'static str, bool)> {
    if is_root() {
        return system::daemon_status(paths);
    }
    let answer = request(&paths.applier_socket(), STATUS).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not learn the daemons' state");
        String::new()
    });
    system::DAEMONS
        .iter()
        .map(|&name| (name, answer.lines().any(|l| l == format!("{name}\tup"))))
        .collect()
}

fn status_lines(status: &[(&str, bool)]) -> String {
    status
        .iter()
        .map(|(name, up)| format!("{name}\t{}\n", if *up { "up" } else { "down" }))
        .collect()
}

/// Sends `req` to the applier listening on `socket`; returns what follows its `ok` line.
fn request(socket: &Path, req: &[u8]) -> Result<String, ApplyError> {
    let unreachable = |source: std::io::Error| {
        ApplyError::Applier(format!(
            "could not reach the applier at {}: {source}",
            socket.display()
        ))
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(unreachable)?;
    stream.write_all(req).map_err(unreachable)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(unreachable)?;
    parse_answer(&answer)
}

fn parse_answer(answer: &str) -> Result<String, ApplyError> {
    match answer.split_once('\n') {
        Some(("ok", rest)) => Ok(rest.to_string()),
        Some(("error", message)) => Err(ApplyError::Applier(message.trim_end().to_string())),
        _ => Err(ApplyError::Applier(format!(
            "the applier gave no answer ({answer:?})"
        ))),
    }
}

fn answer(result: &Result<String, ApplyError>) -> Vec<u8> {
    match result {
        Ok(rest) => format!("ok\n{rest}").into_bytes(),
        Err(e) => format!("error\n{e}\n").into_bytes(),
    }
}

/// Carries out one request.
fn handle(paths: &Paths, pool: &db::Pool, req: &[u8]) -> Result<String, ApplyError> {
    if req == STATUS {
        return Ok(status_lines(&system::daemon_status(paths)));
    }
    let mut conn = pool.get().map_err(DbError::from)?;
    let result = apply::apply(paths, &mut conn);
    match &result {
        Ok(report) => tracing::info!(
            written = report.written.len(),
            reloaded = ?report.reloaded,
            "applied"
        ),
        Err(e) => tracing::error!(error = %e, "apply failed"),
    }
    result.map(|_| String::new())
}

/// Runs the applier on `paths.applier_socket()` until the process is killed. The socket's
/// directory is root:mailserver-web 0750 and the socket 0660, so only root and the dashboard's
/// group can connect (not the milter).
pub fn serve(paths: &Paths) -> Result<(), ApplyError> {
    let users = SystemUsers::lookup()?;
    let socket = paths.applier_socket();
    let dir = paths.applier_run_dir();
    let owner = system::Owner::RootWebGroup;
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    owner
        .set_on(&dir, 0o750, &users)
        .map_err(io("set the owner and mode of", &dir))?;
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove", &socket)(e)),
        _ => {}
    }
    let listener = UnixListener::bind(&socket).map_err(io("bind", &socket))?;
    owner
        .set_on(&socket, 0o660, &users)
        .map_err(io("set the owner and mode of", &socket))?;

    let pool = db::open_main(paths, 1)?;
    tracing::info!(socket = %socket.display(), "applier listening");
    for stream in listener.incoming() {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        // A client that connects and says nothing must not block the next one for long.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = Vec::new();
        let read = BufReader::new(&mut stream)
            .take(64)
            .read_until(b'\n', &mut line);
        if read.is_err() || (line != APPLY && line != STATUS) {
            tracing::warn!(request = %String::from_utf8_lossy(&line), "ignoring a bad request");
            continue;
        }
        let result = handle(paths, &pool, &line);
        if let Err(e) = stream.write_all(&answer(&result)) {
            tracing::warn!(error = %e, "could not answer the client");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip() {
        let status = status_lines(&[("Postfix", true), ("Dovecot", false)]);
        let ok = String::from_utf8(answer(&Ok(status.clone()))).unwrap();
        assert_eq!(parse_answer(&ok).unwrap(), status);
        let err = ApplyError::Invalid {
            checker: "postconf".into(),
            output: "line one\nline two".into(),
        };
        let text = String::from_utf8(answer(&Err(err))).unwrap();
        let back = parse_answer(&text).unwrap_err().to_string();
        assert!(
            back.contains("postconf rejected") && back.contains("line two"),
            "{back}"
        );
    }

    #[test]
    fn garbage_and_silence_are_errors() {
        for bad in ["", "ok", "maybe\n", "OK\n"] {
            assert!(parse_answer(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_unreachable_applier_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = request(&dir.path().join("none.sock"), APPLY)
            .unwrap_err()
            .to_string();
        assert!(e.contains("could not reach the applier"), "{e}");
    }
}
