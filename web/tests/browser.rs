//! The dashboard in a real headless Chromium (Debian's chromium + chromium-driver, over WebDriver),
//! against the real native stack (`scripts/stack.sh`): log in, add a domain, read its DNS records, add
//! an account (which must log in over IMAP within a second) and a tracked alias, enable 2FA with a code
//! computed from the secret the page shows, and log in again with password+code. The logout button
//! is clicked too: afterwards neither the old cookie nor the browser's cached password gets in. A
//! screenshot of every page goes to `test-output/browser/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

const PORTBASE: u16 = 23000;
/// The admin's password, given to `init` through `ADMIN_PASSWORD_FILE` (URL-safe: it goes into
/// `https://admin:PASSWORD@…` URLs).
const ADMIN_PASSWORD: &str = "browser-test-admin-pw-Wx4q";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A running native stack, stopped on drop.
struct Stack {
    dir: tempfile::TempDir,
    web: u16,
    imaps: u16,
}

impl Stack {
    fn up() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("br")
            .tempdir_in("/tmp")
            .unwrap();
        let secret = tempfile::NamedTempFile::new_in("/tmp").unwrap();
        std::fs::write(secret.path(), format!("{ADMIN_PASSWORD}\n")).unwrap();
        let out = Command::new(root().join("scripts/stack.sh"))
            .args(["up", dir.path().to_str().unwrap(), &PORTBASE.to_string()])
            .env_remove("RELAYHOST")
            .env("ADMIN_PASSWORD_FILE", secret.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stack.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let port = |name: &str| -> u16 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
                .parse()
                .unwrap()
        };
        Self {
            web: port("WEB_PORT"),
            imaps: port("IMAPS_PORT"),
            dir,
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let logs = root().join("test-output/browser-stack");
        let _ = std::fs::create_dir_all(&logs);
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("log")) {
            for e in entries.flatten() {
                let _ = std::fs::copy(e.path(), logs.join(e.file_name()));
            }
        }
        let _ = Command::new(root().join("scripts/stack.sh"))
            .args(["down", self.dir.path().to_str().unwrap()])
            .stdin(Stdio::null())
            .output();
    }
}

