#!/usr/bin/env bash
# Healthy when every public service accepts connections and both milter sockets exist.
# The ports are the in-container defaults (src/settings.rs), not the published ones.
set -euo pipefail

DATA_DIR=${DATA_DIR:-/data}

for port in 25 587 465 143 993 110 995 8080; do
  if ! timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$port" 2>/dev/null; then
    echo "port $port is not accepting connections" >&2
    exit 1
  fi
done

for sock in "$DATA_DIR/run/milter/milter.sock" "$DATA_DIR/run/opendkim/opendkim.sock"; do
  if [ ! -S "$sock" ]; then
    echo "socket $sock is missing" >&2
    exit 1
  fi
done
