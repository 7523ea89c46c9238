#!/usr/bin/env bash
# Measures mailserver-web (not a test; prints numbers, asserts none):
#   (1) GET /pixel under wrk (--latency), next to Debian's nginx serving the same 43-byte GIF as a
#       static file over HTTPS with the same certificate, same wrk parameters, in the same run, in two
#       cases (scripts/bench/web/pixel.lua):
#         varied: like real traffic, every request a new (id, client address, User-Agent) triple over
#                 IDS known ids (the client address from X-Forwarded-For; mailserver-web trusts
#                 127.0.0.1 as a proxy), so each passes the de-duplication and is recorded;
#         repeat: one client fetching one id again and again, de-duplicated (one row).
#       Prints requests/s, p99 and the server's CPU per case, the ratio to nginx, and what was stored
#       (rows, the largest count for one id: at most 1,000) and what the server says it dropped.
#   (2) GET /accounts with ACCOUNTS accounts in the database, logged in with the session cookie:
#       curl time_total (median, max), the server part (time_starttransfer - time_appconnect), the
#       page size, and the accounts query alone in the sqlite3 shell.
#   (3) Wrong logins from one address (scripts/bench/web/login.lua, LOGIN_CONNECTIONS at once for
#       LOGIN_DURATION): answers per second by status (401 = the password was checked, 429 = refused
#       without hashing), and the CPU mailserver-web used meanwhile.
# Only mailserver-web runs (no mail stack), from a fresh `mailserver init` directory, with the admin
# password set by `mailserver admin reset-password --password-stdin`; everything listens on
# 127.0.0.1. wrk, nginx-light, sqlite3 and curl are installed with apt-get when missing.
# Usage: scripts/bench-web.sh
# Environment:
#   WRK_THREADS=2 WRK_CONNECTIONS=64 WRK_DURATION=15s WRK_TIMEOUT=2s   wrk parameters (both servers)
#   ROUNDS=2       (1) repeats every case (order alternates); the ratio uses each one's best req/s
#   IDS=5000       tracked messages seeded and cycled through
#   ACCOUNTS=10000 PAGE_RUNS=20   (2)
#   LOGIN_CONNECTIONS=16 LOGIN_DURATION=10s   (3)
#   PORTBASE=17400  mailserver-web on PORTBASE+80, nginx on PORTBASE+81 (the other *_PORT settings
#                   get PORTBASE+25 etc. and are never bound)
#   KEEP=1          keep the work directory (logs, wrk output, database)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
THREADS=${WRK_THREADS:-2}
CONNS=${WRK_CONNECTIONS:-64}
DURATION=${WRK_DURATION:-15s}
WRK_TIMEOUT=${WRK_TIMEOUT:-2s}
ROUNDS=${ROUNDS:-2}
IDS=${IDS:-5000}
LOGIN_CONNECTIONS=${LOGIN_CONNECTIONS:-16}
LOGIN_DURATION=${LOGIN_DURATION:-10s}
ADMIN_PASSWORD=bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
ACCOUNTS=${ACCOUNTS:-10000}
PAGE_RUNS=${PAGE_RUNS:-20}
PORTBASE=${PORTBASE:-17400}
WEB_PORT=$((PORTBASE + 80))
NGINX_PORT=$((PORTBASE + 81))
BIN=$ROOT/target/release
LUA=$ROOT/scripts/bench/web/pixel.lua
LOGIN_LUA=$ROOT/scripts/bench/web/login.lua
HZ=$(getconf CLK_TCK)

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [ -n "$st" ] && [ "$st" != Z ]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local i
  for i in $(seq 1500); do port_open "$1" && return 0; sleep 0.02; done
  echo "bench-web: port $1 did not open within 30 s" >&2; return 1
}
# Waits up to $2 seconds (default 30) for pid $1 to exit.
wait_gone() {
  local i
  for i in $(seq $((${2:-30} * 50))); do alive "$1" || return 0; sleep 0.02; done
  return 1
}
# CPU ticks (user + system) of a process and all its descendants.
cpu_ticks() {
  local p=$1 t c
  t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do t=$((t + $(cpu_ticks "$c"))); done
  echo "$t"
}
# Waits until the process tree of $1 uses under 2 % of a CPU for half a second (at most 120 s), so
# one server's leftover work (mailserver-web's open writer) does not run during the other's turn.
settle() {
  local a b i
  [ -n "$1" ] || return 0
  for i in $(seq 240); do
    a=$(cpu_ticks "$1"); sleep 0.5; b=$(cpu_ticks "$1")
    [ $(((b - a) * 100 / HZ)) -lt 1 ] && return 0
  done
  echo "   (pid $1 still busy after 120 s; going on)"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maxof() { sort -g | tail -n 1; }

# ---------------------------------------------------------------------------------------------
# Tools
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "bench-web: missing ${need[*]}; run as root to install them" >&2; exit 1; }
  sys_nginx_before=$(cat /run/nginx.pid 2>/dev/null || true)
  echo "-- apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
  # Without a policy-rc.d that forbids it, installing nginx starts the system nginx on port 80:
  # stop that instance again (only if the install started it).
  sys_nginx=$(cat /run/nginx.pid 2>/dev/null || true)
  if [ -n "$sys_nginx" ] && [ "$sys_nginx" != "$sys_nginx_before" ] && alive "$sys_nginx"; then
    kill -QUIT "$sys_nginx"; wait_gone "$sys_nginx" 10 || true
    echo "   (stopped the system nginx the package install started, pid $sys_nginx)"
  fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for p in "$WEB_PORT" "$NGINX_PORT"; do
  if port_open "$p"; then echo "bench-web: 127.0.0.1:$p is in use; set PORTBASE" >&2; exit 1; fi
