"""Privilege separation, tried as an attacker on the same machine would: as another local user.

Whoever can connect to a milter socket can have mail DKIM-signed (OpenDKIM) or hand the tracking
milter a made-up `{auth_authen}`. Each socket lives in a directory only its daemon and Postfix's group
may enter, so an unrelated user (`nobody`) is refused while Postfix's own user gets through.

Least privilege (issue 12, items 6 and 7), each as the attack itself, run as the daemon's own uid:
the milter's user reads tracking.db and nothing else of ours (not the main database with the admin
and account hashes, not a DKIM private key, not the TLS key); the dashboard's user reads no DKIM
private key (and finds none in the database); and a link the dashboard's user plants in the database
directory is not followed by root's `mailserver init`.
"""

import ast
import uuid

import pytest

from conftest import TARGET
from mail import message, submit

# Run as the given user: reports whether the socket accepts a connection, after checking that the
# user can reach the run directory itself (so a refusal comes from the socket's own directory, not
# from somewhere above it).
PROBE = r"""
import os, socket, sys
path = sys.argv[1]
run_dir = os.path.dirname(os.path.dirname(path))
try:
    os.listdir(run_dir)
except OSError as e:
    print("run-dir-unreachable", e)
    sys.exit(0)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(path)
    print("connected")
except PermissionError:
    print("refused")
finally:
    s.close()
"""


def socket_path(stack, name):
    base = "/data" if TARGET == "container" else str(stack.data_dir)
    return "%s/run/%s/%s.sock" % (base, name, name)


@pytest.mark.parametrize("name", ["milter", "opendkim"])
def test_only_postfix_can_reach_the_milter_sockets(stack, name):
    path = socket_path(stack, name)
    assert stack.run_as("postfix", "python3", "-c", PROBE, path).stdout.strip() == "connected"
    assert stack.run_as("nobody", "python3", "-c", PROBE, path).stdout.strip() == "refused"
    # And the socket itself is not world-writable either (owner and group only).
    mode = stack.run_as("root", "stat", "-c", "%a %G", path).stdout.split()
    assert mode[0] in ("660", "770") and mode[1] == "postfix", mode


def data(stack):
    return "/data" if TARGET == "container" else str(stack.data_dir)


# Run as the given user: prints "read N" with the bytes read from the file, or "denied ERRNO-NAME".
READ = r"""
import errno, sys
try:
    with open(sys.argv[1], "rb") as f:
        print("read", len(f.read()))
except OSError as e:
    print("denied", errno.errorcode.get(e.errno, e.errno))
"""

# Run as the given user: prints the rows of a query as repr(), or "denied" with SQLite's message.
QUERY = r"""
import sqlite3, sys
try:
    db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
    print(repr(db.execute(sys.argv[2]).fetchall()))
except sqlite3.Error as e:
    print("denied", e)
"""


def read_as(stack, user, path):
    return stack.run_as(user, "python3", "-c", READ, path).stdout.strip()


def query_as(stack, user, path, sql):
    return stack.run_as(user, "python3", "-c", QUERY, path, sql).stdout.strip()


def private_keys(stack):
    """Every DKIM private key file of the stack (listed as root)."""
    out = stack.run_as("root", "find", data(stack) + "/dkim", "-name", "*.private").stdout.split()
    assert out, "no DKIM key files: the stack signs nothing?"
    return out


def groups_of(stack, program):
    """The supplementary groups of a running daemon, from /proc (as root)."""
    pid = stack.supervisorctl("pid", program).stdout.strip()
    assert pid.isdigit() and pid != "0", pid
    status = stack.run_as("root", "cat", "/proc/%s/status" % pid).stdout
    line = next(l for l in status.splitlines() if l.startswith("Groups:"))
    return set(int(g) for g in line.split()[1:])


def test_the_daemons_run_with_their_groups(stack):
    # mailserver (5001) as a supplementary group; each its own primary group (5003, 5004).
    assert 5001 in groups_of(stack, "milter")
    assert 5001 in groups_of(stack, "web")
    assert 5003 not in groups_of(stack, "milter")


def test_the_milter_reads_tracking_db_and_nothing_else(stack):
    d = data(stack)
    for path in [d + "/db/mailserver.db", d + "/ssl/key.pem"] + private_keys(stack):
        assert read_as(stack, "mailserver-milter", path).startswith("denied"), path
    # Not even through SQLite: the admin's hash and the accounts' hashes stay out of reach.
    for sql in ["SELECT password_hash FROM admins", "SELECT password_hash FROM accounts"]:
        assert query_as(stack, "mailserver-milter", d + "/db/mailserver.db", sql).startswith("denied"), sql
    # What tracking needs is there: the tracked aliases and the pixel base URL apply rendered.
    rows = query_as(stack, "mailserver-milter", d + "/tracking/tracking.db",
                    "SELECT count(*) FROM tracked_messages")
    assert rows.startswith("[("), rows
    url = query_as(stack, "mailserver-milter", d + "/tracking/tracking.db",
                   "SELECT value FROM policy_settings WHERE key = 'PIXEL_BASE_URL'")
    assert url.startswith("[('https://"), url


def test_only_the_dashboard_can_ask_the_applier(stack):
    path = data(stack) + "/run/applier/applier.sock"
    assert stack.run_as("mailserver-web", "python3", "-c", PROBE, path).stdout.strip() == "connected"
    for user in ["mailserver-milter", "nobody"]:
        assert stack.run_as(user, "python3", "-c", PROBE, path).stdout.strip() == "refused", user


