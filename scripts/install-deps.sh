#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian bookworm machine (as root): the mail daemons
# (the same packages the image installs), client tools, the vmail user, and a Python venv with
# pytest, dkimpy (independent DKIM verifier), aiosmtpd (capture server) and dnspython (the DNS client
# the DNS fixture's own tests ask with). Idempotent and quick when everything is already there.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

PACKAGES=(
  # runtime: keep in step with the Dockerfile
  postfix postfix-sqlite dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-sqlite
  opendkim supervisor ca-certificates bc
  # test tools
  opendkim-tools swaks libnet-ssleay-perl sqlite3 python3-venv chromium chromium-driver fonts-dejavu-core
  # The tests' DNS server (tests/e2e/localdns.py): unbound, as one process is both things the tests
  # need: the authority for the test zones (real zone files as auth-zones: TXT split into 255-byte
  # strings, MX, A, AAAA, CNAME chased across zones, TLSA, CAA, wildcards) and the recursive resolver
  # address rspamd, pebble and the doctor are given (RD queries answered by its own iterator from those
  # zones; every other name NXDOMAIN, nothing asked on the internet). As root, in the foreground, on a
  # loopback port it answers ~35 ms after start; a zone change through unbound-control is served
  # ~35 ms later (a new zone ~45 ms). nsd and knot are authoritative only, so a resolver for rspamd
  # would be a second daemon in front of them; unbound's local-data alone would not chase CNAMEs.
  unbound
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  echo "postfix postfix/mailname string localhost" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The same ids as in the Dockerfile.
getent group vmail >/dev/null || groupadd --system --gid 5000 vmail
id vmail >/dev/null 2>&1 || useradd --system --uid 5000 --gid vmail --home-dir /nonexistent \
  --no-create-home --shell /usr/sbin/nologin vmail
# The dashboard and the milter each have a primary group of their own (the main database and the TLS
# key are the dashboard's group's; the milter's group owns nothing) and share `mailserver` (tracking.db).
getent group mailserver >/dev/null || groupadd --system --gid 5001 mailserver
for u in mailserver-web:5001:5003 mailserver-milter:5002:5004; do
  IFS=: read -r name uid gid <<<"$u"
  getent group "$name" >/dev/null || groupadd --system --gid "$gid" "$name"
  if id "$name" >/dev/null 2>&1; then
    # Users made by an older version had `mailserver` as their primary group.
    usermod --gid "$name" --groups mailserver "$name"
  else
    useradd --system --uid "$uid" --gid "$name" --groups mailserver \
      --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin "$name"
  fi
done

# The venv is made once; a package added here later is installed into an existing venv too.
[ -x "$ROOT/.venv/bin/python" ] || python3 -m venv "$ROOT/.venv"
if ! "$ROOT/.venv/bin/python" -c "import pytest, dkim, aiosmtpd, dns.resolver" 2>/dev/null; then
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check pytest==9.2.0 dkimpy==1.1.8 aiosmtpd==1.4.6 \
    dnspython==2.9.2
fi
