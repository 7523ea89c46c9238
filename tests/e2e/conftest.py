"""Fixtures for the end-to-end tests: a real native stack (scripts/stack.sh) and an SMTP capture server.

The stack runs Debian's Postfix, Dovecot and OpenDKIM plus our binaries on 127.0.0.1, from the same
templates the image ships. Outbound mail is relayed (RELAYHOST) to an in-process aiosmtpd server, so
tests can look at exactly what would have left the machine.
"""

import os
import pathlib
import shutil
import ssl
import subprocess
import tempfile
import threading
import time

import pytest
from aiosmtpd.controller import Controller

ROOT = pathlib.Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "stack.sh"
PORTBASE = int(os.environ.get("E2E_PORTBASE", "21000"))
CAPTURE_PORT = PORTBASE + 626


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
    controller = Controller(handler, hostname="127.0.0.1", port=CAPTURE_PORT, enable_SMTPUTF8=False)
    controller.start()
    yield handler
    controller.stop()


class Stack:
    def __init__(self, data_dir, env):
        self.data_dir = pathlib.Path(data_dir)
        self.ports = {k: int(v) for k, v in env.items() if k.endswith("_PORT")}
        self.up_seconds = float(env.get("UP_SECONDS", "0"))
        self.cert = str(self.data_dir / "ssl" / "cert.pem")

    def port(self, name):
        return self.ports[name.upper() + "_PORT"]

    def tls(self):
        ctx = ssl.create_default_context(cafile=self.cert)
        return ctx

    def cli(self, *args, input=None, check=True):
        binary = os.environ.get("BIN_DIR", str(ROOT / "target" / "release")) + "/mailserver"
        r = subprocess.run([binary, "--data", str(self.data_dir), *args], input=input, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError("mailserver %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr))
        return r


def stack_up(data_dir, portbase, relayhost=""):
    env = dict(os.environ, RELAYHOST=relayhost)
    r = subprocess.run([str(STACK), "up", str(data_dir), str(portbase)], capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("stack.sh up failed:\n%s\n%s" % (r.stdout, r.stderr))
    values = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    return Stack(values["DATA_DIR"], values)


def stack_down(data_dir):
    subprocess.run([str(STACK), "down", str(data_dir)], capture_output=True, text=True, timeout=120)


def keep_logs(data_dir, name):
    """Copies the stack's logs to test-output/ so a failed CI run can be read afterwards."""
    out = ROOT / "test-output" / name
    out.mkdir(parents=True, exist_ok=True)
    for f in (pathlib.Path(data_dir) / "log").glob("*"):
        shutil.copy(f, out / f.name)


@pytest.fixture(scope="session")
def stack(capture):
    data_dir = tempfile.mkdtemp(prefix="e2e", dir="/tmp")
    s = stack_up(data_dir, PORTBASE, relayhost="[127.0.0.1]:%d" % CAPTURE_PORT)
    try:
        # Provisioned after start-up on purpose: every change below must reach the running daemons.
        s.cli("domain", "add", "example.test")
        for user, pw, quota in [("alice", "alice-pw", "0"), ("bob", "bob-pw", "0"), ("carol", "carol-pw", "1")]:
            s.cli("account", "add", "%s@example.test" % user, "--password-stdin", "--quota", quota, input=pw + "\n")
        s.cli("alias", "add", "info@example.test", "bob@example.test,partner@outside.test")
        yield s
    finally:
        keep_logs(data_dir, "native-stack")
        stack_down(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