def test_the_dashboard_reads_no_dkim_private_key(stack):
    d = data(stack)
    for path in private_keys(stack):
        assert read_as(stack, "mailserver-web", path).startswith("denied"), path
    # The database it can read holds none either: the column is empty on every domain.
    rows = query_as(stack, "mailserver-web", d + "/db/mailserver.db",
                    "SELECT domain, dkim_private_key, dkim_public_key IS NOT NULL FROM domains")
    parsed = ast.literal_eval(rows)
    assert parsed, rows
    assert all(private is None for _, private, _ in parsed), rows
    assert all(has_public for _, _, has_public in parsed), rows
    # It serves TLS itself: the key is its group's to read.
    assert read_as(stack, "mailserver-web", d + "/ssl/key.pem").startswith("read"), d


def stat(stack, path):
    return stack.run_as("root", "stat", "-c", "%u:%g %a", path).stdout.strip()


def test_a_link_planted_in_the_database_directory_is_not_followed(stack, capture):
    d = data(stack)
    wal = d + "/db/mailserver.db-wal"
    victim = d + "/victim-" + uuid.uuid4().hex[:8]
    stack.run_as("root", "sh", "-c", "umask 077; echo secret > %s" % victim)
    before = stat(stack, victim)
    assert before == "0:0 600", before
    # With the dashboard and the applier stopped, nobody holds the main database open. The dashboard's
    # user (who may write the database and its directory) empties the -wal into the database, so no
    # change is lost, and replaces it with a link to a file of root's.
    stack.supervisorctl("stop", "web", "applier")
    try:
        stack.run_as("mailserver-web", "python3", "-c", CHECKPOINT, d + "/db/mailserver.db")
        stack.run_as("mailserver-web", "ln", "-sfn", victim, wal)
        assert stack.run_as("root", "readlink", wal).stdout.strip() == victim
        r = stack.cli("init", check=False)
        assert r.returncode != 0, "init followed or ignored a planted link:\n%s%s" % (r.stdout, r.stderr)
        assert "symbolic link" in r.stderr and "mailserver.db-wal" in r.stderr, r.stderr
        # The link's target is as it was: not chowned, not chmodded, not written.
        assert stat(stack, victim) == before
        assert stack.run_as("root", "cat", victim).stdout == "secret\n"
    finally:
        stack.run_as("root", "rm", "-f", wal, victim)
        stack.supervisorctl("start", "applier", "web")
    # Once the link is gone, init runs, and mail still flows (signed and relayed).
    stack.cli("init")
    subject = "after-plant-" + uuid.uuid4().hex[:8]
    submit(stack, "alice@example.test", "alice-pw-Vq9xLm2rTz7k", message("alice@example.test", "someone@outside.test", subject))
    _, _, raw = capture.wait_for(lambda m: subject.encode() in m[2])
    assert b"DKIM-Signature:" in raw


# Run as the dashboard's user: writes everything in the -wal into the database and empties it.
CHECKPOINT = r"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
assert busy == 0, "the database is still in use"
db.close()
"""


# Run as the dashboard's user: asks the applier for an apply, as the dashboard does after a change.
ASK_APPLY = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(60)
s.connect(sys.argv[1])
s.sendall(b"apply\n")
answer = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    answer += chunk
print(answer.decode().splitlines()[0])
"""

# Run as the dashboard's user: writes settings rows, as a compromised dashboard could.
WRITE_SETTINGS = r"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
with db:
    for pair in sys.argv[2:]:
        key, value = pair.split("=", 1)
        if value:
            db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))
        else:
            db.execute("DELETE FROM settings WHERE key = ?", (key,))
print("written")
"""


def test_the_dashboard_cannot_steer_what_root_runs(stack):
    """BIN_DIR and RELAYHOST written into the settings table by the dashboard's user reach neither
    supervisord.conf (the applier's own command line) nor main.cf (read by root's Postfix master)."""
    d = data(stack)
    main_cf = d + "/config/postfix/main.cf"
    supervisord = d + "/config/supervisord.conf"
    relayhost_before = [l for l in stack.run_as("root", "cat", main_cf).stdout.splitlines()
                        if l.startswith("relayhost =")]
    evil = ["BIN_DIR=/tmp/evil-bin", "RELAYHOST=evil.example:25"]
    assert stack.run_as("mailserver-web", "python3", "-c", WRITE_SETTINGS, d + "/db/mailserver.db",
                        *evil).stdout.strip() == "written"
    try:
        answer = stack.run_as("mailserver-web", "python3", "-c", ASK_APPLY,
                              d + "/run/applier/applier.sock").stdout.strip()
        assert answer == "ok", answer
        conf = stack.run_as("root", "cat", supervisord).stdout
        assert "/tmp/evil-bin" not in conf and "/mailserver --data" in conf, conf
        main = stack.run_as("root", "cat", main_cf).stdout
        assert "evil.example" not in main
        assert [l for l in main.splitlines() if l.startswith("relayhost =")] == relayhost_before
    finally:
        stack.run_as("mailserver-web", "python3", "-c", WRITE_SETTINGS, d + "/db/mailserver.db",
                     "BIN_DIR=", "RELAYHOST=")
