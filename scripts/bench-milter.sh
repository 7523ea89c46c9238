#!/usr/bin/env bash
# Measures the tracking milter. Prints numbers and ratios, measured side by side in one run; nothing
# here passes or fails on a number.
#   (a) rewrite throughput on ~10 MB HTML messages next to lol_html alone (cargo bench)
#   (c) peak RSS of `mailserver-milter inject` on a 20 MB HTML message
#   (b) messages/s through a real Postfix (scripts/stack.sh) from smtp-source into smtp-sink, four
#       configurations back to back: no milter; OpenDKIM only; our milter + OpenDKIM (every message
#       tracked); the old design (pipe content_filter running `mailserver-milter inject` and
#       `sendmail` back into pickup, OpenDKIM signing there)
# Usage: scripts/bench-milter.sh        (root on Debian bookworm, after scripts/install-deps.sh)
# Environment (defaults finish in a few minutes on 2 cores):
#   MESSAGES=2000 SESSIONS=10  messages and parallel SMTP sessions per configuration in (b)
#   WARMUP=100                 unmeasured messages sent first in each configuration
#   ROUNDS=2                   repeat the four configurations; ratios then use each one's best msg/s
#   RUN_TIMEOUT=180            seconds before one measured run is given up
#   PORTBASE=16000 SINK_PORT=PORTBASE+26   the stack's ports (see stack.sh) and smtp-sink's
#   BENCH_MB=10 BENCH_ITERS=7  size and iterations of (a); RSS_MB=20 message size of (c)
#   PARTS=acb                  which parts to run, in that order
#   CONFIGS="none dkim ours pipe"  which configurations (b) runs (the ratios need all four)
#   KEEP=1                     keep the work directory (logs, smtp-sink dumps) for inspection
#   PROFILE=1                  (b): `perf record -a` each measured run and print CPU share per command
#                              (includes whatever else runs on the machine; costs some throughput)
# Everything listens on 127.0.0.1 only. On exit the stack, smtp-sink and a /etc/postfix/main.cf
# created here are removed again.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MESSAGES=${MESSAGES:-2000}
SESSIONS=${SESSIONS:-10}
WARMUP=${WARMUP:-100}
ROUNDS=${ROUNDS:-2}
RUN_TIMEOUT=${RUN_TIMEOUT:-180}
PORTBASE=${PORTBASE:-16000}
SINK_PORT=${SINK_PORT:-$((PORTBASE + 26))}
RSS_MB=${RSS_MB:-20}
PARTS=${PARTS:-acb}
CONFIGS=${CONFIGS:-none dkim ours pipe}
BIN=$ROOT/target/release
BASE_URL=https://mx.example.test
SENDER=news@example.test
RCPT=rcpt@sink.test
MSG=$ROOT/scripts/bench/newsletter.eml
PY=${PYTHON:-python3}

