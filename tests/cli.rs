//! Integration tests of the `mailserver` admin CLI, run as the real binary against a temp data
//! directory. Those that run `init` need the daemon users (vmail, opendkim, postfix,
//! mailserver-web, mailserver-milter: `init` looks them up) and run only with the `system-tests`
//! feature (scripts/test.sh). As root they also check the files' owners, and they validate with
//! postconf/doveconf/opendkim where those are installed; no daemon runs, so nothing is reloaded.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rusqlite::{Connection, OpenFlags};
use tempfile::TempDir;

const INIT_ENV: &[(&str, &str)] = &[
    ("HOSTNAME", "mx.example.test"),
    ("LISTEN_ADDRESS", "127.0.0.1"),
    ("SMTP_PORT", "2525"),
    ("SUBMISSION_PORT", "2587"),
    ("SMTPS_PORT", "2465"),
    ("IMAP_PORT", "2143"),
    ("IMAPS_PORT", "2993"),
    ("POP3_PORT", "2110"),
    ("POP3S_PORT", "2995"),
    ("WEB_PORT", "28080"),
];

/// A mailbox password that passes the password policy.
const PW: &str = "Tq8wLz4nRv2k-pw";

/// Settings `init` reads that the tests do not set: removed so the caller's environment cannot leak in.
const OTHER_SETTINGS: &[&str] = &["RELAYHOST", "PIXEL_BASE_URL", "BIN_DIR"];

fn tempdir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ms")
        .tempdir_in("/tmp")
        .expect("create a temp dir");
    assert!(dir.path().to_string_lossy().len() <= 60);
    dir
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailserver"));
    cmd.arg("--data")
        .arg(dir)
        .args(args)
        .env_remove("DATA_DIR")
        .env_remove("RUST_LOG");
    cmd
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("start mailserver");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // The CLI may exit before reading (a refused argument): a broken pipe is not our failure.
        let _ = pipe.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("wait for mailserver")
}

/// Runs `mailserver --data DIR ARGS...`, feeding `stdin` when given.
fn ms(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    run(command(dir, args), stdin)
}

/// Runs `mailserver --data DIR init` with the test settings in the environment.
fn init(dir: &Path) -> Output {
    let mut cmd = command(dir, &["init"]);
    cmd.envs(INIT_ENV.iter().copied());
    for k in OTHER_SETTINGS {
        cmd.env_remove(k);
    }
    run(cmd, None)
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "mailserver {args:?}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts the command succeeded and returns its stdout.
#[track_caller]
fn ok(args: &[&str], out: Output) -> String {
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// Runs a command that must succeed; returns its stdout.
#[track_caller]
fn ms_ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    ok(args, ms(dir, args, stdin))
}

/// Asserts the command failed with status 1 and a message on stderr; returns the stderr.
#[track_caller]
fn fails(args: &[&str], out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", describe(args, &out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.starts_with("mailserver: ") && stderr.trim().len() > "mailserver:".len(),
        "{}",
        describe(args, &out)
    );
    stderr
}

/// A data directory that has been through `init`.
fn initialised() -> TempDir {
    let dir = tempdir();
    ok(&["init"], init(dir.path()));
    dir
}

/// The password in the block `init` prints when it makes the admin's password.
fn printed_admin_password(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .find_map(|l| l.split_once("admin password: ").map(|(_, pw)| pw.trim()))
}

/// Only root can give files to other users: the owners are checked only then.
fn as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().expect("id");
    assert!(out.status.success(), "no user {user}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_text(path: &Path) -> String {
    String::from_utf8(read(path)).expect("UTF-8")
}

/// Rows of a query on DIR/maps/maps.db, opened read-only; every column as text.
fn maps_query(dir: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    let conn = Connection::open_with_flags(
        dir.join("maps/maps.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open maps.db");
    let mut stmt = conn.prepare(sql).expect("prepare");
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn strings(rows: &[Vec<Option<String>>]) -> Vec<Vec<&str>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect())
        .collect()
}