done

# ---------------------------------------------------------------------------------------------
# Work directory, cleanup
WORK=$(mktemp -d -p /tmp bench-web.XXXXXX)
DIR=$WORK/data
DB=$DIR/db/mailserver.db
TDB=$DIR/tracking/tracking.db
NG=$WORK/nginx
WEB_PID=
NGINX_PID=
stop_web() {
  [ -n "$WEB_PID" ] || return 0
  kill -TERM "$WEB_PID" 2>/dev/null || true
  if ! wait_gone "$WEB_PID" 60; then
    echo "bench-web: mailserver-web (pid $WEB_PID) still running 60 s after SIGTERM; killing it" >&2
    kill -KILL "$WEB_PID" 2>/dev/null || true
  fi
  WEB_STATUS=0
  wait "$WEB_PID" 2>/dev/null || WEB_STATUS=$?
  WEB_PID=
}
stop_nginx() {
  [ -n "$NGINX_PID" ] || return 0
  kill -QUIT "$NGINX_PID" 2>/dev/null || true
  wait_gone "$NGINX_PID" 15 || kill -TERM "$NGINX_PID" 2>/dev/null || true
  wait "$NGINX_PID" 2>/dev/null || true
  NGINX_PID=
}
cleanup() {
  local rc=$?
  set +e
  stop_web
  stop_nginx
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_web() {
  TRUSTED_PROXIES=127.0.0.1 RUST_LOG=warn NO_COLOR=1 "$BIN/mailserver-web" --data "$DIR" </dev/null >>"$WORK/web.log" 2>&1 &
  WEB_PID=$!
  wait_port "$WEB_PORT" || { tail -n 20 "$WORK/web.log" >&2; exit 1; }
}

echo "== bench-web: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
echo "   (wrk and the server share these CPUs; other load on the machine shows up in the numbers)"
start=$(now)
(cd "$ROOT" && cargo build --release --workspace --quiet)
echo "-- cargo build --release --workspace: $(calc %.0f "$(now) - $start") s"

mkdir -p "$DIR" "$NG/www"
HOSTNAME=mx.example.test LISTEN_ADDRESS=127.0.0.1 BIN_DIR=$BIN RELAYHOST= \
  SMTP_PORT=$((PORTBASE + 25)) SUBMISSION_PORT=$((PORTBASE + 87)) SMTPS_PORT=$((PORTBASE + 65)) \
  IMAP_PORT=$((PORTBASE + 43)) IMAPS_PORT=$((PORTBASE + 93)) POP3_PORT=$((PORTBASE + 10)) \
  POP3S_PORT=$((PORTBASE + 95)) WEB_PORT=$WEB_PORT \
  "$BIN/mailserver" --data "$DIR" init >"$WORK/init.log" 2>&1 || { cat "$WORK/init.log" >&2; exit 1; }
printf '%s\n' "$ADMIN_PASSWORD" | "$BIN/mailserver" --data "$DIR" admin reset-password --password-stdin >/dev/null

# Seed: IDS tracked messages with random tracking ids, one domain with ACCOUNTS accounts. An id is 22
# characters of canonical base64url (what the milter makes and the pixel accepts): 21 random hex
# digits (all base64url characters) and a final 'A' (the last character carries only 2 bits, which
# must be zero here).
start=$(now)
sqlite3 "$DB" <<SQL
PRAGMA foreign_keys = ON;
ATTACH '$TDB' AS tracking;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $IDS)
INSERT INTO tracked_messages (tracking_id, sender, recipients, subject)
  SELECT substr(hex(randomblob(11)), 1, 21) || 'A', 'news@bench.test', printf('rcpt%d@example.org', i), printf('Newsletter %d', i) FROM n;
