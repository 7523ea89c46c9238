#!/usr/bin/env bash
# The native stack: Postfix, Dovecot, OpenDKIM, mailserver-milter and mailserver-web on 127.0.0.1,
# run by supervisord from the same templates (docker/templates) and commands the image uses.
#
#   scripts/stack.sh up DIR [PORTBASE]   init DIR, start everything, print NAME=VALUE lines when ready
#   scripts/stack.sh down DIR            stop everything started for DIR
#
# Ports: PORTBASE+25 smtp, +87 submission, +65 smtps, +43 imap, +93 imaps, +10 pop3, +95 pop3s,
# +80 dashboard (HTTPS). PORTBASE defaults to 10000. Installs nothing (scripts/test.sh does).
# Environment: RELAYHOST (e.g. [127.0.0.1]:2626) relays all outbound mail there; MAIL_HOSTNAME
# (default mx.example.test); BIN_DIR (default target/release, built when missing).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { echo "usage: $0 up DIR [PORTBASE] | down DIR" >&2; exit 2; }
now() { date +%s.%N; }
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [ -n "$st" ] && [ "$st" != Z ]; }
pid_of() { [ -s "$1" ] && tr -d ' \n' < "$1"; }
wait_port() {
  local i
  for i in $(seq 1500); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.02; done
  echo "stack: port $1 did not open within 30 s" >&2; return 1
}
wait_socket() {
  local i
  for i in $(seq 1500); do [ -S "$1" ] && return 0; sleep 0.02; done
  echo "stack: socket $1 did not appear within 30 s" >&2; return 1
}
wait_gone() {
  local i
  for i in $(seq 1500); do alive "$1" || return 0; sleep 0.02; done
  echo "stack: pid $1 still alive after 30 s" >&2; return 1
}

up() {
  local dir=$1 base=${2:-10000}
  local bin=${BIN_DIR:-$ROOT/target/release}
  if [ ! -x "$bin/mailserver" ] || [ ! -x "$bin/mailserver-milter" ] || [ ! -x "$bin/mailserver-web" ]; then
    [ -n "${BIN_DIR:-}" ] && { echo "stack: BIN_DIR=$BIN_DIR lacks the binaries" >&2; exit 1; }
    (cd "$ROOT" && cargo build --release --workspace --quiet)
  fi
  mkdir -p "$dir"
  dir=$(readlink -f "$dir")
  local sup_pid
  sup_pid=$(pid_of "$dir/run/supervisord.pid" || true)
  if [ -n "$sup_pid" ] && alive "$sup_pid"; then
    echo "stack: already running for $dir (supervisord pid $sup_pid)" >&2; exit 1
  fi
  local t0; t0=$(now)
  export DATA_DIR=$dir BIN_DIR=$bin
  export HOSTNAME=${MAIL_HOSTNAME:-mx.example.test}
  export LISTEN_ADDRESS=127.0.0.1 RELAYHOST=${RELAYHOST:-}
  export SMTP_PORT=$((base + 25)) SUBMISSION_PORT=$((base + 87)) SMTPS_PORT=$((base + 65))
  export IMAP_PORT=$((base + 43)) IMAPS_PORT=$((base + 93)) POP3_PORT=$((base + 10))
  export POP3S_PORT=$((base + 95)) WEB_PORT=$((base + 80))
  "$bin/mailserver" --data "$dir" init
  # stdio to files: Dovecot keeps inherited descriptors open, which hangs callers reading a pipe (G10).
  supervisord -c "$dir/config/supervisord.conf" </dev/null >>"$dir/log/stack.out" 2>&1
  for p in $SMTP_PORT $SUBMISSION_PORT $SMTPS_PORT $IMAP_PORT $IMAPS_PORT $POP3_PORT $POP3S_PORT $WEB_PORT; do
    wait_port "$p" || { tail -n 20 "$dir"/log/*.log "$dir"/log/*.out >&2 || true; exit 1; }
  done
  for s in "$dir/run/milter/milter.sock" "$dir/run/opendkim/opendkim.sock" \
           "$dir/run/dovecot/lmtp" "$dir/run/dovecot/auth-postfix"; do
    wait_socket "$s" || { tail -n 20 "$dir"/log/*.log "$dir"/log/*.out >&2 || true; exit 1; }
  done
  cat <<OUT
DATA_DIR=$dir
SMTP_PORT=$SMTP_PORT
SUBMISSION_PORT=$SUBMISSION_PORT
SMTPS_PORT=$SMTPS_PORT
IMAP_PORT=$IMAP_PORT
IMAPS_PORT=$IMAPS_PORT
POP3_PORT=$POP3_PORT
POP3S_PORT=$POP3S_PORT
WEB_PORT=$WEB_PORT
UP_SECONDS=$(echo "$(now) - $t0" | bc)
OUT
}

down() {
  local dir; dir=$(readlink -f "$1")
  local pid
  pid=$(pid_of "$dir/run/supervisord.pid" || true)
  if [ -n "$pid" ] && alive "$pid"; then
    kill -TERM "$pid"
    wait_gone "$pid"
  fi
  # Belt and braces: anything supervisord did not take down.
  pid=$(pid_of "$dir/spool/postfix/pid/master.pid" || true)
  if [ -n "$pid" ] && alive "$pid"; then
    postfix -c "$dir/config/postfix" stop >/dev/null 2>&1 || kill -TERM "$pid" || true
    wait_gone "$pid" || true
  fi
  pid=$(pid_of "$dir/run/dovecot/master.pid" || true)
  if [ -n "$pid" ] && alive "$pid"; then kill -TERM "$pid" || true; wait_gone "$pid" || true; fi
  pid=$(pid_of "$dir/run/opendkim/opendkim.pid" || true)
  if [ -n "$pid" ] && alive "$pid"; then kill -KILL "$pid" || true; wait_gone "$pid" || true; fi
  echo "stack: down $dir"
}

case "${1:-}" in
  up) [ $# -ge 2 ] || usage; up "$2" "${3:-10000}" ;;
  down) [ $# -eq 2 ] || usage; down "$2" ;;
  *) usage ;;
esac
