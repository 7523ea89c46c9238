"""The dashboard and the pixel endpoint, from outside: HTTPS on the web port, the login and its
limiter attacked as an outsider would (from two loopback addresses), sessions, opens recorded."""

import base64
import concurrent.futures
import http.client
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request

import pytest

from test_tracking import PIXEL, build, send_raw, tag, tracked  # noqa: F401 (tracked is a fixture)

ATTACKER = "127.0.0.1"
ADMIN_ELSEWHERE = "127.0.0.2"
COOKIE = "__Host-ms_session"


def get(stack, path, auth=None, headers=None):
    req = urllib.request.Request("https://127.0.0.1:%d%s" % (stack.port("web"), path), headers=headers or {})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, context=stack.tls(), timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def request(stack, method, path, auth=None, cookie=None, body=None, source=ATTACKER):
    """One HTTPS request to the dashboard from the loopback address `source`: (status, headers, body)."""
    conn = http.client.HTTPSConnection("127.0.0.1", stack.port("web"), context=stack.tls(), timeout=30,
                                       source_address=(source, 0))
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode()
    if cookie:
        headers["Cookie"] = "%s=%s" % (COOKIE, cookie)
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def session_of(headers):
    """The session id a response sets, or None."""
    for value in headers.get_all("Set-Cookie") or []:
        m = re.match(r"%s=([^;]+);" % re.escape(COOKIE), value)
        if m:
            return m.group(1)
    return None


def admin(stack):
    return ("admin", stack.admin_password)


def test_the_dashboard_answers_over_https_and_admin_admin_does_not_log_in(stack):
    status, headers, body = get(stack, "/", auth=admin(stack))
    assert status == 200, (status, body[:300])
    text = body.decode()
    for daemon in ("Postfix", "Dovecot", "OpenDKIM", "Tracking milter"):
        assert re.search(r"<td>%s</td>\s*<td><span class=\"status-up\">up</span>" % daemon, text), daemon
    assert headers["Strict-Transport-Security"]
    assert headers["Cache-Control"] == "no-store"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=") and "Max-Age" not in cookie and "Expires" not in cookie, cookie
    for attr in ("Path=/", "Secure", "HttpOnly", "SameSite=Strict"):
        assert attr in cookie.split("; "), cookie
    # There is no default password: admin/admin is refused like any wrong password.
    for wrong in ("admin", "wrong"):
        status, headers, _ = request(stack, "GET", "/", auth=("admin", wrong), source=ADMIN_ELSEWHERE)
        assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Basic"), status


def burst(stack, n, source):
    """`n` wrong passwords for admin from `source`, sent at the same moment: their status codes."""
    start = threading.Barrier(n)

    def attempt(i):
        start.wait()
        return request(stack, "GET", "/", auth=("admin", "wrong-%d" % i), source=source)[0]

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(attempt, range(n)))


