//! The milter callbacks, driven over the real milter protocol.
//!
//! Each test starts the milter in-process on 127.0.0.1:0 (as indymilter's own `tests/common` does),
//! with the production [`session::callbacks`] and [`session::config`] over a temporary database
//! prepared with the library, and talks to it with `indymilter-test` the way Postfix does: macros,
//! MAIL, RCPT, headers, body chunks, end of message. Like Postfix, [`send`] skips the stages the
//! milter turned off at negotiation and sends nothing more for a message once the milter answered
//! ACCEPT.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use indymilter_test::{
    Actions, EomAction, MacroStage, ProtoOpts, SocketInfo, Status, TestConnection, any,
};
use mailserver::db::Pool;
use mailserver::names::{AliasSource, Destinations, Domain};
use mailserver_milter::listener::{Buffered, LowLatencyTcpListener};
use mailserver_milter::session::{self, Limits};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PIXEL: &str = "https://mx.example.test/pixel?id=";
const HTML: &[u8] = b"<html><body><p>hi</p></body></html>\r\n";
const INTERNET: &str = "192.0.2.7";

const DKIM_HEADERS: &[(&str, &str)] = &[
    (
        "DKIM-Signature",
        "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test; s=mail; h=from:to:subject; bh=x; b=y",
    ),
    ("From", "News <news@example.test>"),
    ("To", "a@x.test"),
    ("Subject", "signed upstream"),
    ("MIME-Version", "1.0"),
    ("Content-Type", "text/html; charset=utf-8"),
];

const HTML_HEADERS: &[(&str, &str)] = &[
    ("From", "News <news@example.test>"),
    ("To", "a@x.test, b@y.test"),
    ("Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe?="),
    ("MIME-Version", "1.0"),
    ("Content-Type", "text/html; charset=utf-8"),
];

// ---------------------------------------------------------------------------------------------
// Harness

/// A database prepared as `mailserver init` and the CLI would: one domain, a tracked alias (news@)
/// and an untracked one (info@), both forwarding to alice@.
struct Fixture {
    dir: tempfile::TempDir,
    db_path: PathBuf,
    pool: Pool,
    news_id: i64,
}

fn fixture() -> anyhow::Result<Fixture> {
    prepare(tempfile::tempdir()?)
}

/// Creates the databases below `dir` as `init` does: the main one, and tracking.db (the milter's,
/// `db_path`) with the policy apply renders into it.
fn prepare(dir: tempfile::TempDir) -> anyhow::Result<Fixture> {
    let paths = mailserver::paths::Paths::new(dir.path());
    std::fs::create_dir_all(paths.db_dir())?;
    let db_path = paths.tracking_db();
    let pool = mailserver::db::open_dashboard(&paths, 1)?;
    let news_id = {
        let mut conn = pool.get()?;
        let defaults = [("HOSTNAME".to_string(), "mx.example.test".to_string())].into();
        mailserver::store::settings::init_from_env(&conn, |_| None, &defaults)?;
        mailserver::store::domains::add(&conn, &Domain::parse("example.test")?)?;
        let alice = Destinations::parse("alice@example.test")?;
        let news = mailserver::store::aliases::add(
            &conn,
            &AliasSource::parse("news@example.test")?,
            &alice,
            true,
        )?;
        mailserver::store::aliases::add(
            &conn,
            &AliasSource::parse("info@example.test")?,
            &alice,
            false,
        )?;
        let snapshot = mailserver::store::Snapshot::read(&mut conn)?;
        let policy = mailserver::store::tracking::TrackingPolicy::from_snapshot(&snapshot);
        mailserver::store::tracking::write_policy(&mut conn, &policy)?;
        news.id
    };
    Ok(Fixture {
        dir,
        db_path,
        pool,
        news_id,
    })
}

/// One row of `tracked_messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    tracking_id: String,
    sender: String,
    recipients: String,
    subject: String,
    alias_id: Option<i64>,
}

