#!/usr/bin/env bash
# Measures the native stack (not a test; prints numbers):
#   - cold start: `scripts/stack.sh up` on an empty directory, until every port and socket answers
#   - CLI change to live: `mailserver account add`, then until IMAPS login succeeds; and
#     `mailserver account disable`, then until RCPT TO is refused
#   - memory of the idle stack: summed RSS and PSS of supervisord and everything below it
# Usage: scripts/bench-stack.sh [PORTBASE]   (needs scripts/install-deps.sh and a release build)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${1:-15000}
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
DIR=$(mktemp -d -p /tmp bench.XXXXXX)
trap '"$ROOT/scripts/stack.sh" down "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT

(cd "$ROOT" && cargo build --release --workspace --quiet)
OUT=$("$ROOT/scripts/stack.sh" up "$DIR" "$BASE" 2>/dev/null)
echo "cold start (stack.sh up, empty dir): $(grep '^UP_SECONDS=' <<<"$OUT" | cut -d= -f2) s"
M="$ROOT/target/release/mailserver --data $DIR"
$M domain add bench.test

"$PY" - "$DIR" "$BASE" "$ROOT/target/release/mailserver" <<'PY'
import imaplib, smtplib, ssl, subprocess, sys, time
data, base, ms = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=data + "/ssl/cert.pem")
def cli(*a, input=None):
    subprocess.run([ms, "--data", data, *a], input=input, text=True, check=True, capture_output=True)
def login_ok(user, pw):
    m = imaplib.IMAP4_SSL("127.0.0.1", base + 93, ssl_context=ctx)
    try:
        m.login(user, pw); return True
    except imaplib.IMAP4.error:
        return False
    finally:
        m.logout()
def rcpt(addr):
    with smtplib.SMTP("127.0.0.1", base + 25, source_address=("127.0.0.2", 0)) as s:
        s.ehlo("x.test"); s.mail("a@x.test"); return s.rcpt(addr)[0]
adds, disables = [], []
for i in range(5):
    user = "u%d@bench.test" % i
    t0 = time.monotonic()
    cli("account", "add", user, "--password-stdin", input="bench-pw-Tq8wLz4nRv2k\n")
    while not login_ok(user, "bench-pw-Tq8wLz4nRv2k"):
        time.sleep(0.005)
    adds.append(time.monotonic() - t0)
    t0 = time.monotonic()
    cli("account", "disable", user)
    while rcpt(user) != 550:
        time.sleep(0.005)
    disables.append(time.monotonic() - t0)
fmt = lambda xs: "median %.3f s, max %.3f s" % (sorted(xs)[len(xs) // 2], max(xs))
print("CLI change to live: account add -> IMAP login: %s" % fmt(adds))
print("CLI change to live: account disable -> RCPT refused: %s" % fmt(disables))
PY

sleep 3   # let it settle idle
SUP=$(cat "$DIR/run/supervisord.pid")
pids() { local p=$1; echo "$p"; for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do pids "$c"; done; }
rss=0; pss=0; n=0
for p in $(pids "$SUP"); do
  r=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)
  s=$(awk '/^Pss:/ {print $2}' /proc/"$p"/smaps_rollup 2>/dev/null || echo 0)
  rss=$((rss + ${r:-0})); pss=$((pss + ${s:-0})); n=$((n + 1))
done
echo "idle stack: $n processes, summed RSS $((rss / 1024)) MiB, summed PSS $((pss / 1024)) MiB"
