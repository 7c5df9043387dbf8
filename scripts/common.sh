# Shell helpers shared by start_services.sh, stop_services.sh and run_tests.sh.
# Processes are tracked by PID files under var/run, never found by name.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
RUN_DIR="$ROOT/var/run"
LOG_DIR="$ROOT/var/log"
mkdir -p "$RUN_DIR" "$LOG_DIR"

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Create .venv on first use and (re)install a requirements file whenever it changes.
ensure_venv() {
  local requirements="$1"
  local python="${PYTHON:-python3}"
  command -v "$python" >/dev/null || die "$python not found: install Python 3.11 or newer."
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "Python 3.11 or newer is needed; $python is $("$python" --version 2>&1)."
  if [ ! -x "$VENV/bin/python" ]; then
    say "Creating $VENV"
    "$python" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  local stamp="$VENV/.installed-$(basename "$requirements")"
  local digest
  digest="$(cat "$ROOT/requirements.txt" "$requirements" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    say "Installing $(basename "$requirements") into .venv (a minute or two the first time)"
    "$VENV/bin/python" -m pip install --quiet -r "$requirements"
    echo "$digest" > "$stamp"
  fi
}

# True when the PID file names a live process whose command line contains $2.
pid_alive() {
  local pidfile="$1" expected="$2" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$expected"
}

# TERM, wait up to $3 seconds, then KILL; only the process in the PID file.
stop_pidfile() {
  local pidfile="$1" expected="$2" grace="${3:-30}" pid
  if ! pid_alive "$pidfile" "$expected"; then
    rm -f "$pidfile"
    return 0
  fi
  pid="$(cat "$pidfile")"
  say "Stopping $(basename "$pidfile" .pid) (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq $((grace * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "  still running after ${grace}s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}
