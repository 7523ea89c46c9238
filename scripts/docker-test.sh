#!/usr/bin/env bash
# The container tests (scripts/test.sh runs this): build the image from nothing, start it with the
# project's own docker-compose.yml, and run the same end-to-end suite as the native stack against the
# container's published ports (tests/e2e with E2E_TARGET=container), plus the container-only tests
# (persistence, supervision, users, image contents).
#
# Our machines reach no container registry, so the base image debian:bookworm-slim is made here
# (scripts/docker-base.sh) and the Rust binaries come from the host build (PREBUILT=1, see the
# Dockerfile). Compose v2 (`docker compose`) is installed from Debian's docker-compose package when the
# engine's CLI lacks it; the suite runs with v2 and the container-only tests also drive v1
# (`docker-compose`), which must accept the same file.
#
# Without a Docker engine it prints "SKIPPED: ..." with the reason and exits 0.
# Environment: DOCKER_PORTBASE (default 23000: smtp 23025, submission 23087, ... web 23080),
#   E2E_COMPOSE_PROJECT (default mailserver-e2e), FRESH=1 (remove the images first and build without
#   cache, to time a build from nothing), KEEP=1 (leave the project running afterwards).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if ! command -v docker >/dev/null; then
  echo "SKIPPED: container tests: no docker command on this machine"
  exit 0
fi
if ! reason=$(docker info 2>&1 >/dev/null); then
  echo "SKIPPED: container tests: the Docker engine does not answer: ${reason:0:200}"
  exit 0
fi

PROJECT=${E2E_COMPOSE_PROJECT:-mailserver-e2e}
BASE=${DOCKER_PORTBASE:-23000}
IMAGE=mailserver:latest

# Compose v2 as a CLI plugin, from Debian's docker-compose package (trixie; a static Go binary).
install_compose_v2() {
  docker compose version >/dev/null 2>&1 && return 0
  echo "== installing the Compose v2 CLI plugin (Debian's docker-compose package)"
  local tmp; tmp=$(mktemp -d)
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  cat >"$tmp/trixie.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  local opts=(-o "Dir::Etc::SourceList=$tmp/trixie.sources" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -qq
  (cd "$tmp" && apt-get "${opts[@]}" download docker-compose >/dev/null)
  dpkg-deb -x "$tmp"/docker-compose_*.deb "$tmp/x"
  install -D -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" \
    /usr/local/lib/docker/cli-plugins/docker-compose
  rm -rf "$tmp"
  docker compose version
}
install_compose_v2
command -v docker-compose >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
}

work=$(mktemp -d -p /tmp docker-e2e.XXXXXX)
compose() { docker compose -p "$PROJECT" --env-file "$work/test.env" "$@"; }
cleanup() {
  if [ -z "${KEEP:-}" ]; then
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$work"
  else
    echo "KEEP=1: project $PROJECT left running; env file $work/test.env"
  fi
}
trap cleanup EXIT

if [ -n "${FRESH:-}" ]; then
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  docker rmi -f "$IMAGE" debian:bookworm-slim >/dev/null 2>&1 || true
fi

t_build=$(date +%s)
scripts/docker-base.sh
# The host's release binaries (scripts/test.sh built them), linked against the same bookworm glibc.
[ -x target/release/mailserver-web ] || cargo build --release --workspace --locked
mkdir -p prebuilt
install -m 0755 target/release/mailserver target/release/mailserver-milter target/release/mailserver-web prebuilt/

# The container relays outbound mail to the tests' capture server, listening on the host's docker0
# address (the container reaches the host there; nothing leaves the machine).
gateway=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
[ -n "$gateway" ] || gateway=$(ip -4 -o addr show docker0 | awk '{split($4, a, "/"); print a[1]; exit}')
[ -n "$gateway" ] || { echo "docker-test: cannot find the docker0 bridge address" >&2; exit 1; }
capture_port=$((BASE + 626))
cat >"$work/test.env" <<EOF
HOSTNAME=mx.example.test
PREBUILT=1
BIND_ADDRESS=127.0.0.1
RELAYHOST=[$gateway]:$capture_port
SMTP_PORT=$((BASE + 25))
SUBMISSION_PORT=$((BASE + 87))
SMTPS_PORT=$((BASE + 65))
IMAP_PORT=$((BASE + 43))
IMAPS_PORT=$((BASE + 93))
POP3_PORT=$((BASE + 10))
POP3S_PORT=$((BASE + 95))
WEB_PORT=$((BASE + 80))
EOF

echo "== docker compose build"
compose down -v --remove-orphans >/dev/null 2>&1 || true
build_args=()
[ -n "${FRESH:-}" ] && build_args+=(--no-cache)
compose build "${build_args[@]}" >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }
t_build=$(( $(date +%s) - t_build ))

echo "== docker compose up -d (empty volume)"
t_up=$(date +%s.%N)
compose up -d
cid=$(compose ps -q mailserver)
for _ in $(seq 240); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$cid")
  [ "$status" = healthy ] && break
  [ "$status" = unhealthy ] && break
  sleep 0.25
done
if [ "$status" != healthy ]; then
  echo "the container is $status" >&2
  docker logs "$cid" 2>&1 | tail -n 40 >&2
  exit 1
fi
t_up=$(echo "$(date +%s.%N) - $t_up" | bc)

echo "== end-to-end tests against the container"
export E2E_TARGET=container E2E_COMPOSE="docker compose" E2E_COMPOSE_PROJECT=$PROJECT
export E2E_ENV_FILE=$work/test.env E2E_CAPTURE_HOST=$gateway E2E_CAPTURE_PORT=$capture_port
export E2E_PORTBASE=$BASE
rm -f test-output/container-figures.txt
.venv/bin/python -m pytest -q tests/e2e

# Figures for the notes (not asserted): the image, and the idle container after the tests.
cid=$(compose ps -q mailserver)
sleep 5
mem=$(docker stats --no-stream --format '{{.MemUsage}}' "$cid")
size=$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')
cat test-output/container-figures.txt
echo "container figures: image $IMAGE $size; build ${t_build} s (base image, binaries, compose build);" \
     "up to healthy $(printf '%.1f' "$t_up") s; idle memory $mem"