[ "$(id -u)" -eq 0 ] || { echo "bench-milter.sh must run as root (it runs the mail daemons)" >&2; exit 1; }
for tool in postfix smtp-source smtp-sink postconf opendkim supervisord "$PY"; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh" >&2; exit 1; }
done
[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >/dev/null

WORK=$(mktemp -d -p /tmp bench-milter.XXXXXX)
chmod 755 "$WORK" # postfix, vmail and opendkim must traverse it
DIR=$WORK/stack
SINK_PID=
PERF_PID=
CREATED_ETC_MAINCF=
cleanup() {
  local rc=$?
  set +e
  if [ -n "$SINK_PID" ]; then kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null; fi
  if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null; fi
  if [ -e "$DIR/run/supervisord.pid" ]; then "$ROOT/scripts/stack.sh" down "$DIR" >/dev/null 2>&1; fi
  [ -n "$CREATED_ETC_MAINCF" ] && rm -f /etc/postfix/main.cf
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Busy and total jiffies of the whole machine.
machine_cpu() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }

echo "== bench-milter: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
echo "   (other load on this machine shows up in every number below; (b) prints how busy the CPUs were)"
start=$(now)
(cd "$ROOT" && cargo build --release --workspace --quiet)
echo "-- cargo build --release --workspace: $(calc %.0f "$(now) - $start") s"

# ---------------------------------------------------------------------------------------------
part_a() {
  echo
  echo "== (a) rewrite throughput: inject_message vs lol_html alone (cargo bench --bench rewrite)"
  (cd "$ROOT" && cargo bench --quiet -p mailserver-milter --bench rewrite)
}

# ---------------------------------------------------------------------------------------------
part_c() {
  echo
  echo "== (c) peak RSS of \`mailserver-milter inject --base-url https://x.test\` (/usr/bin/time -f %M)"
  mkdir -p "$WORK/rss"
  (cd "$ROOT" && cargo bench --quiet -p mailserver-milter --bench rewrite -- --emit "$WORK/rss" "$RSS_MB") >/dev/null
  printf 'From: a@example.test\r\nTo: b@x.test\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n' >"$WORK/rss/tiny.eml"
  printf '%-30s %9s %12s %8s %8s  %s\n' message "size MB" "peak RSS MB" "RSS/size" "wall s" result
  local f size rss wall res ratio
  for f in tiny html-8bit html-qp html-base64; do
    size=$(stat -c %s "$WORK/rss/$f.eml")
    /usr/bin/time -f '%M %e' -o "$WORK/rss/$f.time" \
      "$BIN/mailserver-milter" inject --base-url https://x.test <"$WORK/rss/$f.eml" >"$WORK/rss/$f.out" 2>"$WORK/rss/$f.err" || true
    read -r rss wall <"$WORK/rss/$f.time"
    if grep -q 'https://x.test/pixel' "$WORK/rss/$f.out" || [ "$(stat -c %s "$WORK/rss/$f.out")" -gt "$size" ]; then
      res="rewritten (+$(($(stat -c %s "$WORK/rss/$f.out") - size)) bytes)"
    else
      res="NOT rewritten: $(head -c 200 "$WORK/rss/$f.err")"
    fi
    ratio=$(calc %.2f "$rss * 1024 / $size")
    [ "$f" = tiny ] && ratio=-
    printf '%-30s %9s %12s %8s %8s  %s\n' "$f.eml" "$(calc %.2f "$size / 1e6")" "$(calc %.1f "$rss * 1024 / 1e6")" \
      "$ratio" "$wall" "$res"
    rm -f "$WORK/rss/$f.out"
  done
  echo "MB = 10^6 bytes; RSS/size = peak RSS / message size (the tiny message shows the fixed cost of the process)"
}

# ---------------------------------------------------------------------------------------------
CONF= QUEUE= SMTP_PORT= SUPERVISORD_PID=
RESULTS=()
PROFILES=()
stack_up() {
  local p
  for p in $((PORTBASE + 25)) $((PORTBASE + 87)) $((PORTBASE + 65)) $((PORTBASE + 43)) $((PORTBASE + 93)) \
           $((PORTBASE + 10)) $((PORTBASE + 95)) $((PORTBASE + 80)) "$SINK_PORT"; do
    if port_open "$p"; then echo "port $p on 127.0.0.1 is in use: set PORTBASE / SINK_PORT" >&2; exit 1; fi
  done
  local out
  out=$(RELAYHOST="[127.0.0.1]:$SINK_PORT" BIN_DIR=$BIN "$ROOT/scripts/stack.sh" up "$DIR" "$PORTBASE" 2>"$WORK/stack-up.err") ||
    { cat "$WORK/stack-up.err" >&2; exit 1; }
  SMTP_PORT=$(sed -n 's/^SMTP_PORT=//p' <<<"$out")
  SUPERVISORD_PID=$(cat "$DIR/run/supervisord.pid")
  CONF=$DIR/config/postfix
  QUEUE=$(postconf -c "$CONF" -h queue_directory)
  "$BIN/mailserver" --data "$DIR" domain add example.test >/dev/null
  "$BIN/mailserver" --data "$DIR" alias add "$SENDER" someone@example.test --tracking >/dev/null
  mkdir -p "$WORK/pristine" "$WORK/sink"
  chown postfix "$WORK/sink"
  cp "$CONF/main.cf" "$CONF/master.cf" "$WORK/pristine/"
  # A non-root `sendmail -C DIR` (the pipe filter runs as vmail) needs this (recipe G4).
  if [ ! -e /etc/postfix/main.cf ]; then
    echo "alternate_config_directories = $CONF" >/etc/postfix/main.cf
    CREATED_ETC_MAINCF=1
  elif ! postconf -h alternate_config_directories 2>/dev/null | grep -qF "$CONF"; then
    echo "note: /etc/postfix/main.cf exists and does not list $CONF in alternate_config_directories;" \
         "the pipe configuration will fail" >&2
  fi
}

# configure SMTPD_MILTERS NON_SMTPD_MILTERS [pipe]: from the rendered files, then reload.
# (`mailserver apply` would render the files again and undo this: it is not called here.)
configure() {
  cp "$WORK/pristine/main.cf" "$WORK/pristine/master.cf" "$CONF/"
  postconf -c "$CONF" -e "smtpd_milters=$1" "non_smtpd_milters=$2"
  if [ "${3:-}" = pipe ]; then
    # The old design: only the port-25 smtpd filters (recipe G20: pickup is not filtered again).
    postconf -c "$CONF" -M "trackpipe/unix=trackpipe unix - n n - 10 pipe flags=Rq user=vmail null_sender= argv=$ROOT/scripts/bench/trackpipe.sh $BIN/mailserver-milter $BASE_URL $CONF \${sender} \${recipient}"
    postconf -c "$CONF" -P "127.0.0.1:$SMTP_PORT/inet/content_filter=trackpipe:dummy"
  fi
  touch -d '-1 min' "$CONF/main.cf" "$CONF/master.cf" # recipe G7
  postfix -c "$CONF" reload >/dev/null 2>&1
  # Settle: new processes, and the previous smtp-sink's cached connections expire (2 s).
  sleep 2.5
}

queue_left() { find "$QUEUE/incoming" "$QUEUE/active" "$QUEUE/maildrop" -type f 2>/dev/null | wc -l; }
deferred() { find "$QUEUE/deferred" "$QUEUE/hold" -type f 2>/dev/null | wc -l; }
# wait_drained DEADLINE: until incoming, active and maildrop are empty; 1 on timeout
wait_drained() {
  while [ "$(queue_left)" -gt 0 ]; do
    [ "$(date +%s)" -lt "$1" ] || return 1
    sleep 0.05
  done
}
# send COUNT [TIMEFILE]: smtp-source with the newsletter, SESSIONS in parallel, at most RUN_TIMEOUT s
send() {
  local timing=()
  [ -n "${2:-}" ] && timing=(/usr/bin/time -f '%U %S' -o "$2")
  "${timing[@]}" timeout "$RUN_TIMEOUT" smtp-source -s "$SESSIONS" -m "$1" -f "$SENDER" -t "$RCPT" -F "$MSG" "127.0.0.1:$SMTP_PORT" \
    >>"$WORK/smtp-source.log" 2>&1
}
cputree() { "$PY" "$ROOT/scripts/bench/cputree.py" "$@"; }
per_msg() { calc %.2f "($2 - $1) * 1000 / $MESSAGES"; } # BEFORE AFTER (CPU s) -> CPU ms per message

# measure KEY LABEL: one configuration, already configured
measure() {
  local key=$1 label=$2 dump=$WORK/sink/$1.$ROUND
  mkdir -p "$dump"
  chown postfix "$dump"
  smtp-sink -u postfix -d "$dump/m." "127.0.0.1:$SINK_PORT" 1000 >>"$WORK/smtp-sink.log" 2>&1 &
  SINK_PID=$!
  local i
  for i in $(seq 250); do port_open "$SINK_PORT" && break; sleep 0.02; done
  local note=
  if [ "$WARMUP" -gt 0 ]; then
    send "$WARMUP" || note="smtp-source failed in warm-up; "
    wait_drained $(($(date +%s) + 60)) || note="${note}warm-up did not drain; "
  fi
  local milter_pid dkim_pid before after c0 c1 t0 t1 t2 rc=0
  milter_pid=$(supervisorctl -c "$DIR/config/supervisord.conf" pid milter 2>/dev/null || echo 0)
  dkim_pid=$(cat "$DIR/run/opendkim/opendkim.pid" 2>/dev/null || echo 0)
  if [ "${PROFILE:-0}" = 1 ]; then
    perf record -a -F 499 -g -o "$WORK/perf-$key.$ROUND.data" >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 0.5
  fi
  # CPU seconds before: the whole stack (supervisord and below), our milter, OpenDKIM, smtp-sink.
  read -r -d '' -a before < <(cputree "$SUPERVISORD_PID" "$milter_pid" "$dkim_pid" "$SINK_PID") || true
  c0=$(machine_cpu)
  t0=$(now)
  send "$MESSAGES" "$WORK/source.time" || rc=$?
  t1=$(now)
  local status=ok
  [ $rc -eq 0 ] || status="smtp-source exit $rc"
  wait_drained $(($(date +%s) + RUN_TIMEOUT)) || status="TIMEOUT after ${RUN_TIMEOUT}s ($(queue_left) left)"
  t2=$(now)
  read -r -d '' -a after < <(cputree "$SUPERVISORD_PID" "$milter_pid" "$dkim_pid" "$SINK_PID") || true
  c1=$(machine_cpu)
  if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true; PERF_PID=
    PROFILES+=("$label: $(perf report -i "$WORK/perf-$key.$ROUND.data" --no-children --sort comm --stdio 2>/dev/null |
      awk '/^ *[0-9.]+%/ && n < 9 { printf "%s %s  ", $2, $1; n++ }')")
  fi
  kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=
  local busy src_cpu check def
  busy=$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }')
  src_cpu=$(awk '{ print $1 + $2 }' "$WORK/source.time" 2>/dev/null || echo 0)
  check=$("$PY" "$ROOT/scripts/bench/check_sink.py" "$dump")
  def=$(deferred)
  [ "$def" -eq 0 ] || status="$status; $def deferred/held"
  RESULTS+=("$key|$ROUND|$label|$(calc %.2f "$t1 - $t0")|$(calc %.0f "$MESSAGES / ($t1 - $t0)")|$(calc %.2f "$t2 - $t0")|$(calc %.1f "$MESSAGES / ($t2 - $t0)")|$busy|$(per_msg "${before[0]}" "${after[0]}")|$(per_msg "${before[1]}" "${after[1]}")|$(per_msg "${before[2]}" "${after[2]}")|$(calc %.2f "($src_cpu + ${after[3]} - ${before[3]}) * 1000 / $MESSAGES")|$check|$note$status")
  printf '   round %s  %-32s %7s msg/s  (%s)\n' "$ROUND" "$label" "$(calc %.1f "$MESSAGES / ($t2 - $t0)")" "$note$status"
}