/// Everything in maps.db, table by table, in a stable order.
fn maps_contents(dir: &Path) -> BTreeMap<&'static str, Vec<Vec<Option<String>>>> {
    [
        ("domains", "SELECT domain FROM domains ORDER BY 1"),
        (
            "mailboxes",
            "SELECT email, password, home, quota_rule FROM mailboxes ORDER BY 1",
        ),
        (
            "aliases",
            "SELECT source, destination FROM aliases ORDER BY 1",
        ),
        (
            "sender_logins",
            "SELECT address, login FROM sender_logins ORDER BY 1, 2",
        ),
    ]
    .into_iter()
    .map(|(table, sql)| (table, maps_query(dir, sql)))
    .collect()
}

/// Every file below `root`: path -> (mode, owner, contents).
fn files_under(root: &Path) -> BTreeMap<PathBuf, (u32, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                todo.push(path.clone());
            }
            let contents = if meta.is_file() {
                read(&path)
            } else {
                Vec::new()
            };
            out.insert(path, (meta.mode() & 0o7777, meta.uid(), contents));
        }
    }
    out
}

/// What a refused command must leave alone.
#[derive(PartialEq, Eq)]
struct State {
    maps: BTreeMap<&'static str, Vec<Vec<Option<String>>>>,
    files: BTreeMap<PathBuf, (u32, u32, Vec<u8>)>,
    /// `domain list`, `account list`, `alias list`: the main database as the CLI sees it.
    lists: Vec<String>,
}

fn state(dir: &Path) -> State {
    let mut files = files_under(&dir.join("config"));
    files.extend(files_under(&dir.join("dkim")));
    State {
        maps: maps_contents(dir),
        files,
        lists: [["domain", "list"], ["account", "list"], ["alias", "list"]]
            .iter()
            .map(|args| ms_ok(dir, args, None))
            .collect(),
    }
}

/// Panics naming what differs between two states.
#[track_caller]
fn assert_unchanged(what: &str, before: &State, after: &State) {
    if before == after {
        return;
    }
    let mut diffs = Vec::new();
    if before.maps != after.maps {
        diffs.push(format!(
            "maps.db: {:?} became {:?}",
            before.maps, after.maps
        ));
    }
    if before.lists != after.lists {
        diffs.push(format!(
            "lists: {:?} became {:?}",
            before.lists, after.lists
        ));
    }
    for path in before.files.keys().chain(after.files.keys()) {
        let (a, b) = (before.files.get(path), after.files.get(path));
        if a != b {
            let show = |f: Option<&(u32, u32, Vec<u8>)>| {
                f.map_or("missing".to_string(), |(m, u, c)| {
                    format!("mode {m:o} uid {u}, {} bytes", c.len())
                })
            };
            diffs.push(format!("{}: {} -> {}", path.display(), show(a), show(b)));
        }
    }
    panic!("{what} changed something:\n{}", diffs.join("\n"));
}

/// Splits a zone-file TXT value (`"a" "b"`) into its character-strings.
fn txt_strings(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return out;
        }
        let body = rest
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("unquoted TXT text in {value:?}"));
        let end = body
            .find('"')
            .unwrap_or_else(|| panic!("unclosed quote in {value:?}"));
        out.push(body[..end].to_string());
        rest = &body[end + 1..];
    }
}

/// The base64 SubjectPublicKeyInfo of a PKCS#8 PEM private key: what the DNS `p=` must be.
fn public_b64(private_pem: &str) -> String {
    use base64::Engine as _;
    use rsa::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
    let key = rsa::PrivateKey::from_pkcs8_pem(private_pem).expect("a PKCS#8 RSA key");
    let der = key.to_public_key().to_public_key_der().expect("encode");
    base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
}

