#!/usr/bin/env bash
# THE test command (README): installs what it needs, builds, and runs every test:
#   1. every Rust test: the pure ones plus those behind the `system-tests` feature, which need
#      root, the daemon users, Debian's daemons, a stack or Chromium (cargo test --all-features)
#   2. the end-to-end tests against the real daemons on loopback (pytest tests/e2e)
#   3. the same end-to-end tests against the container, plus the container-only ones
#      (scripts/docker-test.sh; reported as SKIPPED when no Docker engine answers)
# Test logs of the stacks are kept under test-output/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh must run as root (it installs packages and runs the mail daemons)" >&2
  exit 1
fi
scripts/install-deps.sh
command -v cargo >/dev/null || { echo "cargo is required (rustup)" >&2; exit 1; }

echo "== build (release binaries for the stack)"
cargo build --release --workspace --locked

echo "== cargo test (with the system tests)"
cargo test --workspace --locked --all-features

echo "== end-to-end tests against the real daemons"
.venv/bin/python -m pytest -q tests/e2e

echo "== container tests (the image, built and run with docker compose)"
scripts/docker-test.sh
