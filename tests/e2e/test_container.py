"""The image and the running container (E2E_TARGET=container): what it contains, who runs what, that a
killed daemon comes back without losing mail, and that a restart keeps everything and regenerates nothing.

These run last: they kill daemons and recreate the container.
"""

import hashlib
import pathlib
import subprocess
import time

import pytest

from conftest import admin_password_in
from mail import imap_fetch, imap_subjects, inbound, message, submit
from test_dashboard import get
from test_mail_stack import tag

pytestmark = pytest.mark.container_only

IMAGE = "mailserver:latest"
FIGURES = pathlib.Path(__file__).resolve().parents[2] / "test-output" / "container-figures.txt"


def note(line):
    """Figures for the notes: scripts/docker-test.sh prints this file after the run."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as f:
        f.write(line + "\n")


@pytest.mark.parametrize("cmd", ["docker compose", "docker-compose"])
def test_both_compose_versions_accept_the_file(stack, cmd):
    r = stack.compose("config", cmd=cmd)
    for port in ("25", "587", "465", "143", "993", "110", "995", "8080"):
        assert "target: %s" % port in r.stdout or ":%s/tcp" % port in r.stdout or ":%s\"" % port in r.stdout, (port, r.stdout)
    assert "maildata" in r.stdout


def test_the_runtime_image_has_no_compilers(stack):
    probe = "for c in cc gcc g++ clang rustc cargo make as ld; do command -v $c; done; exit 0"
    r = subprocess.run(["docker", "run", "--rm", "--entrypoint", "/bin/sh", IMAGE, "-c", probe],
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "", "compilers in the runtime image: %s" % r.stdout
    size = int(subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", IMAGE],
                              capture_output=True, text=True, check=True).stdout)
    note("image %s: %.0f MB" % (IMAGE, size / 1e6))


def processes(stack):
    """(uid, args) of every process in the container, read with the host's ps (docker top)."""
    out = subprocess.run(["docker", "top", stack.container(), "-eo", "pid,uid,args"], capture_output=True, text=True,
                         check=True).stdout.splitlines()[1:]
    return [(int(line.split(None, 2)[1]), line.split(None, 2)[2]) for line in out]


def test_the_dashboard_and_the_milter_run_under_their_own_users(stack):
    procs = processes(stack)
    uid = {name: stack.exec("id", "-u", name).stdout.strip() for name in ("mailserver-web", "mailserver-milter")}
    web = [u for u, args in procs if "mailserver-web" in args]
    milter = [u for u, args in procs if "mailserver-milter" in args]
    assert web and milter, procs
    assert {str(u) for u in web} == {uid["mailserver-web"]} != {"0"}, (web, uid)
    assert {str(u) for u in milter} == {uid["mailserver-milter"]} != {"0"}, (milter, uid)
    as_root = [args for u, args in procs if u == 0]
    note("%d processes, %d as root: %s" % (len(procs), len(as_root), " | ".join(as_root)))


def pid_of(stack, daemon):
    files = {"postfix": "/data/spool/postfix/pid/master.pid", "dovecot": "/data/run/dovecot/master.pid",
             "opendkim": "/data/run/opendkim/opendkim.pid"}
    if daemon in files:
        r = stack.exec("cat", files[daemon], check=False)
    else:
        r = stack.supervisorctl("pid", daemon, check=False)
    text = r.stdout.strip()
    return int(text) if r.returncode == 0 and text.isdigit() else None


