//! The milter callbacks: decide at MAIL FROM, buffer the body (bounded), rewrite at end of message.
//!
//! Tracked mail is mail whose envelope sender is an active alias with tracking enabled, on an active
//! domain, that was submitted by an authenticated user (`{auth_authen}`) or locally (non-SMTP). For
//! everything else the milter answers ACCEPT at MAIL FROM, so Postfix sends it nothing more and the
//! body is never buffered. Every failure (database, timeout, broken MIME, a panic in the rewrite, a
//! result too large) also ends in ACCEPT with the message unchanged, and is logged.
//!
//! Postfix is asked not to wait for answers to RCPT, header and body callbacks (`NOREPLY_RCPT`,
//! `NOREPLY_HEADER`, `NOREPLY_BODY`, Postfix 2.6 and later), so a tracked message costs two round
//! trips (MAIL, end of message) instead of one more per recipient, header and 64 KB body chunk.
//! A DKIM-Signature header or a body over the limit then ends tracking without an answer: the
//! message state is dropped, the remaining chunks are ignored, and end of message accepts. (An MTA
//! that put body data into the end-of-body command itself would wait forever: indymilter hands it
//! to the body callback, whose NOREPLY answer then also stands for end of message. Postfix always
//! sends that data as a body chunk of its own first, `milter8_eob` in Postfix's milter8.c.)
//!
//! Where the time goes: on a 2-core machine, one thread hand-off costs about as much as the
//! rewrite of a newsletter. So the MAIL FROM lookup (an indexed read on a WAL database, which
//! never waits for writers) and the rewrite of bodies up to [`INLINE_REWRITE_MAX`] run on the
//! runtime thread itself; larger bodies go to the blocking pool with a deadline. The row is
//! written by the recorder thread while the message's task awaits the commit.

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use indymilter::{
    Actions, Callbacks, Context, ContextActions as _, EomContext, MacroStage, NegotiateContext,
    ProtoOpts, Status,
};
use mailserver::names::Address;

use mailserver::store::tracking::TrackedAliasId;
use mailserver::tracking::{BaseUrl, PixelUrl, TrackingId, pixel_url};

use crate::policy::{self, Policy, TrackedMessage};
use crate::rewrite::{self, Outcome};

/// Tunables, with their defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bodies larger than this pass through untracked, without being buffered (default 25 MiB).
    pub max_body: usize,
    /// Postfix's `message_size_limit`: a rewritten message must stay below it.
    pub message_size_limit: usize,
    /// Deadline for opening the database and for a row's commit (default 2 s). Reads of an open
    /// database run inline without one: indexed, on a WAL database, they do not wait for writers.
    pub db_timeout: Duration,
    /// Deadline for the rewrite of a message over [`INLINE_REWRITE_MAX`] (default 10 s); smaller
    /// ones take well under a millisecond and run inline.
    pub rewrite_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 25 * 1024 * 1024,
            message_size_limit: mailserver::render::MESSAGE_SIZE_LIMIT as usize,
            db_timeout: Duration::from_secs(2),
            rewrite_timeout: Duration::from_secs(10),
        }
    }
}

/// Shared by all connections.
pub struct Milter {
    db_path: PathBuf,
    policy: Mutex<Option<Policy>>,
    limits: Limits,
}

impl Milter {
    pub fn new(db_path: PathBuf, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            db_path,
            policy: Mutex::new(None),
            limits,
        })
    }

    /// The policy, opening tracking.db (`db_path`, the only database the milter opens) on first use
    /// (and again after a failure).
    ///
    /// The open (migrations, the pool's connections, the recorder thread) runs without the lock
    /// held: the runtime thread takes it in [`policy_if_open`](Self::policy_if_open) for every MAIL FROM
    /// and must not wait for an open. Two opens racing each other both finish; the first stored wins.
    fn policy(&self) -> Result<Policy, policy::PolicyError> {
        if let Some(p) = self.policy_if_open() {
            return Ok(p);
        }
        if !self.db_path.exists() {
            return Err(policy::PolicyError::Open(mailserver::db::DbError::Sqlite(
                rusqlite::Error::InvalidPath(self.db_path.clone()),
            )));
        }
        let opened = Policy::open(&self.db_path)?;
        let mut guard = self.policy.lock().unwrap_or_else(|p| p.into_inner());
        Ok(guard.get_or_insert(opened).clone())
    }

    /// The policy, if the database is already open: then its reads are quick enough for the
    /// runtime thread.
    fn policy_if_open(&self) -> Option<Policy> {
        self.policy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs a database read on the runtime thread when the database is open (a few microseconds),
    /// else on the blocking pool with the database deadline (opening may migrate the schema).
    async fn read<R: Send + 'static>(
        self: &Arc<Self>,
        what: &'static str,
        f: impl FnOnce(Policy) -> Result<R, policy::PolicyError> + Send + 'static,
    ) -> Option<R> {
        match self.policy_if_open() {
            Some(p) => match f(p) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "{what} failed; not tracking");
                    None
                }
            },
            None => self.db(what, f).await,
        }
    }

    /// Runs a blocking database call on the blocking pool, with the database deadline.
    async fn db<R: Send + 'static>(
        self: &Arc<Self>,
        what: &'static str,
        f: impl FnOnce(Policy) -> Result<R, policy::PolicyError> + Send + 'static,
    ) -> Option<R> {
        let this = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || this.policy().and_then(f));
        match tokio::time::timeout(self.limits.db_timeout, task).await {
            Ok(Ok(Ok(r))) => Some(r),
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "{what} failed; not tracking");
                None
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "{what} panicked; not tracking");
                None
            }
            Err(_) => {
                tracing::warn!("{what} timed out; not tracking");
                None
            }
        }
    }
}