part_b() {
  echo
  echo "== (b) msg/s through Postfix: smtp-source -s $SESSIONS -m $MESSAGES -F $(basename "$MSG") ($(stat -c %s "$MSG") bytes, HTML QP in multipart/alternative) -> smtp-sink"
  echo "   stack: scripts/stack.sh up (PORTBASE $PORTBASE), RELAYHOST=[127.0.0.1]:$SINK_PORT, sender $SENDER (tracked alias),"
  echo "   $WARMUP warm-up messages before each measured run, $ROUNDS round(s) of the four configurations"
  stack_up
  local ours dkim
  ours=$(postconf -c "$CONF" -h smtpd_milters)
  dkim="unix:$DIR/run/opendkim/opendkim.sock"
  echo "   rendered smtpd_milters = $ours"
  for ROUND in $(seq "$ROUNDS"); do
    for config in $CONFIGS; do
      case $config in
        none) configure "" ""; measure none "1 no milter" ;;
        dkim) configure "$dkim" "$dkim"; measure dkim "2 OpenDKIM only" ;;
        ours) configure "$ours" "$ours"; measure ours "3 ours + OpenDKIM (tracked)" ;;
        pipe) configure "" "$dkim" pipe; measure pipe "4 old: pipe filter + OpenDKIM" ;;
        *) echo "unknown configuration $config (none dkim ours pipe)" >&2; exit 2 ;;
      esac
    done
  done

  echo
  printf '%-31s %2s %7s %7s %7s %7s %5s | %6s %6s %6s %6s | %s\n' configuration rd "ingest" "in" "total" "msg/s" "busy" \
    stack milter dkim load "sink check (files html pixel dkim)  status"
  printf '%-31s %2s %7s %7s %7s %7s %5s | %27s |\n' "" "" "s" "msg/s" "s" "" "CPU%" "CPU ms per message"
  local r key round label ingest inrate total rate busy stack mcpu dcpu lcpu check status cpu
  declare -A BEST CPU RATE
  for r in "${RESULTS[@]}"; do
    IFS='|' read -r key round label ingest inrate total rate busy stack mcpu dcpu lcpu check status <<<"$r"
    RATE[$key.$round]=$rate
    awk -v a="$rate" -v b="${BEST[$key]:-0}" 'BEGIN { exit !(a > b) }' && BEST[$key]=$rate
    cpu=$(calc %.2f "$stack + $lcpu")
    awk -v a="$cpu" -v b="${CPU[$key]:-1e9}" 'BEGIN { exit !(a < b) }' && CPU[$key]=$cpu
    printf '%-31s %2s %7s %7s %7s %7s %5s | %6s %6s %6s %6s | %s  %s\n' "$label" "$round" "$ingest" "$inrate" "$total" "$rate" \
      "$busy" "$stack" "$mcpu" "$dcpu" "$lcpu" "$check" "$status"
  done
  cat <<'TXT'
