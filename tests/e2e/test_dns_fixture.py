"""The tests' DNS server (localdns.py), asked by an independent client (dnspython) exactly as rspamd,
pebble and the doctor will ask it: as their recursive resolver, with RD set. These are the answers
issue 13 (SPF/DKIM/DMARC, mail with no resolver), 14 (ACME, MTA-STS) and 15 (the doctor) build on.
No mail stack is started; the whole file runs in a few seconds."""

import os
import pathlib
import secrets
import subprocess
import time

import pytest
# Under other names: in a test, `dns` is the fixture (the server).
from dns import exception as dnsexception
from dns import flags as dnsflags
from dns import message as dnsmessage
from dns import query as dnsquery
from dns import rcode as dnsrcode
from dns import resolver as dnsresolver

from conftest import DNS_PORT

# The server is the same whichever stack is the target, so these run once, with the native suite.
pytestmark = pytest.mark.native_only

ROOT = pathlib.Path(__file__).resolve().parents[2]
DNSCTL = ROOT / "tests" / "dns" / "dnsctl.py"
# The shape of a 2048-bit RSA key's record as opendkim-genkey publishes it: one logical text of 420
# bytes (392 of base64), which no single TXT character string can hold.
DKIM_KEY = "v=DKIM1; h=sha256; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "x" * 342 + "IDAQAB"


def stub(server, lifetime=2.0):
    """A stub resolver pointed at `server` only, as a daemon given DNS_RESOLVER is."""
    r = dnsresolver.Resolver(configure=False)
    host, port = server.address.rsplit(":", 1)
    r.nameservers = [host]
    r.port = int(port)
    r.lifetime = lifetime
    r.cache = None
    return r


def texts(answer):
    """Each TXT record of `answer` as (its character strings, the joined text)."""
    return [(list(rd.strings), b"".join(rd.strings).decode()) for rd in answer]


def fresh_zone():
    """A zone name no other test uses (the server is shared by the session)."""
    return "t%s.test" % secrets.token_hex(4)


@pytest.fixture
def sender(dns):
    """A sender domain that publishes what a passing sender publishes."""
    zone = fresh_zone()
    dns.zone(zone, [
        ("@", "TXT", "v=spf1 ip4:127.0.0.1 -all"),
        ("@", "MX", "10 mx"),
        ("mx", "A", "127.0.0.1"),
        ("mx", "AAAA", "::1"),
        ("mail._domainkey", "TXT", DKIM_KEY),
        ("_dmarc", "TXT", "v=DMARC1; p=reject; rua=mailto:dmarc@%s" % zone),
        ("www", "CNAME", "mx"),
        ("_25._tcp.mx", "TLSA", "3 1 1 " + "ab" * 32),
        ("@", "CAA", '0 issue "pebble.test"'),
    ])
    return zone


def test_answers_as_a_recursive_stub(dns, sender):
    query = dns_query("%s." % sender, "TXT")
    assert query.flags & dnsflags.RD
    reply = dnsquery.udp(query, "127.0.0.1", port=DNS_PORT, timeout=2)
    assert reply.rcode() == dnsrcode.NOERROR
    assert reply.flags & dnsflags.RA, "a resolver says recursion is available"
    assert [t for _, t in texts(reply.answer[0])] == ["v=spf1 ip4:127.0.0.1 -all"]


def test_spf_and_dmarc_txt(dns, sender):
    r = stub(dns)
    assert [t for _, t in texts(r.resolve(sender, "TXT"))] == ["v=spf1 ip4:127.0.0.1 -all"]
    assert [t for _, t in texts(r.resolve("_dmarc." + sender, "TXT"))] == [
        "v=DMARC1; p=reject; rua=mailto:dmarc@%s" % sender]


def test_dkim_key_longer_than_255_bytes_arrives_as_split_strings(dns, sender):
    assert len(DKIM_KEY) > 255
    name = "mail._domainkey." + sender
    # Over UDP (EDNS, as rspamd asks) and over TCP: the same record, in two strings.
    for tcp in (False, True):
        strings, text = texts(stub(dns).resolve(name, "TXT", tcp=tcp))[0]
        assert text == DKIM_KEY
        assert [len(s) for s in strings] == [255, len(DKIM_KEY) - 255]


def test_mx_a_aaaa_cname_tlsa_caa(dns, sender):
    r = stub(dns)
    assert [(rd.preference, str(rd.exchange)) for rd in r.resolve(sender, "MX")] == [(10, "mx.%s." % sender)]
    assert [rd.address for rd in r.resolve("mx." + sender, "A")] == ["127.0.0.1"]
    assert [rd.address for rd in r.resolve("mx." + sender, "AAAA")] == ["::1"]
    # The resolver chases the CNAME: the answer holds the alias and the address.
    answer = r.resolve("www." + sender, "A")
    assert str(answer.canonical_name) == "mx.%s." % sender
    assert [rd.address for rd in answer] == ["127.0.0.1"]
    tlsa = list(r.resolve("_25._tcp.mx." + sender, "TLSA"))
    assert [(t.usage, t.selector, t.mtype, t.cert.hex()) for t in tlsa] == [(3, 1, 1, "ab" * 32)]
    assert [(c.flags, c.tag, c.value) for c in r.resolve(sender, "CAA")] == [(0, b"issue", b"pebble.test")]