/// One milter connection (Postfix opens one per SMTP session).
#[derive(Debug, Default)]
pub struct Connection {
    /// The stages whose answers the MTA does not wait for: those of [`QUIET`] it offered.
    quiet: ProtoOpts,
    /// The transaction being tracked, from MAIL FROM to end of message.
    message: Option<Message>,
}

impl Connection {
    /// The answer of a callback at the stage `noreply` names (`NOREPLY_RCPT`, `NOREPLY_HEADER` or
    /// `NOREPLY_BODY`): `status`, or none where the MTA waits for none. It must be none there:
    /// indymilter would send no ACCEPT anyway, but would take it as the end of the message and
    /// ignore the body and end of message that follow, and Postfix would wait for an answer.
    fn answer(&self, noreply: ProtoOpts, status: Status) -> Status {
        if self.quiet.contains(noreply) {
            Status::Noreply
        } else {
            status
        }
    }
}

/// The options that spare Postfix waiting for us.
const QUIET: ProtoOpts = ProtoOpts::NOREPLY_HEADER
    .union(ProtoOpts::NOREPLY_RCPT)
    .union(ProtoOpts::NOREPLY_BODY);

/// Messages (headers and body) up to this size are rewritten on the runtime thread (well under a
/// millisecond: the rewrite runs at some 300 MB/s); larger ones on the blocking pool, with the
/// rewrite deadline.
pub const INLINE_REWRITE_MAX: usize = 256 * 1024;

#[derive(Debug)]
pub struct Message {
    sender: String,
    alias: TrackedAliasId,
    base_url: BaseUrl,
    recipients: Vec<String>,
    headers: Vec<u8>,
    body: Vec<u8>,
    queue_id: String,
}

fn strip_angle(arg: &CString) -> String {
    let s = String::from_utf8_lossy(arg.as_bytes());
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

fn macro_value(cx: &Context<Connection>, name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    cx.macros
        .get(&name)
        .map(|v| String::from_utf8_lossy(v.to_bytes()).into_owned())
        .filter(|v| !v.is_empty())
}

/// True when the message was submitted by one of our users: SASL-authenticated, or submitted locally,
/// i.e. non-SMTP mail (`sendmail`, which Postfix presents with no client address) or SMTP from this
/// host itself (127.0.0.1 or ::1: exactly the `mynetworks` Postfix trusts to relay).
fn submitted_by_a_user(cx: &Context<Connection>) -> bool {
    if macro_value(cx, "{auth_authen}").is_some() {
        return true;
    }
    match macro_value(cx, "{client_addr}") {
        None => true,
        Some(addr) => addr == "127.0.0.1" || addr == "::1" || addr == "IPv6:::1",
    }
}

async fn on_mail(milter: Arc<Milter>, cx: &mut Context<Connection>, args: Vec<CString>) -> Status {
    let conn = cx.data.get_or_insert_default();
    conn.message = None;
    let Some(sender) = args.first().map(strip_angle) else {
        return Status::Accept;
    };
    tracing::debug!(
        sender,
        auth = ?macro_value(cx, "{auth_authen}"),
        client = ?macro_value(cx, "{client_addr}"),
        "MAIL FROM"
    );
    if !submitted_by_a_user(cx) {
        return Status::Accept; // Mail from the internet is never touched, whatever its sender says.
    }
    let Ok(address) = Address::parse(&sender) else {
        return Status::Accept;
    };
    let sender = address.to_string(); // lower-cased, as stored
    let looked_up = milter
        .read("tracking lookup", move |p| {
            Ok(match p.tracked_alias(&address)? {
                Some(alias) => Some((alias, p.pixel_base_url()?)),
                None => None,
            })
        })
        .await;
    match looked_up {
        Some(Some((alias, base_url))) => {
            cx.data.get_or_insert_default().message = Some(Message {
                sender,
                alias,
                base_url,
                queue_id: macro_value(cx, "i").unwrap_or_default(),
                recipients: Vec::new(),
                headers: Vec::new(),
                body: Vec::new(),
            });
            Status::Continue
        }
        _ => Status::Accept,
    }
}

async fn on_rcpt(cx: &mut Context<Connection>, args: Vec<CString>) -> Status {
    let conn = cx.data.get_or_insert_default();
    if let (Some(msg), Some(rcpt)) = (conn.message.as_mut(), args.first()) {
        msg.recipients.push(strip_angle(rcpt));
    }
    conn.answer(ProtoOpts::NOREPLY_RCPT, Status::Continue)
}

async fn on_header(cx: &mut Context<Connection>, name: CString, value: CString) -> Status {
    let conn = cx.data.get_or_insert_default();
    // Where Postfix waits for no answer, end of message answers ACCEPT instead.
    let done = conn.answer(ProtoOpts::NOREPLY_HEADER, Status::Accept);
    let Some(msg) = conn.message.as_mut() else {
        return done;
    };
    if name.as_bytes().eq_ignore_ascii_case(b"DKIM-Signature") {
        tracing::info!(queue_id = msg.queue_id, "already DKIM-signed; not tracking");
        conn.message = None;
        return done;
    }
    msg.headers.extend_from_slice(name.as_bytes());
    msg.headers.extend_from_slice(b": ");
    // Postfix sends folded values with bare LF line breaks.
    for (i, line) in value.as_bytes().split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            msg.headers.extend_from_slice(b"\r\n");
        }
        msg.headers
            .extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
    }
    msg.headers.extend_from_slice(b"\r\n");
    conn.answer(ProtoOpts::NOREPLY_HEADER, Status::Continue)
}