/// Checks `dns DOMAIN`: four records, the DKIM one carrying the public half of `selector`'s key file.
#[track_caller]
fn check_dns(dir: &Path, domain: &str, selector: &str) {
    let out = ms_ok(dir, &["dns", domain], None);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 4, "{out}");
    for l in &lines {
        assert_eq!(l.len(), 5, "not NAME TTL IN TYPE VALUE: {l:?}");
        assert_eq!(&l[1..3], ["3600", "IN"], "{l:?}");
    }
    let head = |l: &Vec<&str>| (l[0].to_string(), l[3].to_string());
    assert_eq!(
        lines.iter().map(head).collect::<Vec<_>>(),
        [
            (format!("{domain}."), "MX".to_string()),
            (format!("{domain}."), "TXT".to_string()),
            (
                format!("{selector}._domainkey.{domain}."),
                "TXT".to_string()
            ),
            (format!("_dmarc.{domain}."), "TXT".to_string()),
        ]
    );
    assert_eq!(lines[0][4], "10 mx.example.test.");
    assert_eq!(txt_strings(lines[1][4]), ["v=spf1 mx -all"]);
    let dkim = txt_strings(lines[2][4]);
    assert!(
        dkim.len() >= 2,
        "a 2048-bit key needs two strings: {dkim:?}"
    );
    for s in &dkim {
        assert!(s.len() <= 255, "TXT string of {} characters", s.len());
    }
    let joined = dkim.concat();
    let p = joined
        .strip_prefix("v=DKIM1; k=rsa; p=")
        .unwrap_or_else(|| panic!("DKIM record {joined:?}"));
    let key = read_text(&dir.join(format!("dkim/{domain}/{selector}.private")));
    assert_eq!(p, public_b64(&key), "the DNS key is not the signing key");
    let dmarc = txt_strings(lines[3][4]).concat();
    assert!(dmarc.starts_with("v=DMARC1; p="), "{dmarc}");
}

#[test]
#[cfg_attr(not(feature = "system-tests"), ignore = "needs the daemon users")]
fn init_is_idempotent() {
    let dir = initialised();
    let d = dir.path();
    ms_ok(d, &["domain", "add", "example.test"], None);
    let watched = [
        d.join("ssl/cert.pem"),
        d.join("ssl/key.pem"),
        d.join("dkim/example.test/mail.private"),
    ];
    let before: Vec<Vec<u8>> = watched.iter().map(|p| read(p)).collect();
    let config_before = files_under(&d.join("config"));

    let out = init(d);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&["init"], out);
    let lower = stderr.to_lowercase();
    for bad in ["error", "warn", "fatal", "dashboard admin", "self-signed"] {
        assert!(!lower.contains(bad), "second init said {bad:?}: {stderr}");
    }
    assert!(stderr.contains("wrote 0 file(s)"), "{stderr}");

    // Without the settings in the environment, the stored ones are kept.
    let mut cmd = command(d, &["init"]);
    for (k, _) in INIT_ENV {
        cmd.env_remove(k);
    }
    for k in OTHER_SETTINGS {
        cmd.env_remove(k);
    }
    ok(&["init"], run(cmd, None));

    for (path, old) in watched.iter().zip(&before) {
        assert_eq!(&read(path), old, "{} changed", path.display());
    }
    assert!(files_under(&d.join("config")) == config_before);
    // The main database and the TLS key: the dashboard's group only; tracking.db: the `mailserver`
    // group (the dashboard and the milter). Nobody else.
    assert_eq!(mode(&d.join("db/mailserver.db")), 0o660);
    assert_eq!(mode(&d.join("tracking/tracking.db")), 0o660);
    assert_eq!(mode(&d.join("ssl/key.pem")), 0o640);
    if as_root() {
        let gid = |name: &str| {
            nix::unistd::Group::from_name(name)
                .unwrap()
                .unwrap()
                .gid
                .as_raw()
        };
        for (f, group) in [
            ("db/mailserver.db", "mailserver-web"),
            ("ssl/key.pem", "mailserver-web"),
            ("db", "mailserver-web"),
            ("tracking/tracking.db", "mailserver"),
            ("tracking", "mailserver"),
        ] {
            let meta = std::fs::metadata(d.join(f)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (0, gid(group)), "{f}");
        }
    }
    let main_cf = read_text(&d.join("config/postfix/main.cf"));
    assert!(
        main_cf.lines().any(|l| l == "myhostname = mx.example.test"),
        "{main_cf}"
    );
    let master_cf = read_text(&d.join("config/postfix/master.cf"));
    assert!(
        master_cf.contains("\n127.0.0.1:2525 inet "),
        "SMTP_PORT/LISTEN_ADDRESS not in master.cf:\n{master_cf}"
    );
}