def test_cname_to_another_test_zone_is_followed(dns, sender):
    other = fresh_zone()
    dns.zone(other, [("alias", "CNAME", "mx.%s." % sender)])
    answer = stub(dns).resolve("alias." + other, "A")
    assert [rd.address for rd in answer] == ["127.0.0.1"]


def test_nxdomain_for_names_in_no_zone_and_missing_names(dns, sender):
    r = stub(dns)
    for name in ["nowhere.example.com", "gmail.com", "unknown-%s.test" % secrets.token_hex(4), "nothing." + sender]:
        with pytest.raises(dnsresolver.NXDOMAIN):
            r.resolve(name, "A")
    # A name that exists without the asked type: NODATA, not NXDOMAIN (SPF's "none" vs "no domain").
    with pytest.raises(dnsresolver.NoAnswer):
        r.resolve("mx." + sender, "TXT")


def test_a_change_is_answered_within_a_second(dns, sender):
    r = stub(dns)
    assert [t for _, t in texts(r.resolve(sender, "TXT"))] == ["v=spf1 ip4:127.0.0.1 -all"]  # now cached
    started = time.monotonic()
    dns.set_records(sender, "@", "TXT", "v=spf1 -all")
    while True:
        if [t for _, t in texts(r.resolve(sender, "TXT"))] == ["v=spf1 -all"]:
            break
        assert time.monotonic() - started < 1.0, "the change was not answered within 1 s"
        time.sleep(0.01)
    changed = time.monotonic() - started
    print("record change answered after %.3f s" % changed)
    # The other records of the zone stayed; an RRset can also be removed.
    assert [rd.address for rd in r.resolve("mx." + sender, "A")] == ["127.0.0.1"]
    dns.set_records(sender, "_dmarc", "TXT", [])
    with pytest.raises(dnsresolver.NXDOMAIN):
        r.resolve("_dmarc." + sender, "TXT")


def test_a_new_zone_and_a_removed_zone_are_answered_within_a_second(dns):
    r = stub(dns)
    zone = fresh_zone()
    with pytest.raises(dnsresolver.NXDOMAIN):
        r.resolve(zone, "TXT")  # the negative answer is cached now
    started = time.monotonic()
    dns.zone(zone, [("@", "TXT", "hello")])
    assert [t for _, t in texts(r.resolve(zone, "TXT"))] == ["hello"]
    assert time.monotonic() - started < 1.0
    dns.remove_zone(zone)
    with pytest.raises(dnsresolver.NXDOMAIN):
        r.resolve(zone, "TXT")


def test_no_resolver_means_a_timeout(dns, sender):
    """What #13's "mail still flows when no resolver answers" starts from: a client that asks gets no
    answer at all, only its own timeout, both when the server is down and when it is silent."""
    r = stub(dns, lifetime=0.5)
    with dns.down():
        assert not dns.running()
        started = time.monotonic()
        with pytest.raises(dnsexception.Timeout):
            r.resolve(sender, "TXT")
        assert time.monotonic() - started >= 0.45
        # A TCP client is refused at once.
        with pytest.raises(ConnectionRefusedError):
            dnsquery.tcp(dns_query(sender, "TXT"), "127.0.0.1", port=DNS_PORT, timeout=0.5)
    with dns.silent():
        started = time.monotonic()
        with pytest.raises(dnsexception.Timeout):
            r.resolve(sender, "TXT")
        assert time.monotonic() - started >= 0.45
    # Back, with the same zones.
    assert [t for _, t in texts(stub(dns).resolve(sender, "TXT"))] == ["v=spf1 ip4:127.0.0.1 -all"]


def test_cli_for_the_rust_tests(tmp_path):
    """tests/dns/dnsctl.py drives the same server from outside pytest (with the system's python3)."""
    directory, port = tmp_path / "dns", DNS_PORT + 1
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")

    def dnsctl(*args, input=None):
        return subprocess.run(["python3", str(DNSCTL), *args], input=input, capture_output=True, text=True,
                              env=env, timeout=30)

    up = dnsctl("up", str(directory), str(port))
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "DNS_RESOLVER=127.0.0.1:%d" % port
    try:
        records = "@ TXT v=spf1 mx -all\n@ MX 10 mx\nmx A 127.0.0.2\nlong TXT %s\n" % DKIM_KEY
        z = dnsctl("zone", str(directory), "cli.test", input=records)
        assert z.returncode == 0, z.stderr
        r = dnsresolver.Resolver(configure=False)
        r.nameservers, r.port, r.lifetime = ["127.0.0.1"], port, 2.0
        assert [t for _, t in texts(r.resolve("cli.test", "TXT"))] == ["v=spf1 mx -all"]
        assert [t for _, t in texts(r.resolve("long.cli.test", "TXT"))] == [DKIM_KEY]
        assert [rd.address for rd in r.resolve("mx.cli.test", "A")] == ["127.0.0.2"]
        bad = dnsctl("zone", str(directory), "cli.test", input="just-one-field\n")
        assert bad.returncode == 1 and "OWNER TYPE VALUE" in bad.stderr
    finally:
        down = dnsctl("down", str(directory))
    assert down.returncode == 0, down.stderr
    with pytest.raises(dnsexception.Timeout):
        r.lifetime = 0.3
        r.resolve("cli.test", "TXT")


def dns_query(name, rtype):
    return dnsmessage.make_query(name, rtype)  # RD is set by default, as a stub resolver sends

