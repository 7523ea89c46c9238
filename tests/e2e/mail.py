"""Small mail-client helpers shared by the end-to-end tests (real SMTP, IMAP and POP3 over TLS)."""

import email
import email.message
import email.policy
import imaplib
import poplib
import smtplib
import time
import uuid


def message(sender, to, subject, body="hello\n", html=None, size=0):
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = "<%s@example.test>" % uuid.uuid4().hex
    msg["Date"] = email.utils.formatdate()
    msg.set_content(body + ("x" * 76 + "\n") * (size // 77))
    if html:
        msg.add_alternative(html, subtype="html")
    return msg


def submit(stack, user, password, msg, port="submission"):
    """Authenticated submission: STARTTLS on 587, implicit TLS on 465."""
    if port == "smtps":
        s = smtplib.SMTP_SSL("127.0.0.1", stack.port("smtps"), context=stack.tls(), timeout=30)
    else:
        s = smtplib.SMTP("127.0.0.1", stack.port("submission"), timeout=30)
        s.starttls(context=stack.tls())
    with s:
        s.login(user, password)
        s.send_message(msg)


def inbound(stack, msg, sender=None, rcpts=None):
    """Mail from 'the internet': port 25 from 127.0.0.2, which is not in mynetworks."""
    with smtplib.SMTP("127.0.0.1", stack.port("smtp"), source_address=("127.0.0.2", 0), timeout=30) as s:
        s.send_message(msg, from_addr=sender, to_addrs=rcpts)


def imap_fetch(stack, user, password, subject, mode="imaps", timeout=15):
    """Returns the raw message with `subject` from user's INBOX, waiting for delivery."""
    deadline = time.time() + timeout
    while True:
        if mode == "imaps":
            m = imaplib.IMAP4_SSL("127.0.0.1", stack.port("imaps"), ssl_context=stack.tls())
        else:
            m = imaplib.IMAP4("127.0.0.1", stack.port("imap"))
            m.starttls(ssl_context=stack.tls())
        try:
            m.login(user, password)
            m.select("INBOX")
            typ, ids = m.search(None, "SUBJECT", '"%s"' % subject)
            if ids[0]:
                typ, data = m.fetch(ids[0].split()[-1], "(RFC822)")
                return data[0][1]
        finally:
            try:
                m.logout()
            except Exception:
                pass
        if time.time() > deadline:
            raise AssertionError("%s not in %s's INBOX after %ss" % (subject, user, timeout))
        time.sleep(0.1)


def imap_subjects(stack, user, password):
    m = imaplib.IMAP4_SSL("127.0.0.1", stack.port("imaps"), ssl_context=stack.tls())
    try:
        m.login(user, password)
        m.select("INBOX")
        typ, ids = m.search(None, "ALL")
        out = []
        for i in ids[0].split():
            typ, data = m.fetch(i, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            out.append(email.message_from_bytes(data[0][1])["Subject"])
        return out
    finally:
        m.logout()


def pop3_subjects(stack, user, password, mode="pop3s"):
    if mode == "pop3s":
        p = poplib.POP3_SSL("127.0.0.1", stack.port("pop3s"), context=stack.tls(), timeout=30)
    else:
        p = poplib.POP3("127.0.0.1", stack.port("pop3"), timeout=30)
        p.stls(context=stack.tls())
    try:
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        subjects = []
        for i in range(1, count + 1):
            _, lines, _ = p.top(i, 0)
            subjects.append(email.message_from_bytes(b"\r\n".join(lines))["Subject"])
        return subjects
    finally:
        p.quit()


def dkim_records(stack, domain):
    """{name.: TXT bytes} for the DKIM record `mailserver dns` prints, as a DNS stub for dkimpy."""
    out = stack.cli("dns", domain).stdout
    records = {}
    for line in out.splitlines():
        name, ttl, cls, kind, value = line.split("\t", 4)
        if "._domainkey." in name:
            parts = value.split('" "')
            records[name] = "".join(p.strip('"') for p in parts).encode()
    assert records, "no DKIM record in `mailserver dns %s`:\n%s" % (domain, out)
    return records


def dkim_verify(raw, records):
    import dkim

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        if not name.endswith("."):
            name += "."
        return records.get(name)

    return dkim.verify(raw, dnsfunc=dnsfunc)