impl Fixture {
    fn rows(&self) -> Vec<Row> {
        let conn = self.pool.get().unwrap();
        let mut stmt = conn
            .prepare("SELECT tracking_id, sender, recipients, subject, alias_id FROM tracked_messages ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| {
            Ok(Row {
                tracking_id: r.get(0)?,
                sender: r.get(1)?,
                recipients: r.get(2)?,
                subject: r.get(3)?,
                alias_id: r.get(4)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// The milter on this fixture's database, on a plain `tokio::net::TcpListener`.
    async fn milter(&self, limits: Limits) -> Milter {
        Milter::spawn(self.db_path.clone(), limits, false).await
    }
}

/// The milter, running in a tokio task (indymilter `tests/common/mod.rs`).
struct Milter {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl Milter {
    /// Binds 127.0.0.1:0 and runs the production callbacks and configuration, with buffered
    /// connections. `low_latency` wraps the listener in [`LowLatencyTcpListener`] (TCP_NODELAY,
    /// TCP_QUICKACK), as `--socket inet:` does.
    async fn spawn(db_path: PathBuf, limits: Limits, low_latency: bool) -> Self {
        // The milter's logs show up under a failing test (RUST_LOG to change the level).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug")),
            )
            .try_init();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let callbacks = session::callbacks(session::Milter::new(db_path, limits));
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        // Buffered, as the binary runs it.
        let task = if low_latency {
            let listener = Buffered(LowLatencyTcpListener(listener));
            tokio::spawn(indymilter::run(
                listener,
                callbacks,
                session::config(),
                shutdown_rx,
            ))
        } else {
            tokio::spawn(indymilter::run(
                Buffered(listener),
                callbacks,
                session::config(),
                shutdown_rx,
            ))
        };
        Self {
            addr,
            shutdown,
            task,
        }
    }

    /// A new milter connection, negotiated and past CONNECT and HELO, as smtpd opens one per client.
    async fn connect(&self, peer: SocketInfo) -> TestConnection {
        let mut conn = TestConnection::open(self.addr).await.unwrap();
        assert_eq!(
            conn.negotiated_actions(),
            Actions::REPLACE_BODY | Actions::REQUEST_MACROS,
            "the milter asks for body replacement and its own macro lists only"
        );
        // Only the macros the milter reads, so Postfix sends no others.
        let macros: HashMap<_, _> = conn
            .requested_macros()
            .iter()
            .map(|(stage, names)| (*stage, names.to_str().unwrap()))
            .collect();
        assert_eq!(
            macros,
            HashMap::from([
                (MacroStage::Mail, "i {auth_authen} {client_addr}"),
                (MacroStage::Eom, "i"),
            ])
        );
        let opts = conn.negotiated_opts();
        // Postfix need not wait for answers to RCPT, headers and body chunks.
        assert!(opts.contains(QUIET), "{opts:?}");
        for needed in [
            ProtoOpts::NO_MAIL,
            ProtoOpts::NO_RCPT,
            ProtoOpts::NO_HEADER,
            ProtoOpts::NO_BODY,
        ] {
            assert!(!opts.contains(needed), "the milter negotiated {needed:?}");
        }
        if !opts.contains(ProtoOpts::NO_CONNECT) {
            assert_eq!(
                conn.connect("client.example.test", peer).await.unwrap(),
                Status::Continue
            );
        }
        if !opts.contains(ProtoOpts::NO_HELO) {
            assert_eq!(
                conn.helo("client.example.test").await.unwrap(),
                Status::Continue
            );
        }
        conn
    }

    /// Yields a few times so sessions can finish, signals shutdown and waits for the milter to stop.
    async fn shutdown(self) {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let _ = self.shutdown.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn peer(client_addr: Option<&str>) -> SocketInfo {
    match client_addr {
        Some(a) => SocketInfo::Inet(SocketAddr::new(a.parse::<IpAddr>().unwrap(), 40000)),
        None => SocketInfo::Unknown,
    }
}

/// One message as the MTA presents it.
#[derive(Debug, Clone)]
struct Msg {
    /// `{auth_authen}`, the SASL login.
    auth: Option<&'static str>,
    /// `{client_addr}`; `None` on Postfix's non-SMTP path (sendmail), which has no client.
    client_addr: Option<&'static str>,
    sender: &'static str,
    rcpts: Vec<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    /// Body chunk size; 0 sends the body in one piece.
    chunk: usize,
}

/// An HTML message from news@ (tracked), submitted by an authenticated user from the internet.
fn tracked() -> Msg {
    Msg {
        auth: Some("alice@example.test"),
        client_addr: Some(INTERNET),
        sender: "news@example.test",
        rcpts: vec!["a@x.test", "b@y.test"],
        headers: HTML_HEADERS.to_vec(),
        body: HTML.to_vec(),
        chunk: 0,
    }
}

impl Msg {
    fn with_headers(mut self, headers: &[(&'static str, &'static str)]) -> Self {
        self.headers = headers.to_vec();
        self
    }

    fn with_body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    /// The header block as the milter rebuilds it (`Name: value` CRLF lines).
    fn header_len(&self) -> usize {
        self.headers
            .iter()
            .map(|(n, v)| n.len() + 2 + v.len() + 2)
            .sum()
    }
}

/// The stage at which the milter answered ACCEPT, ending its part in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Mail,
    Rcpt,
    Header,
    Eoh,
    Body,
    Eom,
}

#[derive(Debug)]
struct Sent {
    accepted_at: Stage,
    /// The new body, if the milter replaced it.
    replaced: Option<Vec<u8>>,
}

/// The NOREPLY options the milter takes where the MTA offers them.
const QUIET: ProtoOpts = ProtoOpts::NOREPLY_RCPT
    .union(ProtoOpts::NOREPLY_HEADER)
    .union(ProtoOpts::NOREPLY_BODY);

/// The MAIL-stage macros Postfix sends (`milter_mail_macros` in our main.cf).
async fn mail_macros(conn: &mut TestConnection, auth: Option<&str>, client_addr: Option<&str>) {
    let mut macros = vec![("i", "4QzXyR0Abc"), ("{daemon_name}", "ORIGINATING")];
    macros.extend(auth.map(|a| ("{auth_authen}", a)));
    macros.extend(client_addr.map(|a| ("{client_addr}", a)));
    conn.macros(MacroStage::Mail, macros).await.unwrap();
}

/// Sends `msg` the way Postfix does, stopping at the first ACCEPT. Any answer other than ACCEPT
/// or CONTINUE fails the test, and so does any end-of-message action other than a body
/// replacement.
async fn send(conn: &mut TestConnection, msg: &Msg) -> Sent {
    let accepted = |stage, status| match status {
        Status::Accept => Some(Sent {
            accepted_at: stage,
            replaced: None,
        }),
        Status::Continue => None,
        Status::Noreply if matches!(stage, Stage::Rcpt | Stage::Header | Stage::Body) => None,
        other => panic!("unexpected {other:?} at {stage:?}"),
    };
    mail_macros(conn, msg.auth, msg.client_addr).await;
    let status = conn
        .mail([format!("<{}>", msg.sender), "BODY=8BITMIME".into()])
        .await
        .unwrap();
    if let Some(sent) = accepted(Stage::Mail, status) {
        return sent;
    }
    for rcpt in &msg.rcpts {
        let status = conn.rcpt([format!("<{rcpt}>")]).await.unwrap();
        if let Some(sent) = accepted(Stage::Rcpt, status) {
            return sent;
        }
    }
    for (name, value) in &msg.headers {
        let status = conn.header(*name, *value).await.unwrap();
        if let Some(sent) = accepted(Stage::Header, status) {
            return sent;
        }
    }
    if !conn.negotiated_opts().contains(ProtoOpts::NO_EOH)
        && let Some(sent) = accepted(Stage::Eoh, conn.eoh().await.unwrap())
    {
        return sent;
    }
    let chunk = if msg.chunk == 0 {
        msg.body.len().max(1)
    } else {
        msg.chunk
    };
    for piece in msg.body.chunks(chunk) {
        let status = conn.body(piece.to_vec()).await.unwrap();
        if let Some(sent) = accepted(Stage::Body, status) {
            return sent;
        }
    }
    let (actions, status) = conn.eom().await.unwrap();
    assert_eq!(status, Status::Accept, "end of message");
    let mut replaced: Option<Vec<u8>> = None;
    for action in &actions.actions {
        match action {
            EomAction::ReplaceBody { chunk } => {
                replaced.get_or_insert_default().extend_from_slice(chunk)
            }
            other => panic!("unexpected action {other:?}"),
        }
    }
    assert_eq!(actions.has_replaced_body(any()), replaced.is_some());
    if let Some(body) = &replaced {
        assert!(actions.has_replaced_body(body.as_slice()));
    }
    Sent {
        accepted_at: Stage::Eom,
        replaced,
    }
}

/// The tracking ids of every pixel URL in `body`, and `body` with each id replaced by `<ID>`.
/// Fails unless each id is exactly 22 base64url characters.
#[track_caller]
fn pixel_ids(body: &[u8]) -> (Vec<String>, Vec<u8>) {
    let is_b64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut ids = Vec::new();
    let mut normalized = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest
        .windows(PIXEL.len())
        .position(|w| w == PIXEL.as_bytes())
    {
        let after = &rest[at + PIXEL.len()..];
        let len = after.iter().take_while(|&&b| is_b64url(b)).count();
        assert_eq!(
            len,
            22,
            "tracking id in {:?}",
            String::from_utf8_lossy(body)
        );
        ids.push(String::from_utf8(after[..len].to_vec()).unwrap());
        normalized.extend_from_slice(&rest[..at + PIXEL.len()]);
        normalized.extend_from_slice(b"<ID>");
        rest = &after[len..];
    }
    normalized.extend_from_slice(rest);
    (ids, normalized)
}

/// Asserts that the body of `sent` was replaced and has exactly one pixel; returns its id.
#[track_caller]
fn one_pixel(sent: &Sent) -> String {
    assert_eq!(sent.accepted_at, Stage::Eom);
    let body = sent.replaced.as_ref().expect("the body was not replaced");
    let (ids, _) = pixel_ids(body);
    assert_eq!(
        ids.len(),
        1,
        "pixels in {:?}",
        String::from_utf8_lossy(body)
    );
    ids.into_iter().next().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn tracked_html_gets_one_pixel_and_a_row() -> anyhow::Result<()> {
    const FOLDED_HEADERS: &[(&str, &str)] = &[
        ("From", "News <news@example.test>"),
        ("To", "a@x.test,\n\tb@y.test"),
        ("Subject", "=?utf-8?q?Gr=C3=BC?=\n =?utf-8?q?=C3=9Fe?="),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/html;\n\tcharset=utf-8"),
    ];
    // Postfix sends folded header values with bare LF line breaks.
    let cases = [
        ("one-line headers", HTML_HEADERS),
        ("folded headers", FOLDED_HEADERS),
    ];

    let fx = fixture()?;
    // The TCP path of `--socket inet:`, with TCP_NODELAY and TCP_QUICKACK.
    let milter = Milter::spawn(fx.db_path.clone(), Limits::default(), true).await;
    let mut conn = milter.connect(peer(Some(INTERNET))).await;
    for (i, (name, headers)) in cases.into_iter().enumerate() {
        let sent = send(&mut conn, &tracked().with_headers(headers)).await;
        let id = one_pixel(&sent);
        let text = String::from_utf8(sent.replaced.unwrap())?;
        let img = format!("<img src=\"{PIXEL}{id}\"");
        assert!(
            text.starts_with("<html><body><p>hi</p>"),
            "{name}: {text:?}"
        );
        assert!(text.ends_with("</body></html>\r\n"), "{name}: {text:?}");
        let at_img = text
            .find(&img)
            .unwrap_or_else(|| panic!("{name}: no {img} in {text:?}"));
        assert!(at_img < text.find("</body>").unwrap(), "{name}: {text:?}");
        assert_eq!(
            fx.rows().get(i),
            Some(&Row {
                tracking_id: id,
                sender: "news@example.test".into(),
                recipients: "a@x.test,b@y.test".into(),
                subject: "Grüße".into(),
                alias_id: Some(fx.news_id),
            }),
            "{name}"
        );
    }
    assert_eq!(fx.rows().len(), cases.len());

    conn.close().await?;
    milter.shutdown().await;
    Ok(())
}

/// A message over `INLINE_REWRITE_MAX` is rewritten on the blocking pool rather than on the
/// runtime thread, with the same result: one pixel before `</body>`, one row.
#[tokio::test]
async fn a_large_message_is_rewritten_off_the_runtime_thread() -> anyhow::Result<()> {
    let paragraph = "<p>Line of a long newsletter, with enough text to add up.</p>\r\n";
    let count = session::INLINE_REWRITE_MAX / paragraph.len() + 100;
    let body = format!(
        "<html><body>\r\n{}</body></html>\r\n",
        paragraph.repeat(count)
    );
    assert!(body.len() > session::INLINE_REWRITE_MAX);

    let fx = fixture()?;
    let milter = fx.milter(Limits::default()).await;
    let mut conn = milter.connect(peer(Some(INTERNET))).await;
    let msg = Msg {
        chunk: 65535,
        ..tracked().with_body(body.as_bytes())
    };
    let sent = send(&mut conn, &msg).await;
    let id = one_pixel(&sent);
    let text = String::from_utf8(sent.replaced.unwrap())?;
    let end = body.rfind("</body>").unwrap();
    let img = text.find(&format!("<img src=\"{PIXEL}{id}\"")).unwrap();
    assert!(
        img >= end,
        "pixel at {img}, before the end of the content at {end}"
    );
    assert!(text[..end] == body[..end], "bytes before the pixel changed");
    assert!(text[img..].ends_with("</body></html>\r\n"));
    assert_eq!(fx.rows().len(), 1);
    conn.close().await?;
    milter.shutdown().await;
    Ok(())
}

/// The NOREPLY options are taken one by one: an MTA offering them for RCPT and headers but not
/// for body chunks gets an answer to each chunk, and none for the others.
#[tokio::test]
async fn noreply_options_are_taken_where_offered() -> anyhow::Result<()> {
    let fx = fixture()?;
    let milter = fx.milter(Limits::default()).await;
    let offered = ProtoOpts::all().difference(ProtoOpts::NOREPLY_BODY);
    let mut conn = TestConnection::configure()
        .available_opts(offered)
        .open_tcp(milter.addr)
        .await?;
    let opts = conn.negotiated_opts();
    assert!(opts.contains(ProtoOpts::NOREPLY_RCPT | ProtoOpts::NOREPLY_HEADER));
    assert!(!opts.contains(ProtoOpts::NOREPLY_BODY));
    mail_macros(&mut conn, Some("alice@example.test"), Some(INTERNET)).await;
    assert_eq!(conn.mail(["<news@example.test>"]).await?, Status::Continue);
    assert_eq!(conn.rcpt(["<a@x.test>"]).await?, Status::Noreply);
    for (name, value) in HTML_HEADERS {
        assert_eq!(conn.header(*name, *value).await?, Status::Noreply);
    }
    assert_eq!(conn.body(HTML).await?, Status::Continue);
    conn.abort().await?;
    let sent = send(&mut conn, &tracked()).await;
    one_pixel(&sent);
    conn.close().await?;
    milter.shutdown().await;
    Ok(())
}

/// An MTA that offers no NOREPLY options and lets the milter choose no macros (Postfix before
/// 2.6, or another MTA) gets an answer to every callback, sends its own macro lists, and tracking
/// works the same.
#[tokio::test]
async fn an_mta_without_noreply_options_gets_every_answer() -> anyhow::Result<()> {
    let fx = fixture()?;
    let milter = Milter::spawn(fx.db_path.clone(), Limits::default(), true).await;
    let offered = ProtoOpts::all().difference(QUIET);
    let mut conn = TestConnection::configure()
        .available_opts(offered)
        .available_actions(Actions::all().difference(Actions::REQUEST_MACROS))
        .open_tcp(milter.addr)
        .await?;
    assert_eq!(conn.negotiated_actions(), Actions::REPLACE_BODY);
    assert!(!conn.negotiated_opts().intersects(QUIET));
    assert!(conn.requested_macros().is_empty());
    mail_macros(&mut conn, Some("alice@example.test"), Some(INTERNET)).await;
    assert_eq!(conn.mail(["<news@example.test>"]).await?, Status::Continue);
    assert_eq!(conn.rcpt(["<a@x.test>"]).await?, Status::Continue);
    for (name, value) in HTML_HEADERS {
        assert_eq!(conn.header(*name, *value).await?, Status::Continue);
    }
    conn.abort().await?;
    let sent = send(&mut conn, &tracked()).await;
    one_pixel(&sent);
    // Without NOREPLY the milter can stop at the DKIM-Signature header itself.
    let sent = send(&mut conn, &tracked().with_headers(DKIM_HEADERS)).await;
    assert_eq!(sent.accepted_at, Stage::Header);
    assert!(sent.replaced.is_none());
    // ... and at the body chunk that passes max_body.
    let big = format!(
        "<html><body>{}</body></html>\r\n",
        "x".repeat(Limits::default().max_body)
    );
    let msg = Msg {
        chunk: 65535,
        ..tracked().with_body(big.as_bytes())
    };
    let sent = send(&mut conn, &msg).await;
    assert_eq!(sent.accepted_at, Stage::Body);
    assert!(sent.replaced.is_none());
    conn.close().await?;
    milter.shutdown().await;
    Ok(())
}

/// Stalwart's chunk sweep: the body in chunks of every size from 1 byte to all of it, one message
/// per size on one connection. The milter must rebuild the same bytes each time, so the results
/// may differ only in the random tracking id.
#[tokio::test]
async fn every_body_chunk_size_gives_the_same_result() -> anyhow::Result<()> {
    const ALTERNATIVE_HEADERS: &[(&str, &str)] = &[
        ("From", "News <news@example.test>"),
        ("To", "a@x.test, b@y.test"),
        ("Subject", "=?utf-8?q?Gr=C3=BC=C3=9Fe?="),
        ("MIME-Version", "1.0"),
        ("Content-Type", "multipart/alternative; boundary=\"b1\""),
    ];
    const ALTERNATIVE: &[u8] = b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi there\r\n\
        --b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
        <html><head><title>x</title></head><body class=\"m\"><p>hi <b>there</b></p></body></html>\r\n\
        --b1--\r\n";
    let cases = [
        ("text/html", tracked()),
        (
            "multipart/alternative",
            tracked()
                .with_headers(ALTERNATIVE_HEADERS)
                .with_body(ALTERNATIVE),
        ),
    ];

    let fx = fixture()?;
    // Over 1,500 round trips: without TCP_NODELAY this test takes 20 s instead of under one.
    let milter = Milter::spawn(fx.db_path.clone(), Limits::default(), true).await;
    let mut ids = BTreeSet::new();
    for (name, msg) in &cases {
        let mut conn = milter.connect(peer(Some(INTERNET))).await;
        let mut first: Option<Vec<u8>> = None;
        for chunk in 1..=msg.body.len() {
            let sent = send(
                &mut conn,
                &Msg {
                    chunk,
                    ..msg.clone()
                },
            )
            .await;
            let id = one_pixel(&sent);
            assert!(ids.insert(id), "{name}: tracking id reused");
            let (_, normalized) = pixel_ids(sent.replaced.as_ref().unwrap());
            match &first {
                None => first = Some(normalized),
                Some(first) => assert_eq!(
                    String::from_utf8_lossy(&normalized),
                    String::from_utf8_lossy(first),
                    "{name}: chunk size {chunk}"
                ),
            }
        }
        conn.close().await?;
    }
    let recorded: BTreeSet<_> = fx.rows().into_iter().map(|r| r.tracking_id).collect();
    assert_eq!(recorded, ids);

    milter.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn untracked_mail_is_passed_through() -> anyhow::Result<()> {
    const TEXT_HEADERS: &[(&str, &str)] = &[
        ("From", "News <news@example.test>"),
        ("To", "a@x.test"),
        ("Subject", "plain"),
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
    ];

    const SIGNED_HEADERS: &[(&str, &str)] = &[
        ("From", "News <news@example.test>"),
        ("To", "a@x.test"),
        ("Subject", "S/MIME"),
        ("MIME-Version", "1.0"),
        (
            "Content-Type",
            "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"sig\"",
        ),
    ];
    const SIGNED: &[u8] = b"--sig\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
        <html><body><p>hi</p></body></html>\r\n\
        --sig\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
        Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAA==\r\n\
        --sig--\r\n";
    let mut big_html = b"<html><body>".to_vec();
    big_html.resize(200 - b"</body></html>\r\n".len(), b'x');
    big_html.extend_from_slice(b"</body></html>\r\n");
    assert_eq!(big_html.len(), 200);
    let max_body_100 = Limits {
        max_body: 100,
        ..Limits::default()
    };
    // Room for the message as sent, not for the pixel on top of it.
    let no_room_for_the_pixel = Limits {
        message_size_limit: tracked().header_len() + HTML.len() + 10,
        ..Limits::default()
    };

    struct Case {
        name: &'static str,
        msg: Msg,
        limits: Limits,
        db_missing: bool,
        accepted_at: Stage,
    }
    let case = |name, msg, accepted_at| Case {
        name,
        msg,
        limits: Limits::default(),
        db_missing: false,
        accepted_at,
    };
    let cases = [
        case(
            "internet mail claiming a tracked sender",
            Msg {
                auth: None,
                ..tracked()
            },
            Stage::Mail,
        ),
        case(
            "authenticated, untracked alias",
            Msg {
                sender: "info@example.test",
                ..tracked()
            },
            Stage::Mail,
        ),
        case(
            "authenticated, sender not an alias",
            Msg {
                sender: "alice@example.test",
                ..tracked()
            },
            Stage::Mail,
        ),
        case(
            "authenticated, sender in a domain we do not host",
            Msg {
                sender: "news@elsewhere.test",
                ..tracked()
            },
            Stage::Mail,
        ),
        case(
            "authenticated, null sender",
            Msg {
                sender: "",
                ..tracked()
            },
            Stage::Mail,
        ),
        case(
            "DKIM-Signature present",
            tracked().with_headers(DKIM_HEADERS),
            // Postfix waits for no answer to headers and body: end of message says ACCEPT.
            Stage::Eom,
        ),
        case(
            "plain text, no HTML",
            tracked().with_headers(TEXT_HEADERS),
            Stage::Eom,
        ),
        case(
            "multipart/signed",
            tracked().with_headers(SIGNED_HEADERS).with_body(SIGNED),
            Stage::Eom,
        ),
        Case {
            limits: max_body_100.clone(),
            ..case(
                "body over max_body, one chunk",
                tracked().with_body(&big_html),
                Stage::Eom,
            )
        },
        Case {
            limits: max_body_100,
            ..case(
                "body over max_body, 64-byte chunks",
                Msg {
                    chunk: 64,
                    ..tracked().with_body(&big_html)
                },
                Stage::Eom,
            )
        },
        Case {
            limits: no_room_for_the_pixel,
            ..case(
                "rewritten message over message_size_limit",
                tracked(),
                Stage::Eom,
            )
        },
        Case {
            db_missing: true,
            ..case("database file missing", tracked(), Stage::Mail)
        },
    ];

    for Case {
        name,
        msg,
        limits,
        db_missing,
        accepted_at,
    } in cases
    {
        let fx = fixture()?;
        let db_path = if db_missing {
            fx.dir.path().join("missing").join("tracking.db")
        } else {
            fx.db_path.clone()
        };
        let milter = Milter::spawn(db_path.clone(), limits, false).await;
        let mut conn = milter.connect(peer(msg.client_addr)).await;
        let sent = send(&mut conn, &msg).await;
        assert_eq!(sent.accepted_at, accepted_at, "{name}");
        assert!(sent.replaced.is_none(), "{name}: body replaced");
        assert_eq!(fx.rows(), [], "{name}: row written");
        if db_missing {
            assert!(!db_path.exists(), "{name}: the milter created a database");
        }
        conn.close().await?;
        milter.shutdown().await;
    }
    Ok(())
}

/// The milter may start before `mailserver init` has created the database: it passes mail through
/// meanwhile, and tracks once the database is there, without a restart.
#[tokio::test]
async fn database_created_after_start_is_picked_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db_path = dir.path().join("tracking/tracking.db");
    let milter = Milter::spawn(db_path.clone(), Limits::default(), false).await;
    let mut conn = milter.connect(peer(Some(INTERNET))).await;

    let sent = send(&mut conn, &tracked()).await;
    assert_eq!(sent.accepted_at, Stage::Mail);
    assert!(!db_path.exists(), "the milter created a database");

    let fx = prepare(dir)?;
    assert_eq!(fx.db_path, db_path);
    let id = one_pixel(&send(&mut conn, &tracked()).await);
    assert_eq!(
        fx.rows().iter().map(|r| &r.tracking_id).collect::<Vec<_>>(),
        [&id]
    );

    conn.close().await?;
    milter.shutdown().await;
    Ok(())
}

/// `max_body` is the largest body still tracked.
#[tokio::test]
async fn max_body_is_inclusive() -> anyhow::Result<()> {
    let cases = [
        (HTML.len(), 0, true),
        (HTML.len(), 5, true),
        (HTML.len() - 1, 0, false),
        (HTML.len() - 1, 5, false),
    ];
    for (max_body, chunk, tracked_) in cases {
        let fx = fixture()?;
        let limits = Limits {
            max_body,
            ..Limits::default()
        };
        let milter = fx.milter(limits).await;
        let mut conn = milter.connect(peer(Some(INTERNET))).await;
        let sent = send(&mut conn, &Msg { chunk, ..tracked() }).await;
        // Postfix waits for no answer to body chunks: end of message says ACCEPT either way.
        assert_eq!(
            sent.accepted_at,
            Stage::Eom,
            "max_body {max_body}, chunk {chunk}"
        );
        assert_eq!(
            sent.replaced.is_some(),
            tracked_,
            "max_body {max_body}, chunk {chunk}"
        );
        assert_eq!(fx.rows().len(), usize::from(tracked_));
        conn.close().await?;
        milter.shutdown().await;
    }
    Ok(())
}

/// Mail submitted on this host needs no SASL login: SMTP from loopback (Postfix's `mynetworks`)
/// and Postfix's non-SMTP path (sendmail), which has no `{client_addr}` at all.
#[tokio::test]
async fn local_submission_is_tracked() -> anyhow::Result<()> {
    let cases = [
        ("SMTP from 127.0.0.1, no login", Some("127.0.0.1")),
        ("SMTP from ::1, no login", Some("::1")),
        ("non-SMTP (sendmail), no client address", None),
    ];
    let fx = fixture()?;
    let milter = fx.milter(Limits::default()).await;
    for (i, (name, client_addr)) in cases.into_iter().enumerate() {
        let msg = Msg {
            auth: None,
            client_addr,
            ..tracked()
        };
        let mut conn = milter.connect(peer(client_addr)).await;
        let sent = send(&mut conn, &msg).await;
        assert_eq!(sent.accepted_at, Stage::Eom, "{name}");
        let id = one_pixel(&sent);
        let rows = fx.rows();
        assert_eq!(rows.len(), i + 1, "{name}");
        assert_eq!(rows[i].tracking_id, id, "{name}");
        assert_eq!(rows[i].alias_id, Some(fx.news_id), "{name}");
        conn.close().await?;
    }
    milter.shutdown().await;
    Ok(())
}

/// Untracked mail gets ACCEPT at MAIL FROM, so Postfix sends the milter nothing more for it;
/// tracked mail gets CONTINUE. All on one connection, as smtpd reuses it for each transaction.
#[tokio::test]
async fn mail_from_answer() -> anyhow::Result<()> {
    const ALICE: Option<&str> = Some("alice@example.test");
    const FROM_INTERNET: Option<&str> = Some(INTERNET);
    const LOOPBACK: Option<&str> = Some("127.0.0.1");
    let cases = [
        (
            "internet, tracked sender",
            None,
            FROM_INTERNET,
            "news@example.test",
            Status::Accept,
        ),
        (
            "internet, stranger",
            None,
            FROM_INTERNET,
            "someone@elsewhere.test",
            Status::Accept,
        ),
        (
            "authenticated, tracked",
            ALICE,
            FROM_INTERNET,
            "news@example.test",
            Status::Continue,
        ),
        (
            "authenticated, tracked, mixed case",
            ALICE,
            FROM_INTERNET,
            "News@Example.TEST",
            Status::Continue,
        ),
        (
            "authenticated, untracked alias",
            ALICE,
            FROM_INTERNET,
            "info@example.test",
            Status::Accept,
        ),
        (
            "authenticated, not an alias",
            ALICE,
            FROM_INTERNET,
            "alice@example.test",
            Status::Accept,
        ),
        (
            "authenticated, null sender",
            ALICE,
            FROM_INTERNET,
            "",
            Status::Accept,
        ),
        (
            "authenticated, not an address",
            ALICE,
            FROM_INTERNET,
            "news",
            Status::Accept,
        ),
        (
            "local, tracked",
            None,
            LOOPBACK,
            "news@example.test",
            Status::Continue,
        ),
        (
            "local, untracked alias",
            None,
            LOOPBACK,
            "info@example.test",
            Status::Accept,
        ),
        (
            "non-SMTP, tracked",
            None,
            None,
            "news@example.test",
            Status::Continue,
        ),
        (
            "non-SMTP, untracked alias",
            None,
            None,
            "info@example.test",
            Status::Accept,
        ),
    ];
    let fx = fixture()?;
    let milter = fx.milter(Limits::default()).await;
    let mut conn = milter.connect(peer(Some(INTERNET))).await;
    for (name, auth, client_addr, sender, want) in cases {
        mail_macros(&mut conn, auth, client_addr).await;
        let status = conn.mail([format!("<{sender}>")]).await?;
        assert_eq!(status, want, "{name}");
        if status == Status::Continue {
            // The client gives up after RCPT (RSET or QUIT): Postfix aborts the transaction.
            assert_eq!(conn.rcpt(["<a@x.test>"]).await?, Status::Noreply, "{name}");
            conn.abort().await?;
        }
    }
    // Nothing of the aborted transactions leaks into the next one.
    let msg = Msg {
        rcpts: vec!["c@z.test"],
        ..tracked()
    };
    let id = one_pixel(&send(&mut conn, &msg).await);
    let rows = fx.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].tracking_id.as_str(), rows[0].recipients.as_str()),
        (id.as_str(), "c@z.test")
    );

    conn.close().await?;
    milter.shutdown().await;
    Ok(())
}

/// A tracked message whose MIME structure is broken passes unchanged, and the connection goes on
/// serving: the next messages, one of them aborted in the middle of its body, are handled normally.
#[tokio::test]
async fn broken_mime_passes_unchanged_and_the_session_goes_on() -> anyhow::Result<()> {
    const BROKEN_HEADERS: &[(&str, &str)] = &[
        ("From", "News <news@example.test>"),
        ("To", "a@x.test, b@y.test"),
        ("Subject", "broken"),
        ("MIME-Version", "1.0"),
        (
            "Content-Type",
            "multipart/alternative; boundary=\"never-there\"",
        ),
    ];
    const BROKEN: &[u8] = b"--other\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
        <html><body><p>hi</p></body></html>\r\n--other--\r\n";
    let fx = fixture()?;
    let milter = fx.milter(Limits::default()).await;
    let mut conn = milter.connect(peer(Some(INTERNET))).await;

    let sent = send(
        &mut conn,
        &tracked().with_headers(BROKEN_HEADERS).with_body(BROKEN),
    )
    .await;
    assert_eq!(sent.accepted_at, Stage::Eom);
    assert!(sent.replaced.is_none(), "broken MIME was rewritten");
    assert_eq!(fx.rows(), []);

    // A tracked message aborted after part of its body.
    mail_macros(&mut conn, Some("alice@example.test"), Some(INTERNET)).await;
    assert_eq!(conn.mail(["<news@example.test>"]).await?, Status::Continue);
    assert_eq!(conn.rcpt(["<a@x.test>"]).await?, Status::Noreply);
    for (name, value) in HTML_HEADERS {
        assert_eq!(conn.header(*name, *value).await?, Status::Noreply);
    }
    assert_eq!(
        conn.body(&b"<html><body><p>aborted"[..]).await?,
        Status::Noreply
    );
    conn.abort().await?;

    // The same connection serves the next message, untouched by the aborted one.
    let reference = {
        let mut conn = milter.connect(peer(Some(INTERNET))).await;
        let sent = send(&mut conn, &tracked()).await;
        conn.close().await?;
        sent
    };
    one_pixel(&reference);
    let sent = send(&mut conn, &tracked()).await;
    let id = one_pixel(&sent);
    assert_eq!(
        pixel_ids(&sent.replaced.unwrap()).1,
        pixel_ids(&reference.replaced.unwrap()).1
    );
    let rows = fx.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].tracking_id, id);
    assert_eq!(rows[1].recipients, "a@x.test,b@y.test");

    conn.close().await?;
    milter.shutdown().await;
    Ok(())
}