#[test]
#[cfg_attr(not(feature = "system-tests"), ignore = "needs the daemon users")]
fn domains_accounts_aliases_end_to_end() {
    let dir = initialised();
    let d = dir.path();
    let opendkim = uid_of("opendkim");

    // Domain.
    assert_eq!(ms_ok(d, &["domain", "list"], None), "");
    ms_ok(d, &["domain", "add", "example.test"], None);
    assert_eq!(
        ms_ok(d, &["domain", "list"], None),
        "example.test\tactive\tmail\n"
    );
    let key = d.join("dkim/example.test/mail.private");
    assert_eq!(mode(&key), 0o600);
    if as_root() {
        assert_eq!(fs::metadata(&key).unwrap().uid(), opendkim);
        // The key's directory is root's (only root writes there), entered by OpenDKIM's group.
        let dir = fs::metadata(key.parent().unwrap()).unwrap();
        let opendkim_gid = nix::unistd::User::from_uid(opendkim.into())
            .unwrap()
            .unwrap()
            .gid
            .as_raw();
        assert_eq!((dir.uid(), dir.gid()), (0, opendkim_gid));
        assert_eq!(mode(key.parent().unwrap()), 0o750);
    }
    let key_table = read_text(&d.join("config/opendkim/KeyTable"));
    assert_eq!(
        key_table,
        format!(
            "mail._domainkey.example.test example.test:mail:{}\n",
            key.display()
        )
    );
    assert_eq!(
        read_text(&d.join("config/opendkim/SigningTable")),
        "*@example.test mail._domainkey.example.test\n"
    );
    check_dns(d, "example.test", "mail");
    assert_eq!(
        strings(&maps_query(d, "SELECT domain FROM domains")),
        [["example.test"]]
    );

    // Account.
    ms_ok(
        d,
        &[
            "account",
            "add",
            "alice@example.test",
            "--password-stdin",
            "--quota",
            "5",
        ],
        Some(&format!("{PW}\n")),
    );
    assert_eq!(
        ms_ok(d, &["account", "list"], None),
        "alice@example.test\tactive\t5\t\n"
    );
    let mailboxes = maps_query(d, "SELECT email, password, home, quota_rule FROM mailboxes");
    assert_eq!(mailboxes.len(), 1, "{mailboxes:?}");
    let row = strings(&mailboxes).remove(0);
    assert_eq!(row[0], "alice@example.test");
    assert!(row[1].starts_with("{ARGON2ID}$argon2id$"), "{}", row[1]);
    assert!(mailserver::password::verify(PW, row[1]));
    assert!(!mailserver::password::verify(&format!("{PW}\n"), row[1]));
    assert_eq!(
        row[2],
        d.join("mail/example.test/alice").to_string_lossy().as_ref()
    );
    assert_eq!(row[3], "*:storage=5M");

    // Alias.
    ms_ok(
        d,
        &[
            "alias",
            "add",
            "sales@example.test",
            "alice@example.test,ext@outside.example",
            "--tracking",
        ],
        None,
    );
    assert_eq!(
        ms_ok(d, &["alias", "list"], None),
        "sales@example.test\talice@example.test,ext@outside.example\tactive\ttracking\n"
    );
    assert_eq!(
        strings(&maps_query(
            d,
            "SELECT source, destination FROM aliases ORDER BY 1"
        )),
        [[
            "sales@example.test",
            "alice@example.test,ext@outside.example"
        ]]
    );
    let logins = "SELECT address, login FROM sender_logins ORDER BY 1, 2";
    assert_eq!(
        strings(&maps_query(d, logins)),
        [
            ["alice@example.test", "alice@example.test"],
            ["sales@example.test", "alice@example.test"],
        ]
    );

    // Disable and enable the account.
    let emails = "SELECT email FROM mailboxes";
    ms_ok(d, &["account", "disable", "alice@example.test"], None);
    assert!(maps_query(d, emails).is_empty());
    assert!(maps_query(d, logins).is_empty());
    assert_eq!(
        ms_ok(d, &["account", "list"], None),
        "alice@example.test\tdisabled\t5\t\n"
    );
    ms_ok(d, &["account", "enable", "alice@example.test"], None);
    assert_eq!(strings(&maps_query(d, emails)), [["alice@example.test"]]);
    assert_eq!(maps_query(d, logins).len(), 2);

    // Rotate the DKIM key.
    let selector = ms_ok(d, &["domain", "dkim", "example.test"], None);
    let selector = selector.trim_end_matches('\n');
    let date = selector
        .strip_prefix("mail-")
        .unwrap_or_else(|| panic!("selector {selector:?}"));
    assert!(
        date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()),
        "selector {selector:?} is not mail-YYYYMMDD"
    );
    assert!(!key.exists(), "the old key file is still there");
    let new_key = d.join(format!("dkim/example.test/{selector}.private"));
    assert_eq!(mode(&new_key), 0o600);
    if as_root() {
        assert_eq!(fs::metadata(&new_key).unwrap().uid(), opendkim);
    }
    assert_eq!(
        ms_ok(d, &["domain", "list"], None),
        format!("example.test\tactive\t{selector}\n")
    );
    assert_eq!(
        read_text(&d.join("config/opendkim/KeyTable")),
        format!(
            "{selector}._domainkey.example.test example.test:{selector}:{}\n",
            new_key.display()
        )
    );
    check_dns(d, "example.test", selector);

    // Removing a domain in use is refused, and changes nothing.
    let before = state(d);
    let args = ["domain", "remove", "example.test"];
    let stderr = fails(&args, ms(d, &args, None));
    assert!(stderr.contains("account"), "{stderr}");
    assert_unchanged("domain remove without --cascade", &before, &state(d));

    ms_ok(d, &["domain", "remove", "example.test", "--cascade"], None);
    for (table, rows) in maps_contents(d) {
        assert!(rows.is_empty(), "maps.db {table} still has {rows:?}");
    }
    for list in ["domain", "account", "alias"] {
        assert_eq!(ms_ok(d, &[list, "list"], None), "", "{list} list");
    }
    assert!(!d.join("dkim/example.test").exists());
    assert_eq!(read_text(&d.join("config/opendkim/KeyTable")), "");
    assert_eq!(read_text(&d.join("config/opendkim/SigningTable")), "");
}