async fn on_body(milter: Arc<Milter>, cx: &mut Context<Connection>, chunk: Bytes) -> Status {
    let conn = cx.data.get_or_insert_default();
    // Where Postfix waits for no answer, end of message answers ACCEPT instead.
    let done = conn.answer(ProtoOpts::NOREPLY_BODY, Status::Accept);
    let Some(msg) = conn.message.as_mut() else {
        return done;
    };
    if msg.body.len() + chunk.len() > milter.limits.max_body {
        tracing::info!(
            queue_id = msg.queue_id,
            max = milter.limits.max_body,
            "body larger than the tracking limit; not tracking"
        );
        conn.message = None;
        return done;
    }
    msg.body.extend_from_slice(&chunk);
    conn.answer(ProtoOpts::NOREPLY_BODY, Status::Continue)
}

async fn on_eom(milter: Arc<Milter>, cx: &mut EomContext<Connection>) -> Status {
    let Some(mut msg) = cx.data.as_mut().and_then(|conn| conn.message.take()) else {
        return Status::Accept;
    };
    // smtpd assigns the queue id only after MAIL FROM, so it is known here.
    if let Some(id) = cx.macros.get(c"i") {
        msg.queue_id = String::from_utf8_lossy(id.to_bytes()).into_owned();
    }
    let tracking_id = TrackingId::generate();
    let pixel = pixel_url(&msg.base_url, &tracking_id);
    let Message {
        sender,
        alias,
        recipients,
        headers,
        body,
        queue_id,
        ..
    } = msg;
    let subject = decoded_subject(&headers);
    let limit = milter.limits.message_size_limit;
    let record = TrackedMessage {
        tracking_id: tracking_id.clone(),
        sender,
        recipients,
        subject,
        alias,
    };
    let rewritten = if headers.len() + body.len() <= INLINE_REWRITE_MAX {
        // A panic here is caught as the blocking pool would catch it; the message passes.
        std::panic::catch_unwind(|| rewrite_body(&headers, &body, &pixel, limit))
            .unwrap_or_else(|_| Err("the rewrite panicked".into()))
    } else {
        let task =
            tokio::task::spawn_blocking(move || rewrite_body(&headers, &body, &pixel, limit));
        match tokio::time::timeout(milter.limits.rewrite_timeout, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("the rewrite panicked: {e}")),
            Err(_) => Err("the rewrite timed out".into()),
        }
    };
    let new_body = match rewritten {
        Ok(Rewrite::Done(new_body)) => new_body,
        Ok(Rewrite::Unchanged(why)) => {
            tracing::info!(queue_id, %why, "nothing to track");
            return Status::Accept;
        }
        Ok(Rewrite::TooLarge) => {
            tracing::info!(
                queue_id,
                "rewritten message would pass message_size_limit; not tracking"
            );
            return Status::Accept;
        }
        Err(e) => {
            tracing::warn!(queue_id, error = %e, "delivering unchanged");
            return Status::Accept;
        }
    };
    // The row first: a pixel is only sent out when its row is committed.
    let Some(policy) = milter.policy_if_open() else {
        tracing::warn!(queue_id, "database not open; delivering unchanged");
        return Status::Accept;
    };
    let committed = policy.record(record);
    match tokio::time::timeout(milter.limits.db_timeout, committed.wait()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(queue_id, error = %e, "recording the message failed; delivering unchanged");
            return Status::Accept;
        }
        Err(_) => {
            tracing::warn!(
                queue_id,
                "recording the message timed out; delivering unchanged"
            );
            policy.forget(tracking_id); // it may still be committed after this
            return Status::Accept;
        }
    }
    if let Err(e) = cx.actions.replace_body(&new_body).await {
        tracing::error!(queue_id, error = ?e, "replacing the body failed");
        policy.forget(tracking_id);
        return Status::Accept;
    }
    tracing::info!(queue_id, %tracking_id, "pixel added");
    Status::Accept
}

