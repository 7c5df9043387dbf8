#!/usr/bin/env bash
# Run the whole test suite against a real PostgreSQL and Redis.
# Creates .venv if needed, installs the requirements, makes sure PostgreSQL answers,
# redis-server is installed and Debian's chromium too (for the browser tests), starting or
# installing them where it can, then runs pytest.
# Each test session creates its own throwaway PostgreSQL database and drops it, and
# starts its own redis-server on a free port: a Redis already running here is not touched.
# Arguments go to pytest: ./run_tests.sh -k webhooks -x
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"
cd "$ROOT"

PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgresql+psycopg2://$PGUSER@$PGHOST:$PGPORT/postgres}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

apt_install() {
  command -v apt-get >/dev/null || return 1
  say "Installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { as_root apt-get update -q >/dev/null 2>&1 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

postgres_answers() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }

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

# The tests run redis-server themselves (tests/conftest.py), each session on a free port,
# so only the program is needed. TEST_REDIS_URL names a Redis to use instead (it must be empty).
ensure_redis() {
  [ -z "${TEST_REDIS_URL:-}" ] || return 0
  command -v redis-server >/dev/null || apt_install redis-server \
    || die "redis-server is needed and is not installed (nor installable here). Install it, or set TEST_REDIS_URL to an empty Redis database."
}

# Tools some tests call: ip (tests/test_redis_isolation.py brings up a namespace's
# loopback) and openssl (tests/test_redis_tls.py makes a self-signed certificate).
ensure_tools() {
  command -v ip >/dev/null || apt_install iproute2 || die "ip (iproute2) is needed by the tests."
  command -v openssl >/dev/null || apt_install openssl || die "openssl is needed by the tests."
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
ensure_tools
ensure_chromium
say "Lint: ruff"
"$VENV/bin/ruff" check --quiet . && "$VENV/bin/ruff" format --check --quiet . \
  || die "ruff found problems (fix with: .venv/bin/ruff check --fix . && .venv/bin/ruff format .)"
say "PostgreSQL at $PGHOST:$PGPORT answers; Redis: ${TEST_REDIS_URL:-a redis-server the tests start}; chromium is installed; running the tests"
# Three test files at a time (pytest-xdist, a file per worker so that module fixtures hold):
# most tests wait on real processes, sockets and sleeps, so three share two cores well, and
# the suite takes about 5.5 minutes instead of 13. Pass -n 0 to run them one at a time.
exec "$VENV/bin/python" -m pytest -n 3 --dist loadfile "$@"