#[test]
#[cfg_attr(not(feature = "system-tests"), ignore = "needs the daemon users")]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = initialised();
    let d = dir.path();
    ms_ok(d, &["domain", "add", "example.test"], None);
    ms_ok(
        d,
        &["account", "add", "alice@example.test", "--password-stdin"],
        Some(&format!("{PW}\n")),
    );

    let start = state(d);
    assert!(
        start.files.keys().any(|p| p.ends_with("postfix/main.cf"))
            && start.files.keys().any(|p| p.ends_with("mail.private"))
            && start.maps["mailboxes"].len() == 1,
        "the snapshot does not see the data it should guard"
    );

    let pw_line = format!("{PW}\n");
    let pw = Some(pw_line.as_str());
    let cases: &[(&[&str], Option<&str>)] = &[
        (&["domain", "add", "exa mple.test"], None),
        (
            &["domain", "add", "example.test\nmydestination = evil"],
            None,
        ),
        (&["domain", "add", "ex:ample.test"], None),
        (&["domain", "add", "a,b.test"], None),
        (&["domain", "add", "%x.test"], None),
        (&["domain", "add", "\u{0435}xample.test"], None),
        (&["domain", "add", "'; DROP TABLE domains; --"], None),
        (&["domain", "add", "example.test"], None),
        (&["domain", "add", "EXAMPLE.test"], None),
        (
            &[
                "account",
                "add",
                "bad user@example.test",
                "--password-stdin",
            ],
            pw,
        ),
        (
            &["account", "add", "a:b@example.test", "--password-stdin"],
            pw,
        ),
        (
            &["account", "add", "a,b@example.test", "--password-stdin"],
            pw,
        ),
        (
            &[
                "account",
                "add",
                "alice@example.test\r\nX",
                "--password-stdin",
            ],
            pw,
        ),
        (
            &["account", "add", "bob@nowhere.test", "--password-stdin"],
            pw,
        ),
        (
            &["account", "add", "alice@example.test", "--password-stdin"],
            pw,
        ),
        (
            &["account", "add", "carol@example.test", "--password-stdin"],
            Some("\n"),
        ),
        (
            &["account", "add", "carol@example.test", "--password-stdin"],
            Some(""),
        ),
        (
            &["account", "add", "carol@example.test", "--password-stdin"],
            Some("x\n"),
        ),
        (
            &["account", "add", "carol@example.test", "--password-stdin"],
            Some("password123456\n"),
        ),
        (
            &[
                "account",
                "passwd",
                "alice@example.test",
                "--password-stdin",
            ],
            Some("alice@example.test2024\n"),
        ),
        (&["account", "add", "carol@example.test"], pw),
        (
            &["alias", "add", "info@example.test", "x@y.test\nz@w.test"],
            None,
        ),
        (
            &["alias", "add", "info@nowhere.test", "alice@example.test"],
            None,
        ),
        (&["alias", "add", "alice@example.test", "x@y.test"], None),
    ];
    for (args, stdin) in cases {
        let before = state(d);
        let stderr = fails(args, ms(d, args, *stdin));
        assert_unchanged(&format!("{args:?} ({stderr})"), &before, &state(d));
    }
}