/// chromedriver, killed on drop.
struct Driver(Child, u16);

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver) is required");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(child, port)
    }

    async fn browser(&self) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let caps = serde_json::json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--no-first-run", "--disable-background-networking"]
            }
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.1))
            .await
            .expect("WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn shot(c: &Client, name: &str) {
    let dir = root().join("test-output/browser");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn body_text(c: &Client) -> String {
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn submit_form(c: &Client, action: &str, fields: &[(&str, &str)]) {
    let form = c
        .form(Locator::Css(&format!("form[action='{action}']")))
        .await
        .unwrap();
    for (name, value) in fields {
        form.set_by_name(name, value).await.unwrap();
    }
    submit_and_wait(c, &form).await;
}

/// Submits `form` and returns once the browser has left the page it was on. Reading the page right
/// after `submit()` may otherwise still see the old document, whose elements then go stale
/// mid-read (StaleElementReference, seen in CI).
async fn submit_and_wait(c: &Client, form: &fantoccini::elements::Form) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    form.submit().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.tag_name().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the form's answer did not load within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn imap_login(cert: &Path, port: u16, user: &str, password: &str) -> bool {
    let script = "import imaplib,ssl,sys\n\
                  c=ssl.create_default_context(cafile=sys.argv[1])\n\
                  m=imaplib.IMAP4_SSL('127.0.0.1',int(sys.argv[2]),ssl_context=c)\n\
                  m.login(sys.argv[3],sys.argv[4]); m.logout()";
    Command::new("python3")
        .args([
            "-c",
            script,
            cert.to_str().unwrap(),
            &port.to_string(),
            user,
            password,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The status of `GET /` on the stack's dashboard with only the session cookie `session` (curl: no
/// cached password, nothing but the cookie).
fn status_with_cookie(stack: &Stack, session: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Cookie: {}={session}", mailserver_web::login::COOKIE),
            &format!("https://127.0.0.1:{}/", stack.web),
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Clicks the logout button in the page header: the browser lands on the logged-out page, the old
/// session cookie no longer opens the dashboard, and going back to the dashboard does not log in
/// again by itself with the password the browser cached.
async fn log_out_and_check(c: &Client, stack: &Stack) {
    let session = c
        .get_named_cookie(mailserver_web::login::COOKIE)
        .await
        .expect("a session cookie after the login")
        .value()
        .to_string();
    assert_eq!(status_with_cookie(stack, &session), "200");
    let button = c
        .find(Locator::Css("header form.logout button[type='submit']"))
        .await
        .unwrap();
    assert_eq!(button.text().await.unwrap(), "Log out");
    let old = c.find(Locator::Css("html")).await.unwrap();
    button.click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.tag_name().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the logout did not load within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c.current_url().await.unwrap().path() == "/logged-out");
    assert!(c.title().await.unwrap().starts_with("Logged out"));
    shot(c, "01b-logged-out").await;
    assert_eq!(
        status_with_cookie(stack, &session),
        "401",
        "the old session cookie still opens the dashboard"
    );
    // The browser still holds the password from the login URL and sends it unasked: refused once.
    c.goto(&format!("https://127.0.0.1:{}/", stack.web))
        .await
        .unwrap();
    let title = c.title().await.unwrap();
    shot(c, "01c-after-logout").await;
    assert!(
        !title.starts_with("Overview"),
        "the browser logged back in by itself after the logout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let stack = Stack::up();
    let driver = Driver::start();
    let base = format!("https://127.0.0.1:{}", stack.web);
    let c = driver.browser().await;

    // Log in (HTTP Basic; the browser sends the credentials from the URL), then the session cookie.
    let login_url = format!("https://admin:{ADMIN_PASSWORD}@127.0.0.1:{}/", stack.web);
    c.goto(&login_url).await.unwrap();
    assert!(c.title().await.unwrap().starts_with("Overview"));
    shot(&c, "01-overview").await;

    log_out_and_check(&c, &stack).await;
    // The password typed again logs in.
    c.goto(&login_url).await.unwrap();
    assert!(
        c.title().await.unwrap().starts_with("Overview"),
        "logging in again after the logout failed"
    );

    c.goto(&format!("{base}/domains")).await.unwrap();
    submit_form(&c, "/domains", &[("domain", "example.test")]).await;
    assert!(body_text(&c).await.contains("example.test"));
    shot(&c, "02-domains").await;

    c.goto(&format!("{base}/domains/example.test/dns"))
        .await
        .unwrap();
    let dns = body_text(&c).await;
    for needle in [
        "MX",
        "v=spf1",
        "mail._domainkey.example.test",
        "v=DKIM1",
        "_dmarc.example.test",
    ] {
        assert!(dns.contains(needle), "DNS page lacks {needle}");
    }
    shot(&c, "03-dns").await;

    c.goto(&format!("{base}/accounts")).await.unwrap();
    submit_form(
        &c,
        "/accounts",
        &[
            ("local", "alice"),
            ("domain", "example.test"),
            ("password", "alice-secret-pw-Vq9xLm"),
            ("name", "Alice"),
            ("quota", "100"),
        ],
    )
    .await;
    let submitted = Instant::now();
    let cert = stack.dir.path().join("ssl/cert.pem");
    while !imap_login(
        &cert,
        stack.imaps,
        "alice@example.test",
        "alice-secret-pw-Vq9xLm",
    ) {
        assert!(
            submitted.elapsed() < Duration::from_secs(1),
            "the new account could not log in over IMAP within 1 s"
        );
    }
    println!(
        "account created in the browser logged in over IMAP after {:?}",
        submitted.elapsed()
    );
    assert!(body_text(&c).await.contains("alice@example.test"));
    shot(&c, "04-accounts").await;

    c.goto(&format!("{base}/aliases")).await.unwrap();
    let form = c
        .form(Locator::Css("form[action='/aliases']"))
        .await
        .unwrap();
    form.set_by_name("source", "news@example.test")
        .await
        .unwrap();
    form.set_by_name("destination", "alice@example.test")
        .await
        .unwrap();
    c.find(Locator::Css(
        "form[action='/aliases'] input[name='tracking']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    submit_and_wait(&c, &form).await;
    let aliases = body_text(&c).await;
    assert!(aliases.contains("news@example.test"));
    shot(&c, "05-aliases").await;

    c.goto(&format!("{base}/tracking")).await.unwrap();
    shot(&c, "06-tracking").await;

    // 2FA: set up, read the secret from the page, confirm with a computed code.
    c.goto(&format!("{base}/settings")).await.unwrap();
    shot(&c, "07-settings").await;
    let start = c
        .form(Locator::Css("form[action='/settings/2fa/start']"))
        .await
        .unwrap();
    submit_and_wait(&c, &start).await;
    let secret = c
        .find(Locator::Id("totp-secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    shot(&c, "08-2fa-setup").await;
    let totp = mailserver_web::auth::totp(secret.trim()).expect("the page shows a valid secret");
    let code = totp.generate_current().to_string();
    submit_form(&c, "/settings/2fa/confirm", &[("code", &code)]).await;
    assert!(body_text(&c).await.contains("2FA is on"));
    shot(&c, "09-2fa-on").await;
    c.close().await.unwrap();

    // A fresh browser: the password alone is refused...
    let c = driver.browser().await;
    c.goto(&login_url).await.unwrap();
    let title = c.title().await.unwrap();
    shot(&c, "10-password-without-code").await;
    assert!(
        !title.starts_with("Overview"),
        "password without code must fail, got {title:?}"
    );
    c.close().await.unwrap();
    // ...password+code works (a code not used yet: wait for the next 30-second step).
    let next = totp.next_step_current();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    tokio::time::sleep(Duration::from_secs(next.saturating_sub(now) + 1)).await;
    let code = totp.generate_current().to_string();
    let c = driver.browser().await;
    c.goto(&format!(
        "https://admin:{ADMIN_PASSWORD}{code}@127.0.0.1:{}/",
        stack.web
    ))
    .await
    .unwrap();
    assert!(
        c.title().await.unwrap().starts_with("Overview"),
        "password+code must log in"
    );
    shot(&c, "11-login-with-2fa").await;
    c.close().await.unwrap();
}
