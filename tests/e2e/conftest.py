"""Fixtures for the end-to-end tests: the stack under test and an SMTP capture server.

The same tests run against two targets, chosen by E2E_TARGET:
- `native` (default): a real native stack started here with scripts/stack.sh: Debian's Postfix,
  Dovecot and OpenDKIM plus our binaries on 127.0.0.1, from the same templates the image ships.
- `container`: the image, already running under Compose (scripts/docker-test.sh starts it and sets
  E2E_COMPOSE, E2E_COMPOSE_PROJECT and E2E_ENV_FILE); the tests use its published ports and reach
  inside only through `docker exec`, as an administrator would.
Outbound mail is relayed (RELAYHOST) to an in-process aiosmtpd server, so tests can look at exactly
what would have left the machine. Tests marked `native_only` or `container_only` are deselected
(not skipped) on the other target; container-only tests restart the container, so they run last.
"""

import os
import pathlib
import re
import secrets
import shlex
import shutil
import ssl
import subprocess
import tempfile
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from localdns import DnsServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "stack.sh"
TARGET = os.environ.get("E2E_TARGET", "native")
PORTBASE = int(os.environ.get("E2E_PORTBASE", "21000"))
CAPTURE_HOST = os.environ.get("E2E_CAPTURE_HOST", "127.0.0.1")
CAPTURE_PORT = int(os.environ.get("E2E_CAPTURE_PORT", str(PORTBASE + 626)))
DNS_HOST = os.environ.get("E2E_DNS_HOST", "127.0.0.1")
DNS_PORT = int(os.environ.get("E2E_DNS_PORT", str(PORTBASE + 53)))
# What `mailserver init` prints when it makes the first admin's password (see src/main.rs).
ADMIN_PASSWORD_LINE = re.compile(r"admin password: (\S+)")


def admin_password_in(text):
    """The password `mailserver init` printed in `text` (its output, or `docker logs`), or None."""
    found = ADMIN_PASSWORD_LINE.findall(text)
    return found[-1] if found else None


def pytest_configure(config):
    config.addinivalue_line("markers", "native_only: concerns the native stack itself (scripts/stack.sh)")
    config.addinivalue_line("markers", "container_only: concerns the image and the running container")


