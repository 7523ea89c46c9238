#!/usr/bin/env python3
"""The tests' DNS server from the command line, for tests that are not pytest (the doctor's Rust
tests): the same unbound and the same directory layout as the `dns` pytest fixture
(tests/e2e/localdns.py). Standard library only, so `python3` is enough.

  dnsctl.py up DIR PORT        start unbound on 127.0.0.1:PORT; prints DNS_RESOLVER=127.0.0.1:PORT
  dnsctl.py zone DIR NAME      create or replace zone NAME from stdin, one record a line:
                               `OWNER TYPE VALUE` (OWNER relative, @ or absolute; TXT VALUE plain
                               text, split into 255-byte strings, or already "quoted" "strings")
  dnsctl.py remove DIR NAME    remove zone NAME
  dnsctl.py down DIR           stop unbound (DIR, with its log, stays for the caller to keep)

Every change is served when the command returns. Exit status 0 on success, 1 with a message on
stderr otherwise.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
import localdns  # noqa: E402


def parse_records(text):
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) != 3:
            raise ValueError("line %d: expected `OWNER TYPE VALUE`: %r" % (number, line))
        records.append((parts[0], parts[1], parts[2].strip()))
    return records


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    command, directory, rest = argv[0], argv[1], argv[2:]
    try:
        if command == "up" and len(rest) == 1:
            server = localdns.DnsServer(directory, int(rest[0])).start()
            print("DNS_RESOLVER=%s" % server.address)
        elif command == "zone" and len(rest) == 1:
            localdns.DnsServer(directory).zone(rest[0], parse_records(sys.stdin.read()))
        elif command == "remove" and len(rest) == 1:
            localdns.DnsServer(directory).remove_zone(rest[0])
        elif command == "down" and not rest:
            localdns.DnsServer(directory).stop()
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (localdns.DnsError, ValueError, OSError) as e:
        print("dnsctl: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
