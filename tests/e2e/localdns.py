"""The tests' own DNS: one unbound process on a loopback port, authoritative for the test zones and the
recursive resolver that rspamd, pebble and the doctor are pointed at (`DNS_RESOLVER=127.0.0.1:PORT`).

Why unbound, and why this shape: the daemons under test need a *resolver* address (they send queries
with RD set and expect CNAMEs chased), and the tests need to own every answer. unbound does both in
one process: each test zone is an `auth-zone` used "for upstream", so its own iterator answers from
the zone files (CNAMEs across test zones followed, wildcards, NXDOMAIN with the zone's SOA), and a
root zone of our own (`.` with nothing delegated) makes every other name NXDOMAIN at once. Nothing
ever leaves the machine, so no test depends on the internet.

A zone is written as a real zone file; changing one is `auth_zone_reload` plus a cache flush through
unbound-control on a unix socket (a few milliseconds, visible to the next query); adding or removing a
zone is a `reload` of the configuration (tens of milliseconds), after which we wait until the control
channel lists the zone with its new serial. Records default to a TTL of 1 s so clients' own caches
(rspamd, glibc) do not hide a change either.

All state lives in one directory (configuration, zone files, the records as JSON, the pid file, the
log with every query and reply), so the CLI (tests/dns/dnsctl.py, for the Rust tests) and the pytest
fixture (`dns` in conftest.py) drive the same server. Uses only the standard library and Debian's
unbound; the fixture's own tests use dnspython as the independent client. (Named localdns, not dns:
pytest puts tests/e2e first on sys.path, where a dns.py would hide dnspython from dkimpy.)
"""

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

UNBOUND = os.environ.get("UNBOUND", "/usr/sbin/unbound")
UNBOUND_CONTROL = os.environ.get("UNBOUND_CONTROL", "/usr/sbin/unbound-control")
DEFAULT_TTL = 1
# The names unbound answers itself by default (RFC 6761 and friends) that tests may use as zones.
SPECIAL_USE = ["test.", "invalid.", "example.", "local.", "onion.", "home.arpa."]
START_TIMEOUT = 10.0
TOKEN = re.compile(r"^[A-Za-z0-9_.*@-]+$")


class DnsError(Exception):
    """The server did not start, or refused a change."""


def absolute(name):
    """`name` as a fully qualified, lower-case domain name with its trailing dot."""
    name = name.strip().lower()
    if not name or not TOKEN.match(name) or "@" in name:
        raise ValueError("not a domain name: %r" % name)
    return name if name.endswith(".") else name + "."


def txt_rdata(value):
    """A TXT record's zone-file text. A str is one logical text (SPF, a DKIM key), split into as many
    255-byte character strings as it needs, the way publishers split long DKIM keys; a list or tuple
    gives the strings themselves."""
    if isinstance(value, (list, tuple)):
        chunks = [s.encode() if isinstance(s, str) else bytes(s) for s in value]
    else:
        data = value.encode()
        chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    if any(len(c) > 255 for c in chunks):
        raise ValueError("a TXT character string holds at most 255 bytes")
    return " ".join('"%s"' % "".join(quote_byte(b) for b in c) for c in chunks)


def quote_byte(b):
    if b in (0x22, 0x5C):  # " and \
        return "\\" + chr(b)
    if 0x20 <= b < 0x7F:
        return chr(b)
    return "\\%03d" % b


def record_line(name, rtype, value, ttl):
    if not TOKEN.match(name):
        raise ValueError("not a record name: %r" % name)
    rtype = rtype.upper()
    if not rtype.isalnum():
        raise ValueError("not a record type: %r" % rtype)
    rdata = txt_rdata(value) if rtype == "TXT" and not str(value).startswith('"') else str(value)
    if "\n" in rdata or "\r" in rdata:
        raise ValueError("record data on more than one line: %r" % rdata)
    return "%s %d IN %s %s" % (name, int(ttl), rtype, rdata)


def normalise(records):
    """Records as [name, TYPE, value, ttl] lists (JSON-friendly); a record is (name, type, value) or
    (name, type, value, ttl); names are relative to the zone ("@" the apex) or absolute with a dot."""
    out = []
    for r in records:
        if len(r) not in (3, 4):
            raise ValueError("a record is (name, type, value[, ttl]): %r" % (r,))
        name, rtype, value = r[0], r[1].upper(), r[2]
        ttl = r[3] if len(r) == 4 else DEFAULT_TTL
        record_line(name, rtype, value, ttl)  # validates
        out.append([name, rtype, list(value) if isinstance(value, tuple) else value, int(ttl)])
    return out


