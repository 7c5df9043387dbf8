#!/usr/bin/env bash
# Run the whole test suite against a real PostgreSQL and Redis.
# Creates .venv if needed, installs the requirements, makes sure PostgreSQL and
# Redis answer (starting or installing them where it can) and that Debian's chromium
# is installed (for the browser tests), then runs pytest.
# Each test session creates its own throwaway PostgreSQL database and drops it.
# Arguments go to pytest: ./run_tests.sh -k webhooks -x
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"
cd "$ROOT"

PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgresql+psycopg2://$PGUSER@$PGHOST:$PGPORT/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

apt_install() {
  command -v apt-get >/dev/null || return 1
  say "Installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { as_root apt-get update -q >/dev/null 2>&1 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

postgres_answers() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }
redis_answers() { redis-cli -u "$TEST_REDIS_URL" ping 2>/dev/null | grep -q PONG; }

ensure_postgres() {
  command -v pg_isready >/dev/null || apt_install postgresql postgresql-client \
    || die "PostgreSQL is needed at $PGHOST:$PGPORT and is not installed (nor installable here). Install it, or set TEST_POSTGRES_URL."
  postgres_answers && return
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    say "Starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
  for _ in $(seq 30); do postgres_answers && return; sleep 1; done
  die "PostgreSQL does not answer at $PGHOST:$PGPORT. Start it, or set TEST_POSTGRES_URL."
}

ensure_redis() {
  command -v redis-server >/dev/null || apt_install redis-server \
    || die "Redis is needed (redis-server) and is not installed (nor installable here). Install it, or set TEST_REDIS_URL."
  redis_answers && return
  say "Starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --logfile "$LOG_DIR/redis-tests.log" >/dev/null
  for _ in $(seq 30); do redis_answers && return; sleep 0.5; done
  die "Redis does not answer at $TEST_REDIS_URL. Start it, or set TEST_REDIS_URL."
}

# The browser tests drive Debian's chromium through Playwright, which cannot download
# a browser of its own here; without it they fail (never skip) and say so.
ensure_chromium() {
  [ -x /usr/bin/chromium ] || apt_install chromium \
    || die "Chromium is needed at /usr/bin/chromium for the browser tests and is not installed (nor installable here). Install it: apt-get install -y chromium."
  [ -x /usr/bin/chromium ] || die "apt-get installed chromium, but /usr/bin/chromium is missing."
}

ensure_venv "$ROOT/requirements-dev.txt"
ensure_postgres
ensure_redis
ensure_chromium
say "Lint: ruff"
"$VENV/bin/ruff" check --quiet . && "$VENV/bin/ruff" format --check --quiet . \
  || die "ruff found problems (fix with: .venv/bin/ruff check --fix . && .venv/bin/ruff format .)"
say "PostgreSQL at $PGHOST:$PGPORT and Redis at $TEST_REDIS_URL answer, chromium is installed; running the tests"
exec "$VENV/bin/python" -m pytest "$@"