ingest: until smtp-source is done; total, msg/s: from the first connection until incoming, active and maildrop are empty.
busy: the whole machine's CPU use during the run (100 = all cores, whatever ran). CPU ms per message: stack = supervisord and
everything below it (Postfix with its smtpd, cleanup, pipe, sendmail/postdrop children; Dovecot; OpenDKIM; our milter), of
which milter and dkim (OpenDKIM); load = smtp-source + smtp-sink. sink check: of the warm-up + measured messages, how many
reached smtp-sink, had an HTML part, exactly one pixel in the decoded HTML, exactly one DKIM-Signature.
TXT
  echo
  if [ "$ROUNDS" -gt 1 ]; then echo "ratios of the best msg/s of each configuration over the $ROUNDS rounds:"; fi
  # The same ratio within each round, whose configurations ran minutes apart rather than up to
  # ROUNDS x 75 s: steadier where the machine's speed drifts. Median over the rounds.
  paired() {
    local n rd list=() median
    [ -n "${BEST[$2]:-}" ] && [ -n "${BEST[$3]:-}" ] || return 0
    for rd in $(seq "$ROUNDS"); do list+=("$(calc %.2f "${RATE[$2.$rd]} / ${RATE[$3.$rd]}")"); done
    median=$(printf '%s\n' "${list[@]}" | sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    n=${#list[@]}
    printf '%-33s = %5s   (median of the %s rounds'"'"' own ratios: %s)\n' "$1" "$median" "$n" "${list[*]}"
  }
  ratio() {
    [ -n "${BEST[$2]:-}" ] && [ -n "${BEST[$3]:-}" ] || return 0 # a configuration left out by CONFIGS
    printf '%-33s = %5s   (%s; from CPU ms per message (stack + load, lowest): %s)\n' "$1" \
      "$(calc %.2f "${BEST[$2]} / ${BEST[$3]}")" "$4" "$(calc %.2f "${CPU[$3]} / ${CPU[$2]}")"
  }
  ratio "ours+OpenDKIM / OpenDKIM alone" ours dkim "goal >= 0.9"
  ratio "ours+OpenDKIM / old pipe design" ours pipe "goal >= 3"
  ratio "OpenDKIM alone / no milter" dkim none "reference: the cost of DKIM signing"
  ratio "OpenDKIM alone / old pipe design" dkim pipe "reference: the bound of the 2nd ratio, a milter costing nothing"
  if [ "$ROUNDS" -gt 1 ]; then
    echo "the same, paired within each round:"
    paired "ours+OpenDKIM / OpenDKIM alone" ours dkim
    paired "ours+OpenDKIM / old pipe design" ours pipe
  fi
  echo "On a machine whose CPUs are saturated (busy ~100), msg/s follows CPU per message, so the second number is the"
  echo "steadier estimate when other work competes for the CPUs."
  if [ ${#PROFILES[@]} -gt 0 ]; then
    echo
    echo "CPU samples per command during each measured run (perf record -a; the whole machine, $(nproc) CPUs):"
    printf '  %s\n' "${PROFILES[@]}"
  fi
}

for p in $(grep -o . <<<"$PARTS"); do
  start=$(now)
  case $p in
    a) part_a ;;
    c) part_c ;;
    b) part_b ;;
    *) echo "unknown part $p in PARTS" >&2; exit 2 ;;
  esac
  echo "-- ($p) took $(calc %.0f "$(now) - $start") s; load average now $(cut -d' ' -f1-3 /proc/loadavg)"
done
