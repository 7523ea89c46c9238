"""The dashboard and the pixel endpoint, from outside: HTTPS on the web port, the default admin, opens recorded."""

import base64
import re
import sqlite3
import time
import urllib.error
import urllib.request

from test_tracking import PIXEL, build, send_raw, tag, tracked  # noqa: F401 (tracked is a fixture)


def get(stack, path, auth=None, headers=None):
    req = urllib.request.Request("https://127.0.0.1:%d%s" % (stack.port("web"), path), headers=headers or {})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, context=stack.tls(), timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_the_dashboard_answers_over_https_with_the_default_admin(stack):
    status, headers, body = get(stack, "/", auth=("admin", "admin"))
    assert status == 200, (status, body[:300])
    text = body.decode()
    # Every daemon is up, and the page warns that the default password is still in use.
    for daemon in ("Postfix", "Dovecot", "OpenDKIM", "Tracking milter"):
        assert re.search(r"<td>%s</td>\s*<td><span class=\"status-up\">up</span>" % daemon, text), daemon
    assert "still using the default password" in text
    assert headers["Strict-Transport-Security"]
    status, headers, _ = get(stack, "/", auth=("admin", "wrong"))
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Basic")


def opens(stack, tracking_id):
    db = sqlite3.connect("file:%s?mode=ro" % (stack.data_dir / "tracking" / "tracking.db"), uri=True)
    try:
        return db.execute("SELECT user_agent FROM pixel_opens WHERE tracking_id = ?", (tracking_id,)).fetchall()
    finally:
        db.close()


def test_the_pixel_records_an_open(stack, capture, tracked):  # noqa: F811
    subject = tag("opened")
    send_raw(stack, "alice@example.test", "alice-pw", build("html", tracked, "someone@outside.test", subject),
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
