"""The tracking milter through the real Postfix: pixel before OpenDKIM, recorded, fail-open."""

import base64
import email
import email.policy
import quopri
import re
import sqlite3
import time
import uuid

import pytest

from mail import dkim_records, dkim_verify, imap_fetch, imap_subjects, inbound, submit

PIXEL = re.compile(rb'<img src="https://mx\.example\.test/pixel\?id=([A-Za-z0-9_-]{22})"')


@pytest.fixture(scope="module")
def tracked(stack):
    stack.cli("alias", "add", "news@example.test", "alice@example.test", "--tracking")
    yield "news@example.test"
    stack.cli("alias", "remove", "news@example.test")


def tag(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


def html_doc(text):
    return "<html><head><title>t</title></head><body><p>%s</p>\n<p>%s</p></body></html>\n" % (text, "caf\u00e9 " * 40)


def build(kind, sender, to, subject):
    """A raw message (CRLF) of the given shape, built by hand so the encodings are exactly as named."""
    html = html_doc(subject)
    head = "From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.test>\r\nMIME-Version: 1.0\r\n" % (
        sender, to, subject, uuid.uuid4().hex)
    if kind == "html":
        return (head + "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                + html.replace("\n", "\r\n")).encode()
    if kind == "qp":
        body = quopri.encodestring(html.encode(), quotetabs=False).decode().replace("\n", "\r\n")
        return (head + "Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n"
                "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain text\r\n"
                "--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                + body + "\r\n--b1--\r\n").encode()
    if kind == "base64":
        body = base64.encodebytes(html.encode()).decode().replace("\n", "\r\n")
        return (head + "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + body).encode()
    if kind == "related":
        img = base64.encodebytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256))).decode().replace("\n", "\r\n")
        return (head + "Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n"
                "--m\r\nContent-Type: multipart/related; boundary=\"r\"\r\n\r\n"
                "--r\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                + html.replace("\n", "\r\n").replace("<body>", '<body><img src="cid:logo">') +
                "\r\n--r\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + img + "--r--\r\n"
                "--m\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--m--\r\n").encode()
    raise ValueError(kind)


def send_raw(stack, user, password, raw, sender, rcpts):
    import smtplib
    with smtplib.SMTP("127.0.0.1", stack.port("submission"), timeout=30) as s:
        s.starttls(context=stack.tls())
        s.login(user, password)
        s.sendmail(sender, rcpts, raw)


def html_parts(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return [p.get_content() for p in msg.walk() if p.get_content_type() == "text/html"
            and not p.is_attachment()]


def tracked_row(stack, tracking_id):
    db = sqlite3.connect("file:%s?mode=ro" % (stack.data_dir / "tracking" / "tracking.db"), uri=True)
    try:
        return db.execute("SELECT sender, recipients, subject, alias_id FROM tracked_messages WHERE tracking_id = ?",
                          (tracking_id,)).fetchone()
    finally:
        db.close()


@pytest.mark.parametrize("kind", ["html", "qp", "base64", "related"])
def test_tracked_alias_gets_a_pixel_that_dkim_covers(stack, capture, tracked, kind):
    subject = tag("track-" + kind)
    raw = build(kind, tracked, "someone@outside.test", subject)
    send_raw(stack, "alice@example.test", "alice-pw-Vq9xLm2rTz7k", raw, tracked, ["someone@outside.test", "other@outside.test"])
    _, rcpts, out = capture.wait_for(lambda m: subject.encode() in m[2])
    htmls = html_parts(out)
    assert len(htmls) == 1
    ids = PIXEL.findall(htmls[0].encode())
    assert len(ids) == 1, htmls[0]
    assert htmls[0].index("pixel?id=") < htmls[0].index("</body>")
    assert dkim_verify(out, dkim_records(stack, "example.test")), "the signature must cover the pixel"
    row = tracked_row(stack, ids[0].decode())
    assert row is not None, "no tracked_messages row"
    assert row[0] == tracked and row[2] == subject
    assert sorted(row[1].split(",")) == ["other@outside.test", "someone@outside.test"]
    # Only the HTML part changed: the text and attachment parts are byte-identical.
    if kind == "related":
        assert b"JVBERi0xLjQK" in out and b"cid:logo" in out


def test_mail_from_the_internet_is_never_touched(stack, tracked):
    """Mail from the internet claiming a tracked alias as its sender never gets a pixel: Postfix now
    refuses it at RCPT (our domains are not for outsiders to use), so it never reaches the milter,
    whose own rule (no pixel without a login or local submission) is tested in milter/tests."""
    subject = tag("inbound-tracked-sender")
    raw = build("html", tracked, "alice@example.test", subject)
    import smtplib
    with smtplib.SMTP("127.0.0.1", stack.port("smtp"), source_address=("127.0.0.2", 0), timeout=30) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            s.sendmail(tracked, ["alice@example.test"], raw)
    assert "5.7.1" in str(refused.value), refused.value
    time.sleep(0.5)
    assert subject not in imap_subjects(stack, "alice@example.test", "alice-pw-Vq9xLm2rTz7k")


def test_untracked_alias_is_not_touched(stack, capture):
    subject = tag("untracked")
    raw = build("html", "info@example.test", "someone@outside.test", subject)
    send_raw(stack, "bob@example.test", "bob-pw-Vq9xLm2rTz7k", raw, "info@example.test", ["someone@outside.test"])
    _, _, out = capture.wait_for(lambda m: subject.encode() in m[2])
    assert b"/pixel?id=" not in out


def test_local_submission_is_tracked(stack, capture, tracked):
    subject = tag("local")
    raw = build("html", tracked, "someone@outside.test", subject)
    stack.sendmail(["-f", tracked, "-i", "someone@outside.test"], raw)
    _, _, out = capture.wait_for(lambda m: subject.encode() in m[2], timeout=30)
    assert len(PIXEL.findall(html_parts(out)[0].encode())) == 1
    assert dkim_verify(out, dkim_records(stack, "example.test"))


def test_with_the_milter_stopped_mail_still_flows_untracked(stack, capture, tracked):
    stack.supervisorctl("stop", "milter")
    try:
        subject = tag("milter-down")
        raw = build("qp", tracked, "someone@outside.test", subject)
        send_raw(stack, "alice@example.test", "alice-pw-Vq9xLm2rTz7k", raw, tracked, ["someone@outside.test"])
        _, _, out = capture.wait_for(lambda m: subject.encode() in m[2])
        assert b"/pixel?id=" not in out
        assert dkim_verify(out, dkim_records(stack, "example.test"))
    finally:
        stack.supervisorctl("start", "milter")
