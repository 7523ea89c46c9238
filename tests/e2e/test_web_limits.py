"""The public web listener under attack (issue 12, items 4 and 5), against the real mailserver-web:
slow and idle clients are dropped, bodies are bounded, many idle connections cost little, /pixel
records a bounded number of rows, and the retention purge deletes old tracking rows."""

import http.client
import pathlib
import secrets
import socket
import sqlite3
import ssl
import subprocess
import threading
import time

import pytest


def tracking_db(stack):
    """tracking.db: the tracking tables' own database."""
    return stack.data_dir / "tracking" / "tracking.db"


def sql(stack, query, args=()):
    db = sqlite3.connect(str(tracking_db(stack)), timeout=30)
    try:
        rows = db.execute(query, args).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


def new_tracked_message(stack, days_ago=0):
    """A tracked message as the milter records it; returns its id (22 base64url characters)."""
    tracking_id = secrets.token_urlsafe(16)
    sql(stack, "INSERT INTO tracked_messages (tracking_id, sender, recipients, subject, created_at) "
               "VALUES (?, 'news@example.test', 'r@outside.test', 'e2e', datetime('now', ?))",
        (tracking_id, "-%d days" % days_ago))
    return tracking_id


def open_rows(stack, tracking_id):
    return sql(stack, "SELECT count(*) FROM pixel_opens WHERE tracking_id = ?", (tracking_id,))[0][0]


def wait_rows(stack, tracking_id, want, timeout=15):
    """Waits for the writer thread (it commits in batches), then returns the count."""
    deadline = time.monotonic() + timeout
    n = open_rows(stack, tracking_id)
    while n < want and time.monotonic() < deadline:
        time.sleep(0.2)
        n = open_rows(stack, tracking_id)
    time.sleep(1)  # anything late would show now
    return open_rows(stack, tracking_id)


def https(stack, source="127.0.0.1"):
    return http.client.HTTPSConnection("127.0.0.1", stack.port("web"), context=stack.tls(), timeout=30,
                                       source_address=(source, 0))


def pixel(conn, tracking_id, user_agent):
    conn.request("GET", "/pixel?id=" + tracking_id, headers={"User-Agent": user_agent})
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200 and r.getheader("Content-Type") == "image/gif" and len(body) == 43
    return r


def test_2000_fetches_by_one_client_are_one_row(stack):
    tracking_id = new_tracked_message(stack)
    conn = https(stack)
    for _ in range(2000):
        pixel(conn, tracking_id, "e2e-same-reader/1.0")
    conn.close()
    assert wait_rows(stack, tracking_id, 1) == 1


