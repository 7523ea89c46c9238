//! A supervisord event listener that retries Postfix's deferred mail as soon as Dovecot is back.
//!
//! Mail that Postfix accepts while Dovecot is down (crashed, killed, restarting) cannot be handed over
//! LMTP and is deferred. Postfix would retry it only after `minimal_backoff_time` (5 minutes by
//! default), although supervisord has Dovecot running again within a couple of seconds. This listener
//! (`mailserver requeue-listener`, an `[eventlistener]` in supervisord.conf) runs `postqueue -f` when
//! Dovecot enters RUNNING, so that mail is delivered at once. Nothing is lost either way: this only
//! makes the wait short.
//!
//! The protocol (supervisord's "Event Listeners" documentation): write `READY\n`; read one header line
//! of `key:value` tokens whose `len` says how many payload bytes follow; handle the event; write
//! `RESULT 2\nOK`; repeat. stdout carries only the protocol, so logs go to stderr.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read as _, Write};
use std::process::{Command, Stdio};

use crate::paths::Paths;

/// The program whose return means deferred local mail can now be delivered.
const WATCHED: &str = "dovecot";

/// `key:value` tokens separated by spaces, as in supervisord's headers and payloads.
fn tokens(text: &str) -> BTreeMap<&str, &str> {
    text.split_whitespace()
        .filter_map(|t| t.split_once(':'))
        .collect()
}

/// Whether an event (header line, payload) says the watched program has just started running.
fn watched_is_running(header: &str, payload: &str) -> bool {
    tokens(header).get("eventname") == Some(&"PROCESS_STATE_RUNNING")
        && tokens(payload).get("processname") == Some(&WATCHED)
}

/// Runs the listener protocol on `input`/`output` until `input` ends, calling `on_running` for each
/// RUNNING event of the watched program.
pub fn listen(
    mut input: impl BufRead,
    mut output: impl Write,
    mut on_running: impl FnMut(),
) -> io::Result<()> {
    loop {
        output.write_all(b"READY\n")?;
        output.flush()?;
        let mut header = String::new();
        if input.read_line(&mut header)? == 0 {
            return Ok(());
        }
        let len: u64 = tokens(&header)
            .get("len")
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad event header {header:?}"),
                )
            })?;
        let mut payload = String::new();
        (&mut input).take(len).read_to_string(&mut payload)?;
        if watched_is_running(&header, &payload) {
            on_running();
        }
        output.write_all(b"RESULT 2\nOK")?;
    }
}

/// `mailserver requeue-listener`: the listener on stdin/stdout, flushing Postfix's queue.
pub fn run(paths: &Paths) -> io::Result<()> {
    let config = paths.postfix_config_dir();
    let stdin = io::stdin();
    listen(stdin.lock(), io::stdout().lock(), || {
        let status = Command::new("postqueue")
            .arg("-c")
            .arg(&config)
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => eprintln!("{WATCHED} is running: flushed the Postfix queue"),
            // At first start Postfix may not be up yet; it scans its queue when it starts anyway.
            Ok(s) => eprintln!("{WATCHED} is running: postqueue -f exited with {s}"),
            Err(e) => eprintln!("{WATCHED} is running: could not run postqueue: {e}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, payload: &str) -> String {
        format!(
            "ver:3.0 server:supervisor serial:21 pool:requeue poolserial:10 eventname:{name} len:{}\n{payload}",
            payload.len()
        )
    }

    #[test]
    fn flushes_only_when_dovecot_starts_running() {
        let input = [
            event(
                "PROCESS_STATE_RUNNING",
                "processname:dovecot groupname:dovecot from_state:STARTING pid:2766",
            ),
            event(
                "PROCESS_STATE_RUNNING",
                "processname:postfix groupname:postfix from_state:STARTING pid:2767",
            ),
            event(
                "PROCESS_STATE_EXITED",
                "processname:dovecot groupname:dovecot from_state:RUNNING expected:0 pid:2766",
            ),
            event(
                "PROCESS_STATE_RUNNING",
                "processname:dovecot groupname:dovecot from_state:STARTING pid:2801",
            ),
        ]
        .concat();
        let mut out = Vec::new();
        let mut flushes = 0;
        listen(input.as_bytes(), &mut out, || flushes += 1).unwrap();
        assert_eq!(flushes, 2);
        // Every event is acknowledged, and the listener is ready again after each.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "READY\nRESULT 2\nOK".repeat(4) + "READY\n"
        );
    }

    #[test]
    fn a_header_without_len_is_an_error_not_a_hang() {
        let mut out = Vec::new();
        let e = listen(&b"ver:3.0 eventname:TICK_5\n"[..], &mut out, || {}).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