class DnsServer:
    """The unbound process behind `directory`, listening on `host`:`port` (UDP and TCP). `host` is
    loopback unless the clients are elsewhere (a container reaches the host on its bridge address)."""

    def __init__(self, directory, port=None, host="127.0.0.1"):
        self.dir = pathlib.Path(directory)
        self.zones_dir = self.dir / "zones"
        state = self.dir / "state.json"
        if port is None:
            if not state.exists():
                raise DnsError("no DNS server was set up in %s" % self.dir)
            saved = json.loads(state.read_text())
            port, host = saved["port"], saved["host"]
        self.port = int(port)
        self.host = host
        self.conf = self.dir / "unbound.conf"
        self.log = self.dir / "unbound.log"
        self.pidfile = self.dir / "unbound.pid"

    # --- what clients use ---

    @property
    def address(self):
        """The value for DNS_RESOLVER (and pebble's -dnsserver): HOST:PORT."""
        return "%s:%d" % (self.host, self.port)

    # --- life cycle ---

    def start(self):
        """Writes the configuration (keeping any zones already in the directory) and starts unbound in
        the foreground of its own session, so it outlives a CLI call; returns once it answers."""
        self.zones_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "state.json").write_text(json.dumps({"port": self.port, "host": self.host}))
        self.write_root_zone()
        self.write_conf(silent=False)
        if self.running():
            raise DnsError("a DNS server is already running in %s" % self.dir)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen([UNBOUND, "-d", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        self.pidfile.write_text("%d\n" % proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DnsError("unbound exited with %s; see %s:\n%s" % (proc.returncode, self.log, self.log_tail()))
            if self.control("status", check=False).returncode == 0:
                return self
            time.sleep(0.01)
        self.stop()
        raise DnsError("unbound did not answer within %ss; see %s" % (START_TIMEOUT, self.log))

    def pid(self):
        try:
            return int(self.pidfile.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def running(self):
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie (our own child, not yet reaped) has stopped all the same.
        with contextlib.suppress(OSError):
            if pathlib.Path("/proc/%d/stat" % pid).read_text().split(")")[-1].split()[0] == "Z":
                return False
        return True

    def stop(self, timeout=5.0):
        """Stops unbound (SIGTERM, then SIGKILL); the directory stays, so `start` brings back the same
        zones on the same port."""
        pid = self.pid()
        if pid is not None and self.running():
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.running() and time.monotonic() < deadline:
                reap(pid)
                time.sleep(0.01)
            if self.running():
                os.kill(pid, signal.SIGKILL)
            reap(pid)
        self.pidfile.unlink(missing_ok=True)

    def keep_logs(self, out):
        """Copies the log (every query and reply) and the zone files to `out` (under test-output/)."""
        out = pathlib.Path(out)
        shutil.rmtree(out / "zones", ignore_errors=True)  # not an earlier run's
        (out / "zones").mkdir(parents=True, exist_ok=True)
        for f in [self.log, self.conf]:
            if f.exists():
                shutil.copy(f, out / f.name)
        for f in self.zones_dir.glob("*.zone"):
            shutil.copy(f, out / "zones" / f.name)

    @contextlib.contextmanager
    def down(self):
        """No DNS server at all for the duration: the port is closed (UDP clients of a connected
        socket see ECONNREFUSED, others a timeout). Started again afterwards with the same zones."""
        self.stop()
        try:
            yield self
        finally:
            self.start()

    @contextlib.contextmanager
    def silent(self):
        """A resolver that never answers, for the duration: unbound keeps the port and drops every
        query (access-control deny), so every client waits for its timeout."""
        self.write_conf(silent=True)
        self.reload()
        try:
            yield self
        finally:
            self.write_conf(silent=False)
            self.reload()

    # --- zones ---

    def zone(self, name, records):
        """Creates or replaces the zone `name` with `records` (see `normalise`). An SOA is added unless
        given (negative answers carry it, minimum TTL 1 s). The change is served when this returns."""
        origin = absolute(name)
        path = self.zone_json(origin)
        serial = json.loads(path.read_text())["serial"] + 1 if path.exists() else 1
        new = not path.exists()
        self.apply(origin, self.write_zone(origin, normalise(records), serial), new)
        return self

    def set_records(self, zone, name, rtype, values, ttl=DEFAULT_TTL):
        """Replaces one RRset of an existing zone: every `rtype` record at `name` (relative, "@" or
        absolute) becomes `values` (one value or a list of them; an empty list removes the RRset)."""
        origin = absolute(zone)
        path = self.zone_json(origin)
        if not path.exists():
            raise DnsError("no zone %s" % origin)
        state = json.loads(path.read_text())
        rtype = rtype.upper()
        key = self.owner(name, origin)
        kept = [r for r in state["records"] if not (self.owner(r[0], origin) == key and r[1] == rtype)]
        if isinstance(values, (str, bytes)) or (rtype == "TXT" and isinstance(values, tuple)):
            values = [values]
        added = normalise([(name, rtype, v, ttl) for v in values])
        self.apply(origin, self.write_zone(origin, kept + added, state["serial"] + 1), new=False)
        return self

    def remove_zone(self, name):
        origin = absolute(name)
        for ext in ("conf", "zone", "json"):
            (self.zones_dir / (origin + ext)).unlink(missing_ok=True)
        if self.running():
            self.reload()
            self.wait_for(lambda zones: origin not in zones, "zone %s gone" % origin)

    def zones(self):
        """{origin: records} of every zone in the directory."""
        return {p.name[:-len("json")]: json.loads(p.read_text())["records"] for p in self.zones_dir.glob("*.json")}

    # --- internals ---

    @staticmethod
    def owner(name, origin):
        if name == "@":
            return origin
        return name.lower() if name.endswith(".") else "%s.%s" % (name.lower(), origin)

    def zone_json(self, origin):
        return self.zones_dir / (origin + "json")

    def write_zone(self, origin, records, serial):
        """Writes the zone's files; returns the serial unbound will list for it (the caller's own SOA's,
        if the records hold one)."""
        lines = ["$ORIGIN %s" % origin, "$TTL %d" % DEFAULT_TTL]
        soa = [r for r in records if r[1] == "SOA" and self.owner(r[0], origin) == origin]
        listed = int(str(soa[0][2]).split()[2]) if soa else serial
        if not soa:
            lines.append("@ %d IN SOA ns.%s hostmaster.%s %d 3600 600 86400 1" % (DEFAULT_TTL, origin, origin, serial))
        lines += [record_line(*r) for r in records]
        replace(self.zones_dir / (origin + "zone"), "\n".join(lines) + "\n")
        replace(self.zones_dir / (origin + "conf"), auth_zone(origin, self.zones_dir / (origin + "zone")))
        replace(self.zone_json(origin), json.dumps({"serial": serial, "records": records}, indent=1))
        return listed

    def apply(self, origin, serial, new):
        if not self.running():
            return  # served from the files when it starts
        if new:
            self.reload()
        else:
            self.control("auth_zone_reload", origin)
            self.control("flush_zone", origin)
        self.wait_for(lambda zones: zones.get(origin, -1) in (serial, None), "zone %s serial %d" % (origin, serial))

    def listed_zones(self):
        r = self.control("list_auth_zones", check=False)
        if r.returncode != 0:
            return None
        zones = {}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "serial":
                zones[parts[0]] = int(parts[2])
            elif parts:
                zones[parts[0]] = None
        return zones

    def wait_for(self, predicate, what, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            zones = self.listed_zones()
            if zones is not None and predicate(zones):
                return
            time.sleep(0.005)
        raise DnsError("unbound did not reach %s within %ss:\n%s" % (what, timeout, self.log_tail()))

    def reload(self):
        """Re-reads the configuration (new or removed zones, silence); the cache goes with it. Returns
        once the control channel answers again, which unbound serves only after the restart."""
        self.control("reload")
        self.wait_for(lambda zones: True, "a reload")

    def control(self, *args, check=True):
        r = subprocess.run([UNBOUND_CONTROL, "-c", str(self.conf), *args], capture_output=True, text=True, timeout=30)
        if check and (r.returncode != 0 or r.stdout.startswith("error")):
            raise DnsError("unbound-control %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
        return r

    def log_tail(self, lines=20):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def write_root_zone(self):
        replace(self.dir / "root.zone", ". %d IN SOA ns.root.invalid. hostmaster.root.invalid. 1 3600 600 86400 1\n"
                                        ". %d IN NS ns.root.invalid.\n" % (DEFAULT_TTL, DEFAULT_TTL))

    def write_conf(self, silent):
        d = self.dir
        lines = [
            "# Written by tests/e2e/dns.py: the tests' resolver and the authority for their zones.",
            "server:",
            "  interface: %s@%d" % (self.host, self.port),
            "  do-ip6: no",
            "  do-daemonize: no",
            '  username: ""',
            '  chroot: ""',
            '  directory: "%s"' % d,
            '  pidfile: ""',
            '  logfile: "%s"' % self.log,
            "  use-syslog: no",
            "  log-time-ascii: yes",
            "  verbosity: 1",
            "  log-queries: yes",
            "  log-replies: yes",
            "  num-threads: 1",
            "  outgoing-range: 16",
            "  msg-cache-size: 1m",
            "  rrset-cache-size: 1m",
            "  cache-max-negative-ttl: 1",
            # No validator: the test zones are unsigned and there is no trust anchor to reach.
            '  module-config: "iterator"',
            # deny drops the query without an answer (refuse would answer REFUSED).
            # (unbound allows 127.0.0.0/8 by default, so both are written).
            "  access-control: 0.0.0.0/0 %s" % ("deny" if silent else "allow"),
            "  access-control: 127.0.0.0/8 %s" % ("deny" if silent else "allow"),
        ]
        lines += ['  local-zone: "%s" nodefault' % z for z in SPECIAL_USE]
        lines += [
            "remote-control:",
            "  control-enable: yes",
            '  control-interface: "%s"' % (d / "control.sock"),
            "  control-use-cert: no",
            auth_zone(".", d / "root.zone"),
            'include: "%s/*.conf"' % self.zones_dir,
        ]
        replace(self.conf, "\n".join(lines) + "\n")


def auth_zone(origin, path):
    """An auth-zone clause: used by unbound's own resolver ("for upstream"), not served as a bare
    authority, and never fetched from anywhere."""
    return ('auth-zone:\n  name: "%s"\n  zonefile: "%s"\n  for-downstream: no\n  for-upstream: yes\n'
            "  fallback-enabled: no\n" % (origin, path))


def replace(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def reap(pid):
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