@pytest.mark.native_only  # (behind Docker's port publishing every client has the same address)
def test_2000_clients_give_at_most_1000_rows(stack):
    tracking_id = new_tracked_message(stack)
    for i in range(2000):
        conn = https(stack, source="127.0.%d.%d" % (10 + i // 250, 1 + i % 250))
        pixel(conn, tracking_id, "e2e-reader/1.0")
        conn.close()
    assert wait_rows(stack, tracking_id, 1000) == 1000


def test_unknown_ids_record_nothing(stack):
    conn = https(stack)
    unknown = secrets.token_urlsafe(16)
    for i in range(500):
        pixel(conn, unknown, "e2e/%d" % i)
        pixel(conn, secrets.token_urlsafe(16), "e2e")
    conn.close()
    time.sleep(1)
    assert open_rows(stack, unknown) == 0


def tls_socket(stack):
    raw = socket.create_connection(("127.0.0.1", stack.port("web")), timeout=30)
    return stack.tls().wrap_socket(raw, server_hostname="localhost")


def closed_within(sock, seconds):
    """True when the server closes `sock` within `seconds` (reads and discards what it sends)."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return True
        except (socket.timeout, TimeoutError):
            return False
        except (ConnectionError, ssl.SSLError, OSError):
            return True


def test_a_client_sending_a_header_byte_every_5_seconds_is_dropped(stack):
    s = tls_socket(stack)
    started = time.monotonic()
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 40 + b"\r\n\r\n"
    dropped = False
    for b in head:
        try:
            s.sendall(bytes([b]))
        except OSError:
            dropped = True
            break
        if closed_within(s, 5):
            dropped = True
            break
        assert time.monotonic() - started < 60, "still connected after 60 s"
    elapsed = time.monotonic() - started
    s.close()
    assert dropped and elapsed < 20, "dropped=%s after %.1f s" % (dropped, elapsed)


def test_a_client_that_sends_nothing_is_dropped(stack):
    raw = socket.create_connection(("127.0.0.1", stack.port("web")), timeout=30)
    started = time.monotonic()
    assert closed_within(raw, 30)
    elapsed = time.monotonic() - started
    raw.close()
    assert elapsed < 10, "dropped after %.1f s" % elapsed


def test_a_body_over_64_kib_gets_413(stack):
    s = tls_socket(stack)
    s.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
              b"Content-Length: 1000000\r\nConnection: close\r\n\r\n")
    s.settimeout(10)
    head = s.recv(4096)
    s.close()
    assert head.startswith(b"HTTP/1.1 413"), head[:200]


def rss_kib(pid):
    for line in pathlib.Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def open_fds(pid):
    return len(list(pathlib.Path("/proc/%d/fd" % pid).iterdir()))


@pytest.mark.native_only  # (reads the process's memory and descriptors from /proc)
def test_many_idle_connections_cost_little_and_are_dropped(stack):
    cap = 512
    pid = int(stack.supervisorctl("pid", "web").stdout.strip())
    rss_before, fds_before = rss_kib(pid), open_fds(pid)
    # 800 idle TCP connections (beyond the cap) and 100 more that finish the TLS handshake and
    # then send nothing. Connections the kernel's backlog cannot take time out here, harmlessly.
    idle = []
    for _ in range(800):
        try:
            idle.append(socket.create_connection(("127.0.0.1", stack.port("web")), timeout=1))
        except OSError:
            pass
    handshaken = []

    def handshake():
        try:
            handshaken.append(tls_socket(stack))
        except OSError:
            pass

    threads = [threading.Thread(target=handshake) for _ in range(100)]
    for t in threads:
        t.start()
    # What the server holds meanwhile: descriptors (one per accepted connection) and memory.
    most_fds, most_rss = 0, 0
    for _ in range(20):
        most_fds, most_rss = max(most_fds, open_fds(pid)), max(most_rss, rss_kib(pid))
        time.sleep(0.1)
    # A normal request is answered meanwhile (after the idle ones ahead of it time out, at worst).
    started = time.monotonic()
    conn = https(stack)
    conn.request("GET", "/healthz")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"ok\n"
    conn.close()
    waited = time.monotonic() - started
    for t in threads:
        t.join(timeout=60)
    # The idle ones are dropped by the server: a sample of them reads EOF.
    sample = idle[:20] + handshaken[:20]
    dropped = sum(closed_within(s, 30) for s in sample)
    for s in idle + handshaken:
        s.close()
    print("\nmailserver-web with %d idle + %d handshaken connections: at most %d connections accepted "
          "(descriptors %d -> %d), RSS %d -> %d KiB; a normal request waited %.1f s"
          % (len(idle), len(handshaken), most_fds - fds_before, fds_before, most_fds, rss_before, most_rss,
             waited))
    assert len(idle) > cap
    assert most_fds - fds_before <= cap + 2, "%d connections accepted (cap %d)" % (most_fds - fds_before, cap)
    assert dropped == len(sample)
    assert most_rss - rss_before < 64 * 1024, "RSS grew by %d KiB" % (most_rss - rss_before)
    assert waited < 40


def test_the_retention_purge_deletes_old_rows(stack):
    old = new_tracked_message(stack, days_ago=200)
    recent = new_tracked_message(stack, days_ago=10)
    for tracking_id, days in [(old, 199), (old, 199), (old, 3), (recent, 190), (recent, 9), (recent, 1)]:
        sql(stack, "INSERT INTO pixel_opens (tracking_id, client_ip, user_agent, opened_at) "
                   "VALUES (?, '192.0.2.1', 'e2e', datetime('now', ?))", (tracking_id, "-%d days" % days))
    out = stack.cli("tracking", "purge").stdout
    fields = dict(line.split("\t") for line in out.splitlines())
    # (The dashboard's own daily run may have come first, shortly after the stack started: then the
    # CLI finds less to do. What is left is what counts.)
    assert set(fields) == {"messages", "opens"} and all(v.isdigit() for v in fields.values()), out
    assert sql(stack, "SELECT count(*) FROM tracked_messages WHERE tracking_id = ?", (old,)) == [(0,)]
    assert open_rows(stack, old) == 0
    assert sql(stack, "SELECT count(*) FROM tracked_messages WHERE tracking_id = ?", (recent,)) == [(1,)]
    assert open_rows(stack, recent) == 2
    # Nothing old is left anywhere, so a second run deletes nothing.
    again = dict(line.split("\t") for line in stack.cli("tracking", "purge").stdout.splitlines())
    assert again == {"messages": "0", "opens": "0"}