#[test]
fn commands_before_init_ask_for_init() {
    let dir = tempdir();
    let d = dir.path();
    let cases: &[&[&str]] = &[
        &["apply"],
        &["domain", "list"],
        &["domain", "add", "example.test"],
        &["dns", "example.test"],
        &["account", "list"],
        &["alias", "list"],
        &["admin", "reset-password"],
    ];
    for args in cases {
        let stderr = fails(args, ms(d, args, None));
        assert!(stderr.contains("init"), "{args:?}: {stderr}");
        let left: Vec<_> = fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}

/// The default admin's password hash, from the main database opened read-only.
/// The password policy on the CLI: a weak password fails with exit 1 and the reason on stderr, and
/// nothing is stored; a strong one works.
#[test]
#[cfg_attr(not(feature = "system-tests"), ignore = "needs the daemon users")]
fn weak_account_passwords_are_refused_with_the_reason() {
    let dir = initialised();
    let d = dir.path();
    ms_ok(d, &["domain", "add", "example.test"], None);
    let add = ["account", "add", "alice@example.test", "--password-stdin"];
    for (weak, why) in [
        (
            "x",
            "mailserver: password too short: at least 12 characters",
        ),
        (
            "password123456",
            "mailserver: password too easy to guess: This is similar to a commonly used password.",
        ),
        (
            "alice@example.test2024",
            "It contains the user name, address or domain.",
        ),
    ] {
        let stderr = fails(&add, ms(d, &add, Some(&format!("{weak}\n"))));
        assert!(stderr.contains(why), "{weak}: {stderr}");
    }
    assert_eq!(ms_ok(d, &["account", "list"], None), "");
    ms_ok(d, &add, Some(&format!("{PW}\n")));
    let passwd = [
        "account",
        "passwd",
        "alice@example.test",
        "--password-stdin",
    ];
    let stderr = fails(&passwd, ms(d, &passwd, Some("qwertyuiop123\n")));
    assert!(stderr.contains("password too easy to guess"), "{stderr}");
    let hash =
        |d: &Path| strings(&maps_query(d, "SELECT password FROM mailboxes"))[0][0].to_string();
    assert!(mailserver::password::verify(PW, &hash(d)));
    ms_ok(d, &passwd, Some("vexing-quartz-ladle-91\n"));
    assert!(mailserver::password::verify(
        "vexing-quartz-ladle-91",
        &hash(d)
    ));
}

fn admin_hash(dir: &Path) -> String {
    let conn = Connection::open_with_flags(
        dir.join("db/mailserver.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open mailserver.db");
    conn.query_row(
        "SELECT password_hash FROM admins WHERE username = 'admin'",
        [],
        |r| r.get(0),
    )
    .expect("the admin row")
}

#[test]
#[cfg_attr(not(feature = "system-tests"), ignore = "needs the daemon users")]
fn admin_reset_password() {
    let dir = initialised();
    let d = dir.path();
    let out = ms_ok(d, &["admin", "reset-password"], None);
    let pw = out.strip_suffix('\n').unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(pw.len(), 24, "{out:?}");
    assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()), "{out:?}");
    assert!(!pw.contains('\n'));
    assert!(mailserver::password::verify(pw, &admin_hash(d)));
    assert!(!mailserver::password::verify("admin", &admin_hash(d)));
    let again = ms_ok(d, &["admin", "reset-password"], None);
    assert_ne!(again, out, "two resets gave the same password");

    let out = ms_ok(
        d,
        &["admin", "reset-password", "--password-stdin"],
        Some("n3w-password-given-Rb5y\n"),
    );
    assert_eq!(out, "", "nothing to print when the password was given");
    assert!(mailserver::password::verify(
        "n3w-password-given-Rb5y",
        &admin_hash(d)
    ));
    let args = ["admin", "reset-password", "--password-stdin"];
    fails(&args, ms(d, &args, Some("\n")));
    // No short password, and above all not `admin`; no easy one either.
    let stderr = fails(&args, ms(d, &args, Some("admin\n")));
    assert!(
        stderr.contains("password too short: at least 12 characters"),
        "{stderr}"
    );
    let stderr = fails(&args, ms(d, &args, Some("admin-admin-admin\n")));
    assert!(stderr.contains("password too easy to guess"), "{stderr}");
    assert!(mailserver::password::verify(
        "n3w-password-given-Rb5y",
        &admin_hash(d)
    ));
}