INSERT INTO domains (domain) VALUES ('bench.test');
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $ACCOUNTS)
INSERT INTO accounts (domain_id, username, password_hash, name, quota)
  SELECT (SELECT id FROM domains WHERE domain = 'bench.test'), printf('user%05d', i),
         '\$argon2id\$v=19\$m=19456,t=2,p=1\$cGxhY2Vob2xkZXI\$cGxhY2Vob2xkZXJwbGFjZWhvbGRlcg',
         printf('Bench User %d', i), (i % 4) * 1024 FROM n;
COMMIT;
SQL
sqlite3 "$TDB" "SELECT tracking_id FROM tracked_messages ORDER BY id" >"$WORK/ids.txt"
echo "-- seeded $(wc -l <"$WORK/ids.txt") tracked messages and $(sqlite3 "$DB" 'SELECT count(*) FROM accounts') accounts in SQLite: $(calc %.1f "$(now) - $start") s"

# ---------------------------------------------------------------------------------------------
echo
echo "== (1) GET /pixel, wrk -t$THREADS -c$CONNS -d$DURATION --timeout $WRK_TIMEOUT --latency, $IDS known ids"
start_web
# The GIF nginx serves is the one mailserver-web sends (fetched without an id, so nothing is recorded).
curl -sk --http1.1 --max-time 10 -o "$NG/www/pixel" -D "$WORK/ours.headers" "https://127.0.0.1:$WEB_PORT/pixel"
gif_bytes=$(stat -c %s "$NG/www/pixel")
cat >"$NG/nginx.conf" <<CONF
# nginx for scripts/bench-web.sh: the same GIF as a static file, same certificate, same headers.
daemon off;
user root;
worker_processes auto;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server_tokens off;
  client_body_temp_path $NG/tmp;
  proxy_temp_path $NG/tmp;
  fastcgi_temp_path $NG/tmp;
  uwsgi_temp_path $NG/tmp;
  scgi_temp_path $NG/tmp;
  keepalive_requests 100000000;   # like hyper (no limit): no reconnects, no extra TLS handshakes
  keepalive_timeout 75s;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_protocols TLSv1.2 TLSv1.3;   # nginx 1.22's default lacks TLSv1.3; rustls negotiates it
    ssl_certificate $DIR/ssl/cert.pem;
    ssl_certificate_key $DIR/ssl/key.pem;
    root $NG/www;
    location = /pixel {
      types { }
      default_type image/gif;
      etag off;
      add_header Cache-Control "no-store, no-cache, must-revalidate, max-age=0" always;
      add_header Pragma "no-cache" always;
      add_header Expires "0" always;
      add_header Content-Security-Policy "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'" always;
      add_header X-Frame-Options "DENY" always;
      add_header X-Content-Type-Options "nosniff" always;
      add_header Referrer-Policy "no-referrer" always;
      add_header Strict-Transport-Security "max-age=31536000" always;
    }
  }
}
CONF
mkdir -p "$NG/tmp"
"$NGINX" -q -t -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log"
"$NGINX" -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log" </dev/null >>"$NG/stdout.log" 2>&1 &
NGINX_PID=$!
wait_port "$NGINX_PORT" || { cat "$NG/error.log" >&2; exit 1; }
curl -sk --http1.1 --max-time 10 -o "$WORK/nginx.gif" -D "$WORK/nginx.headers" "https://127.0.0.1:$NGINX_PORT/pixel?id=x"
cmp -s "$NG/www/pixel" "$WORK/nginx.gif" || { echo "bench-web: nginx does not serve the same GIF" >&2; exit 1; }
tls() { echo | timeout 10 openssl s_client -connect "127.0.0.1:$1" 2>/dev/null | awk '/^New, /{ print $2, $NF }' | tr -d ,; }
echo "   response: ours $gif_bytes-byte GIF + $(wc -c <"$WORK/ours.headers") header bytes, nginx $(stat -c %s "$WORK/nginx.gif") + $(wc -c <"$WORK/nginx.headers") (HTTP/1.1)"
if command -v openssl >/dev/null; then
  echo "   TLS: ours $(tls "$WEB_PORT"), nginx $(tls "$NGINX_PORT"), certificate $(openssl x509 -in "$DIR/ssl/cert.pem" -noout -text | awk -F': ' '/Public Key Algorithm/ { print $2; exit }')"