def send_until_accepted(stack, msg, timeout=60):
    """Inbound delivery the way a real MTA does it: on a refused connection or a 4xx, try again."""
    import smtplib
    deadline = time.monotonic() + timeout
    while True:
        try:
            inbound(stack, msg)
            return
        except (OSError, smtplib.SMTPException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize("daemon", ["dovecot", "postfix", "opendkim", "milter", "web"])
def test_a_killed_daemon_comes_back_and_no_mail_is_lost(stack, capture, daemon):
    old = pid_of(stack, daemon)
    assert old, "no pid for %s" % daemon
    t0 = time.monotonic()
    stack.exec("sh", "-c", "kill -KILL %d" % old)
    # Sent at once, while the daemon is down: Postfix queues what it cannot deliver yet.
    inbound_subject = tag("while-%s-down" % daemon)
    send_until_accepted(stack, message("stranger@outside.test", "alice@example.test", inbound_subject))
    while True:
        new = pid_of(stack, daemon)
        if new and new != old and stack.exec("healthcheck.sh", check=False).returncode == 0:
            break
        assert time.monotonic() - t0 < 20, "%s did not come back within 20 s" % daemon
        time.sleep(0.2)
    back = time.monotonic() - t0
    imap_fetch(stack, "alice@example.test", "alice-pw-Vq9xLm2rTz7k", inbound_subject, timeout=60)
    delivered = time.monotonic() - t0
    # And mail flows out again, signed.
    out_subject = tag("after-%s" % daemon)
    submit(stack, "alice@example.test", "alice-pw-Vq9xLm2rTz7k", message("alice@example.test", "someone@outside.test", out_subject))
    capture.wait_for(lambda m: out_subject.encode() in m[2], timeout=30)
    note("killed %s: back in %.1f s; mail sent while it was down delivered %.1f s after the kill"
         % (daemon, back, delivered))


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state(stack):
    """Everything a restart must keep: the data, the keys and the certificate."""
    return {
        "domains": stack.cli("domain", "list").stdout,
        "accounts": stack.cli("account", "list").stdout,
        "aliases": stack.cli("alias", "list").stdout,
        "dns": stack.cli("dns", "example.test").stdout,
        "dkim files": stack.exec("sh", "-c", "cd /data/dkim && find . -type f | sort | xargs sha256sum").stdout,
        "cert": sha256(stack.data_dir / "ssl" / "cert.pem"),
        "key": sha256(stack.data_dir / "ssl" / "key.pem"),
    }


def container_logs(stack):
    r = subprocess.run(["docker", "logs", stack.container()], capture_output=True, text=True, check=True)
    return r.stdout + r.stderr


def test_the_first_start_initialised_the_empty_volume(stack):
    logs = container_logs(stack)
    assert "made a self-signed certificate" in logs, logs[:2000]
    # The admin's random password is printed once, in `docker logs`; it logs in, admin/admin does not.
    password = admin_password_in(logs)
    assert password and len(password) >= 20, logs[:2000]
    assert "shown once" in logs
    assert get(stack, "/", auth=("admin", password))[0] == 200
    assert get(stack, "/", auth=("admin", "admin"))[0] == 401


def test_restarts_keep_everything_and_regenerate_nothing(stack):
    subject = tag("kept")
    inbound(stack, message("stranger@outside.test", "alice@example.test", subject))
    imap_fetch(stack, "alice@example.test", "alice-pw-Vq9xLm2rTz7k", subject)
    before = state(stack)
    first = stack.container()

    stack.compose("restart")
    stack.wait_healthy()
    assert state(stack) == before, "`compose restart` changed state"

    # down + up recreates the container on the same volume; `up` with the other Compose version.
    stack.compose("down")
    stack.compose("up", "-d", cmd="docker-compose")
    stack.wait_healthy()
    assert stack.container() != first, "the container was not recreated"
    assert state(stack) == before, "down + up changed state"
    logs = container_logs(stack)
    assert "made a self-signed certificate" not in logs, logs[:2000]
    assert admin_password_in(logs) is None and "dashboard admin" not in logs, logs[:2000]
    assert get(stack, "/", auth=("admin", stack.admin_password))[0] == 200, "the admin password changed"
    assert subject in imap_subjects(stack, "alice@example.test", "alice-pw-Vq9xLm2rTz7k"), "mail lost across down + up"
    # And the recreated container still takes mail.
    again = tag("after-recreate")
    inbound(stack, message("stranger@outside.test", "alice@example.test", again))
    imap_fetch(stack, "alice@example.test", "alice-pw-Vq9xLm2rTz7k", again)