/// No default password: the first `init` makes a random one, prints it once on standard output
/// (what `docker compose logs` shows), and stores only its hash; `admin` is not it.
#[test]
#[cfg_attr(not(feature = "system-tests"), ignore = "needs the daemon users")]
fn init_prints_the_admin_password_once() {
    let dir = tempdir();
    let d = dir.path();
    let stdout = ok(&["init"], init(d));
    let pw = printed_admin_password(&stdout).unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        pw.len() >= 20 && pw.chars().all(|c| c.is_ascii_alphanumeric()),
        "{stdout}"
    );
    assert!(stdout.contains("shown once"), "{stdout}");
    let hash = admin_hash(d);
    assert!(!hash.contains(pw));
    assert!(mailserver::password::verify(pw, &hash));
    assert!(!mailserver::password::verify("admin", &hash));
    let again = ok(&["init"], init(d));
    assert_eq!(
        printed_admin_password(&again),
        None,
        "printed twice: {again}"
    );

    // ADMIN_PASSWORD_FILE instead: that password, and nothing secret printed.
    let dir = tempdir();
    let d = dir.path();
    let secret = d.join("admin_password");
    fs::write(&secret, "from-a-docker-secret-Wx4q\n").unwrap();
    let mut cmd = command(d, &["init"]);
    cmd.envs(INIT_ENV.iter().copied())
        .env("ADMIN_PASSWORD_FILE", &secret);
    let stdout = ok(&["init"], run(cmd, None));
    assert_eq!(printed_admin_password(&stdout), None, "{stdout}");
    assert!(stdout.contains("ADMIN_PASSWORD_FILE"), "{stdout}");
    assert!(mailserver::password::verify(
        "from-a-docker-secret-Wx4q",
        &admin_hash(d)
    ));
}