fi

dur_s=$(awk -v d="$DURATION" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; if (d ~ /h$/) n *= 3600; print int(n) }')
declare -A best=() p99s=()
count_opens() { sqlite3 "$TDB" 'SELECT count(*) FROM pixel_opens'; }
# run_wrk NAME PORT ROUND MODE: one measured wrk run; prints one line and remembers the best req/s
# of NAME-MODE.
run_wrk() {
  local name=$1 port=$2 round=$3 mode=$4 pid out t0 t1 rps p99 lua rows0 rows1 key
  if [ "$name" = ours ]; then pid=$WEB_PID; else pid=$NGINX_PID; fi
  key=$name-$mode
  settle "$WEB_PID"; settle "$NGINX_PID"   # neither server still busy from the run before
  out=$WORK/wrk-$key-$round.txt
  rows0=$(count_opens)
  t0=$(cpu_ticks "$pid")
  timeout $((dur_s + 60)) wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout "$WRK_TIMEOUT" --latency \
    -s "$LUA" "https://127.0.0.1:$port" -- "$WORK/ids.txt" "$THREADS" "$mode" >"$out" 2>&1 ||
    { cat "$out" >&2; echo "bench-web: wrk failed" >&2; exit 1; }
  t1=$(cpu_ticks "$pid")
  lua=$(grep '^WRKLUA ' "$out") || { cat "$out" >&2; exit 1; }
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  p99=$(awk '$1 == "99%" { print $2 }' "$out")
  local -A v=()
  local kv
  for kv in ${lua#WRKLUA }; do v[${kv%%=*}]=${kv#*=}; done
  printf '   %-13s round %d: %9.0f req/s   p99 %-8s (p50 %s ms, max %s ms)   %s requests, errors: connect %s read %s write %s status %s timeout %s   server CPU %s s (%s%% of one CPU)\n' \
    "$key" "$round" "$rps" "$p99" "$(calc %.2f "${v[p50_us]} / 1000")" "$(calc %.1f "${v[max_us]} / 1000")" \
    "${v[requests]}" "${v[connect]}" "${v[read]}" "${v[write]}" "${v[status]}" "${v[timeout]}" \
    "$(calc %.1f "($t1 - $t0) / $HZ")" "$(calc %.0f "($t1 - $t0) * 100 / $HZ / (${v[duration_us]} / 1e6)")"
  if [ "$name" = ours ]; then
    settle "$WEB_PID"   # the writer finishes its queue
    rows1=$(count_opens)
    printf '                 rows +%s (%s%% of the requests)\n' "$((rows1 - rows0))" "$(calc %.1f "($rows1 - $rows0) * 100 / ${v[requests]}")"
  fi
  if awk "BEGIN { exit !($rps > ${best[$key]:-0}) }"; then best[$key]=$rps; p99s[$key]=$p99; fi
}
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    run_wrk ours "$WEB_PORT" "$r" varied; run_wrk nginx "$NGINX_PORT" "$r" varied; run_wrk ours "$WEB_PORT" "$r" repeat
  else
    run_wrk ours "$WEB_PORT" "$r" repeat; run_wrk nginx "$NGINX_PORT" "$r" varied; run_wrk ours "$WEB_PORT" "$r" varied
  fi
done
stop_nginx
echo "   best: nginx $(calc %.0f "${best[nginx-varied]}") req/s (p99 ${p99s[nginx-varied]})"
for mode in varied repeat; do
  echo "         mailserver-web $mode: $(calc %.0f "${best[ours-$mode]}") req/s (p99 ${p99s[ours-$mode]}), ratio to nginx $(calc %.2f "${best[ours-$mode]} / ${best[nginx-varied]}") (goal >= 0.8)"
done

t0=$(now)
stop_web
echo "   mailserver-web stopped by SIGTERM: exit status $WEB_STATUS after $(calc %.2f "$(now) - $t0") s (its queue drained)"
read -r rows distinct most <<<"$(sqlite3 -separator ' ' "$TDB" 'SELECT count(*), count(DISTINCT tracking_id), (SELECT max(n) FROM (SELECT count(*) AS n FROM pixel_opens GROUP BY tracking_id)) FROM pixel_opens')"
echo "   pixel_opens: $rows rows for $distinct of $IDS ids, at most ${most:-0} for one id (cap 1000)"
echo "   what the server logged as dropped (one line per kind at most every 10 s; the last of each):"
grep -E 'dropped' "$WORK/web.log" | sed -E 's/^.*(WARN|ERROR) *//' | awk '{ k = $0; sub(/dropped=.*/, "", k); last[k] = $0 } END { for (k in last) print "     " last[k] }' | sort || true
[ -n "$(grep -E 'dropped' "$WORK/web.log" || true)" ] || echo "     (nothing)"
sni=$(grep -c 'Illegal SNI extension' "$WORK/web.log" || true)
grep -v 'Illegal SNI extension' "$WORK/web.log" | grep -v dropped | grep -i -E 'WARN|ERROR' >"$WORK/web.warnings" || true
echo "   server log: $(wc -l <"$WORK/web.warnings") other warnings/errors, plus $sni rustls \"Illegal SNI extension: ignoring IP address\" (one per wrk connection: wrk sends 127.0.0.1 as SNI)"
head -n 5 "$WORK/web.warnings" | sed 's/^/     /'

# ---------------------------------------------------------------------------------------------
echo
echo "== (2) GET /accounts with $ACCOUNTS accounts, $PAGE_RUNS requests, each a new curl (new TCP+TLS connection)"
start_web
URL=https://127.0.0.1:$WEB_PORT
JAR=$WORK/cookies.txt
code=$(curl -sk --max-time 30 -u "admin:$ADMIN_PASSWORD" -c "$JAR" -o /dev/null -w '%{http_code}' "$URL/")
grep -q ms_session "$JAR" || { echo "bench-web: login failed (HTTP $code, no ms_session cookie)" >&2; exit 1; }
FMT='%{http_code} %{http_version} %{time_appconnect} %{time_starttransfer} %{time_total} %{size_download}\n'
fetch() { curl -sk --max-time 60 -b "$JAR" -o "$WORK/accounts.html" -w "$FMT" "$URL/accounts"; }
first=$(fetch)
rows_on_page=$(grep -o '/delete"' "$WORK/accounts.html" | wc -l)
[ "${first%% *}" = 200 ] && [ "$rows_on_page" -ge "$ACCOUNTS" ] ||
  { echo "bench-web: /accounts answered ${first%% *} with $rows_on_page account rows" >&2; exit 1; }
: >"$WORK/page.txt"
for i in $(seq "$PAGE_RUNS"); do fetch >>"$WORK/page.txt"; done
awk '$1 != 200 { bad = 1 } END { exit bad }' "$WORK/page.txt" || { echo "bench-web: a request failed" >&2; cat "$WORK/page.txt" >&2; exit 1; }
col() { awk "{ print $1 * 1000 }" "$WORK/page.txt"; }
read -r _ proto _ _ first_total size <<<"$first"
echo "   page: $size bytes of HTML, $rows_on_page account rows, HTTP/$proto, not compressed"
echo "   first request after start (cold): $(calc %.1f "$first_total * 1000") ms"
echo "   time_total:                            median $(col '$5' | median | xargs printf %.1f) ms, max $(col '$5' | maxof | xargs printf %.1f) ms   (goal < 50 ms)"
echo "   server (starttransfer - appconnect):   median $(col '($4 - $3)' | median | xargs printf %.1f) ms, max $(col '($4 - $3)' | maxof | xargs printf %.1f) ms"
echo "   TCP + TLS handshake (appconnect):      median $(col '$3' | median | xargs printf %.1f) ms"
echo "   body transfer (total - starttransfer): median $(col '($5 - $4)' | median | xargs printf %.1f) ms"
# The list's query alone, in the sqlite3 shell (the same SELECT as store::accounts::list).
sql_ms=$(sqlite3 "$DB" <<'SQL' | awk '/^Run Time/ { print $4 * 1000 }' | median
.output /dev/null
.timer on
SELECT a.id, a.username, d.domain, a.name, a.active, a.quota, a.password_hash, d.active FROM accounts a JOIN domains d ON d.id = a.domain_id ORDER BY d.domain, a.username;
SELECT a.id, a.username, d.domain, a.name, a.active, a.quota, a.password_hash, d.active FROM accounts a JOIN domains d ON d.id = a.domain_id ORDER BY d.domain, a.username;
SELECT a.id, a.username, d.domain, a.name, a.active, a.quota, a.password_hash, d.active FROM accounts a JOIN domains d ON d.id = a.domain_id ORDER BY d.domain, a.username;
SQL
)
echo "   the accounts query alone (sqlite3 shell, median of 3): ${sql_ms:-?} ms"
stop_web

# ---------------------------------------------------------------------------------------------
echo
echo "== (3) wrong logins for admin from one address: wrk -t$THREADS -c$LOGIN_CONNECTIONS -d$LOGIN_DURATION, $(nproc) CPUs"
start_web
login_s=$(awk -v d="$LOGIN_DURATION" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; print int(n) }')
out=$WORK/wrk-login.txt
t0=$(cpu_ticks "$WEB_PID"); w0=$(now)
timeout $((login_s + 60)) wrk -t"$THREADS" -c"$LOGIN_CONNECTIONS" -d"$LOGIN_DURATION" --timeout 10s -s "$LOGIN_LUA" \
  "https://127.0.0.1:$WEB_PORT" -- "Basic $(printf 'admin:wrong-password' | base64)" >"$out" 2>&1 ||
  { cat "$out" >&2; echo "bench-web: wrk failed" >&2; exit 1; }
t1=$(cpu_ticks "$WEB_PID"); w1=$(now)
line=$(grep '^WRKLOGIN ' "$out") || { cat "$out" >&2; exit 1; }
declare -A L=()
for kv in ${line#WRKLOGIN }; do L[${kv%%=*}]=${kv#*=}; done
secs=$(calc %.3f "${L[duration_us]} / 1e6")
echo "   answers: $(calc %.0f "${L[requests]} / $secs") per second ($(calc %.0f "${L[s401]} / $secs")/s 401 (password checked), $(calc %.0f "${L[s429]} / $secs")/s 429 (refused unhashed), ${L[s200]} 200, ${L[other]} other; ${L[requests]} in $(calc %.1f "$secs") s)"
echo "   latency: p50 $(calc %.1f "${L[p50_us]} / 1000") ms, p99 $(calc %.1f "${L[p99_us]} / 1000") ms"
echo "   mailserver-web CPU meanwhile: $(calc %.1f "($t1 - $t0) / $HZ") s in $(calc %.1f "$w1 - $w0") s = $(calc %.0f "($t1 - $t0) * 100 / $HZ / ($w1 - $w0)")% of one CPU ($(nproc) CPUs)"
stop_web
echo
echo "== done in $SECONDS s (mailserver-web log: $(wc -l <"$WORK/web.log") lines)"