def pytest_collection_modifyitems(config, items):
    other = {"native": "container_only", "container": "native_only"}[TARGET]
    keep = [i for i in items if not i.get_closest_marker(other)]
    dropped = [i for i in items if i.get_closest_marker(other)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    keep.sort(key=lambda i: i.get_closest_marker("container_only") is not None)
    items[:] = keep


class Capture:
    """Collects every message relayed to it."""

    def __init__(self):
        self.messages = []  # (mail_from, rcpt_tos, content bytes)
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 OK captured"

    def wait_for(self, predicate, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                for m in self.messages:
                    if predicate(m):
                        return m
            time.sleep(0.05)
        raise AssertionError("no captured message matched within %ss" % timeout)


@pytest.fixture(scope="session")
def capture():
    handler = Capture()
    controller = Controller(handler, hostname=CAPTURE_HOST, port=CAPTURE_PORT, enable_SMTPUTF8=False)
    controller.start()
    yield handler
    controller.stop()


@pytest.fixture(scope="session")
def dns():
    """The tests' DNS server (localdns.py): a resolver at `dns.address` (give it as DNS_RESOLVER)
    that answers from the zones the tests write with `dns.zone(...)`; its log (every query and reply)
    and zones are kept under test-output/dns/."""
    directory = tempfile.mkdtemp(prefix="e2e-dns", dir="/tmp")
    server = DnsServer(directory, DNS_PORT, DNS_HOST).start()
    try:
        yield server
    finally:
        server.stop()
        server.keep_logs(ROOT / "test-output" / "dns")
        shutil.rmtree(directory, ignore_errors=True)


class Stack:
    """What the tests need of a stack, whichever the target: ports, TLS, the CLI, the daemons."""

    def __init__(self, data_dir, ports):
        # The data directory as this machine sees it (for the container: its volume), read-only use:
        # logs and the database.
        self.data_dir = pathlib.Path(data_dir)
        self.ports = ports
        # The dashboard admin's password (there is no default one): set by the fixture.
        self.admin_password = None

    def port(self, name):
        return self.ports[name.upper() + "_PORT"]

    def tls(self):
        return ssl.create_default_context(cafile=str(self.data_dir / "ssl" / "cert.pem"))

    def reset_admin_password(self):
        """Gives the admin a new random password with the CLI (which also ends every session and
        lifts every login lockout) and returns it."""
        r = self.cli("admin", "reset-password")
        self.admin_password = r.stdout.strip()
        return self.admin_password

    def check(self, what, r, check):
        if check and r.returncode != 0:
            raise AssertionError("%s failed (%d): %s%s" % (what, r.returncode, r.stdout, r.stderr))
        return r


class NativeStack(Stack):
    def __init__(self, data_dir, env):
        super().__init__(data_dir, {k: int(v) for k, v in env.items() if k.endswith("_PORT")})
        self.up_seconds = float(env.get("UP_SECONDS", "0"))

    def cli(self, *args, input=None, check=True):
        binary = os.environ.get("BIN_DIR", str(ROOT / "target" / "release")) + "/mailserver"
        r = subprocess.run([binary, "--data", str(self.data_dir), *args], input=input, capture_output=True, text=True)
        return self.check("mailserver " + " ".join(args), r, check)

    def supervisorctl(self, *args, check=True):
        conf = str(self.data_dir / "config" / "supervisord.conf")
        r = subprocess.run(["supervisorctl", "-c", conf, *args], capture_output=True, text=True)
        return self.check("supervisorctl " + " ".join(args), r, check)

    def sendmail(self, args, raw):
        subprocess.run(["sendmail", "-C", str(self.data_dir / "config" / "postfix"), *args], input=raw,
                       check=True, timeout=30)

    def run_as(self, user, *args, check=True):
        """Runs a command on the stack's machine as `user` (with that user's groups)."""
        r = subprocess.run(["runuser", "-u", user, "--", *args], capture_output=True, text=True, timeout=60)
        return self.check("runuser -u %s %s" % (user, " ".join(args)), r, check)


class ContainerStack(Stack):
    """The Compose project scripts/docker-test.sh started; its container may be recreated by tests."""

    def __init__(self, compose, project, env_file):
        self.compose_cmd = shlex.split(compose)
        self.project = project
        self.env_file = env_file
        self.cid = None
        env = dict(line.split("=", 1) for line in pathlib.Path(env_file).read_text().splitlines()
                   if "=" in line and not line.startswith("#"))
        volume = "%s_maildata" % project
        mountpoint = subprocess.run(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", volume],
                                    capture_output=True, text=True, check=True).stdout.strip()
        super().__init__(mountpoint, {k: int(v) for k, v in env.items() if k.endswith("_PORT")})

    def compose(self, *args, check=True, timeout=600, cmd=None):
        """Runs Compose on the project: the suite's own (E2E_COMPOSE) or `cmd` ("docker-compose" for v1)."""
        base = shlex.split(cmd) if cmd else self.compose_cmd
        if args and args[0] in ("up", "down", "restart"):
            self.cid = None  # the container may be a new one afterwards
        r = subprocess.run([*base, "-p", self.project, "--env-file", self.env_file, *args],
                           cwd=str(ROOT), capture_output=True, text=True, timeout=timeout)
        return self.check(" ".join(base + list(args)), r, check)

    def container(self):
        if not self.cid:
            self.cid = self.compose("ps", "-q", "mailserver").stdout.strip()
            assert self.cid, "the mailserver container is not running"
        return self.cid

    def exec(self, *args, input=None, check=True, user=None):
        cmd = ["docker", "exec", "-i"] + (["-u", user] if user else []) + [self.container(), *args]
        r = subprocess.run(cmd, input=input, capture_output=True, text=not isinstance(input, bytes), timeout=120)
        return self.check("docker exec " + " ".join(args), r, check)

    def cli(self, *args, input=None, check=True):
        return self.exec("mailserver", *args, input=input, check=check)

    def supervisorctl(self, *args, check=True):
        return self.exec("supervisorctl", "-c", "/data/config/supervisord.conf", *args, check=check)

    def sendmail(self, args, raw):
        self.exec("sendmail", "-C", "/data/config/postfix", *args, input=raw)

    def run_as(self, user, *args, check=True):
        """Runs a command in the container as `user` (with that user's groups)."""
        return self.exec(*args, check=check, user=user)

    def wait_healthy(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", self.container()],
                               capture_output=True, text=True)
            if r.stdout.strip() == "healthy":
                return
            time.sleep(0.5)
        raise AssertionError("the container did not become healthy within %ss" % timeout)


def stack_up(data_dir, portbase, relayhost=""):
    """Starts a native stack; its first admin gets a random password through ADMIN_PASSWORD_FILE
    (as a Docker secret would give it), kept in `admin_password`."""
    password = "e2e-" + secrets.token_urlsafe(18)
    secret_dir = tempfile.mkdtemp(prefix="e2e-secret", dir="/tmp")
    secret = pathlib.Path(secret_dir) / "admin_password"
    secret.write_text(password + "\n")
    env = dict(os.environ, RELAYHOST=relayhost, ADMIN_PASSWORD_FILE=str(secret))
    try:
        r = subprocess.run([str(STACK), "up", str(data_dir), str(portbase)], capture_output=True, text=True, env=env,
                           timeout=600)
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)
    if r.returncode != 0:
        raise RuntimeError("stack.sh up failed:\n%s\n%s" % (r.stdout, r.stderr))
    values = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    s = NativeStack(values["DATA_DIR"], values)
    s.admin_password = password
    return s


def stack_down(data_dir):
    subprocess.run([str(STACK), "down", str(data_dir)], capture_output=True, text=True, timeout=120)


def keep_logs(data_dir, name):
    """Copies the stack's logs to test-output/ so a failed CI run can be read afterwards."""
    out = ROOT / "test-output" / name
    out.mkdir(parents=True, exist_ok=True)
    for f in (pathlib.Path(data_dir) / "log").glob("*"):
        shutil.copy(f, out / f.name)


def provision(s):
    # Provisioned after start-up on purpose: every change below must reach the running daemons.
    s.cli("domain", "add", "example.test")
    for user, pw, quota in [("alice", "alice-pw-Vq9xLm2rTz7k", "0"), ("bob", "bob-pw-Vq9xLm2rTz7k", "0"), ("carol", "carol-pw-Vq9xLm2rTz7k", "1")]:
        s.cli("account", "add", "%s@example.test" % user, "--password-stdin", "--quota", quota, input=pw + "\n")
    s.cli("alias", "add", "info@example.test", "bob@example.test,partner@outside.test")


@pytest.fixture(scope="session")
def stack(capture):
    if TARGET == "container":
        s = ContainerStack(os.environ["E2E_COMPOSE"], os.environ["E2E_COMPOSE_PROJECT"], os.environ["E2E_ENV_FILE"])
        # The password the first start printed (test_container checks it is there); a reused volume
        # printed none, so the CLI sets one.
        logs = subprocess.run(["docker", "logs", s.container()], capture_output=True, text=True)
        s.admin_password = admin_password_in(logs.stdout + logs.stderr) or s.reset_admin_password()
        try:
            provision(s)
            yield s
        finally:
            keep_logs(s.data_dir, "container-stack")
            logs = subprocess.run(["docker", "logs", s.container()], capture_output=True, text=True)
            (ROOT / "test-output" / "container-stack" / "docker-logs.txt").write_text(logs.stdout + logs.stderr)
        return
    data_dir = tempfile.mkdtemp(prefix="e2e", dir="/tmp")
    s = stack_up(data_dir, PORTBASE, relayhost="[127.0.0.1]:%d" % CAPTURE_PORT)
    try:
        provision(s)
        yield s
    finally:
        keep_logs(data_dir, "native-stack")
        stack_down(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
