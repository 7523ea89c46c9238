#!/usr/bin/env bash
# Container entrypoint: prepare /data with `mailserver init`, then run the daemons under supervisord,
# or the given command instead (e.g. `docker compose run --rm mailserver mailserver domain list`).
set -euo pipefail

DATA_DIR=${DATA_DIR:-/data}
export DATA_DIR

if [ $# -eq 0 ]; then
  # A restarted container finds the previous run's pid files; their pids may now belong to other
  # processes, which init's reload step would signal. Only when starting the daemons: a one-off
  # command may share the volume with a running stack whose pid files are live.
  rm -f "$DATA_DIR/run/supervisord.pid" \
        "$DATA_DIR/run/dovecot/master.pid" \
        "$DATA_DIR/run/opendkim/opendkim.pid" \
        "$DATA_DIR/spool/postfix/pid/master.pid"
fi

mailserver --data "$DATA_DIR" init

if [ $# -gt 0 ]; then
  exec "$@"
fi
exec supervisord -n -c "$DATA_DIR/config/supervisord.conf"