/// The rewrite of one body, and whether the result still fits under `limit`.
fn rewrite_body(
    headers: &[u8],
    body: &[u8],
    pixel: &PixelUrl,
    limit: usize,
) -> Result<Rewrite, String> {
    match rewrite::inject_body(headers, body, pixel) {
        Ok(Outcome::Rewritten(new_body)) if headers.len() + new_body.len() > limit => {
            Ok(Rewrite::TooLarge)
        }
        Ok(Outcome::Rewritten(new_body)) => Ok(Rewrite::Done(new_body)),
        Ok(Outcome::Unchanged(why)) => Ok(Rewrite::Unchanged(why)),
        Err(e) => Err(format!("rewrite failed: {e}")),
    }
}

/// What the rewrite of end-of-message produced.
enum Rewrite {
    Done(Vec<u8>),
    Unchanged(rewrite::Skip),
    TooLarge,
}

fn decoded_subject(headers: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse_headers(headers)
        .and_then(|m| m.subject().map(|s| s.chars().take(500).collect()))
        .unwrap_or_default()
}

/// The callbacks, for `indymilter::run`.
pub fn callbacks(milter: Arc<Milter>) -> Callbacks<Connection> {
    let (m1, m2, m3) = (milter.clone(), milter.clone(), milter);
    Callbacks::new()
        .on_negotiate(|cx, mta_actions, mta_opts| Box::pin(on_negotiate(cx, mta_actions, mta_opts)))
        .on_mail(move |cx, args| Box::pin(on_mail(m1.clone(), cx, args)))
        .on_rcpt(|cx, args| Box::pin(on_rcpt(cx, args)))
        .on_header(|cx, name, value| Box::pin(on_header(cx, name, value)))
        .on_body(move |cx, chunk| Box::pin(on_body(m2.clone(), cx, chunk)))
        .on_eom(move |cx| Box::pin(on_eom(m3.clone(), cx)))
        .on_abort(|cx| {
            if let Some(conn) = cx.data.as_mut() {
                conn.message = None;
            }
            Box::pin(async { Status::Continue })
        })
}

/// Requests REPLACE_BODY, the quiet options where the MTA offers them (Postfix does), and, where
/// the MTA lets the milter choose its macros (`REQUEST_MACROS`, Postfix 2.10 and later), only the
/// macros read here. Postfix then sends this milter no other macro at any stage, instead of its
/// `milter_*_macros` lists at every one.
async fn on_negotiate(
    cx: &mut NegotiateContext<Connection>,
    mta_actions: Actions,
    mta_opts: ProtoOpts,
) -> Status {
    cx.requested_actions = Actions::REPLACE_BODY;
    if mta_actions.contains(Actions::REQUEST_MACROS) {
        cx.requested_actions |= Actions::REQUEST_MACROS;
        cx.requested_macros
            .insert(MacroStage::Mail, MAIL_MACROS.to_owned());
        cx.requested_macros
            .insert(MacroStage::Eom, EOM_MACROS.to_owned());
    }
    let quiet = mta_opts & QUIET;
    cx.requested_opts |= quiet;
    cx.data = Some(Connection {
        quiet,
        message: None,
    });
    Status::Continue
}

/// The macros `on_mail` reads: who submitted the message, and the queue id for the log.
pub const MAIL_MACROS: &CStr = c"i {auth_authen} {client_addr}";
/// The macro `on_eom` reads: the queue id, which smtpd may assign only after MAIL FROM.
pub const EOM_MACROS: &CStr = c"i";

/// The indymilter configuration: we only ever replace the body.
pub fn config() -> indymilter::Config {
    indymilter::Config {
        actions: indymilter::Actions::REPLACE_BODY,
        ..Default::default()
    }
}