# Native only: behind Docker's port publishing every client reaches the container from the same
# gateway address, so "another address" cannot be made from this machine.
@pytest.mark.native_only
def test_a_burst_cannot_lock_the_admin_out_and_reset_password_clears_it(stack):
    """The issue's attacks on the login, against the running dashboard: 100 concurrent wrong
    passwords from one address get at most 10 checks (401) and 429 for the rest; the address is then
    locked out, but the right password from another address logs in; `mailserver admin
    reset-password` lifts the lockout and ends the session that was started."""
    try:
        started = time.monotonic()
        statuses = burst(stack, 100, ATTACKER)
        took = time.monotonic() - started
        checked, refused = statuses.count(401), statuses.count(429)
        print("burst of 100 from %s: %d x 401 (checked), %d x 429, in %.2f s" % (ATTACKER, checked, refused, took))
        assert checked <= 10 and checked + refused == 100, statuses
        # One by one until the attacker's address is locked out (a few more checks at most).
        for _ in range(10):
            status, headers, _ = request(stack, "GET", "/", auth=("admin", "still-wrong"), source=ATTACKER)
            if status == 429:
                break
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 900, status
        # Locked: even the right password is not checked from there...
        status, headers, _ = request(stack, "GET", "/", auth=admin(stack), source=ATTACKER)
        assert status == 429 and int(headers["Retry-After"]) >= 1
        # ...but the admin at another address logs in.
        status, headers, body = request(stack, "GET", "/", auth=admin(stack), source=ADMIN_ELSEWHERE)
        assert status == 200, (status, body[:300])
        session = session_of(headers)
        assert session and request(stack, "GET", "/", cookie=session, source=ADMIN_ELSEWHERE)[0] == 200
    finally:
        r = stack.cli("admin", "reset-password")
        stack.admin_password = r.stdout.strip()
    # At least the session started above (earlier tests may have left theirs); the address and the
    # address + admin keys.
    assert re.search(r"ended [1-9]\d* dashboard session\(s\) and lifted 2 login lockout\(s\)", r.stderr), r.stderr
    # The lockout is gone (the new password works from the attacker's address at once), and the
    # session started before the reset no longer does.
    assert request(stack, "GET", "/", auth=admin(stack), source=ATTACKER)[0] == 200
    assert request(stack, "GET", "/", cookie=session, source=ADMIN_ELSEWHERE)[0] == 401


def test_logout_ends_the_session(stack):
    status, headers, body = request(stack, "GET", "/settings", auth=admin(stack), source=ADMIN_ELSEWHERE)
    assert status == 200
    session = session_of(headers)
    csrf = re.search(r'name="_csrf" value="([^"]+)"', body.decode()).group(1)
    assert 'action="/logout"' in body.decode()
    # Without the token: refused, and the session lives on.
    status, _, _ = request(stack, "POST", "/logout", cookie=session, body="_csrf=forged", source=ADMIN_ELSEWHERE)
    assert status == 403
    assert request(stack, "GET", "/", cookie=session, source=ADMIN_ELSEWHERE)[0] == 200
    status, headers, _ = request(stack, "POST", "/logout", cookie=session, body="_csrf=" + csrf,
                                 source=ADMIN_ELSEWHERE)
    assert status == 303 and headers["Location"] == "/logged-out"
    assert request(stack, "GET", "/", cookie=session, source=ADMIN_ELSEWHERE)[0] == 401
    status, headers, body = request(stack, "GET", "/logged-out", source=ADMIN_ELSEWHERE)
    assert status == 200 and b"logged out" in body and headers["Cache-Control"] == "no-store"


def opens(stack, tracking_id):
    db = sqlite3.connect("file:%s?mode=ro" % (stack.data_dir / "tracking" / "tracking.db"), uri=True)
    try:
        return db.execute("SELECT user_agent FROM pixel_opens WHERE tracking_id = ?", (tracking_id,)).fetchall()
    finally:
        db.close()


def test_the_pixel_records_an_open(stack, capture, tracked):  # noqa: F811
    subject = tag("opened")
    send_raw(stack, "alice@example.test", "alice-pw-Vq9xLm2rTz7k", build("html", tracked, "someone@outside.test", subject),
             tracked, ["someone@outside.test"])
    _, _, out = capture.wait_for(lambda m: subject.encode() in m[2])
    (tracking_id,) = PIXEL.findall(out)
    tracking_id = tracking_id.decode()
    status, headers, gif = get(stack, "/pixel?id=" + tracking_id, headers={"User-Agent": "e2e-reader/1.0"})
    assert status == 200 and headers["Content-Type"] == "image/gif" and len(gif) == 43
    assert "no-store" in headers["Cache-Control"]
    deadline = time.monotonic() + 10
    while not opens(stack, tracking_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert opens(stack, tracking_id) == [("e2e-reader/1.0",)]
    # An unknown id gets the same answer and records nothing.
    status, _, same = get(stack, "/pixel?id=" + "A" * 22)
    assert status == 200 and same == gif
