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

# True while $1 runs. A process that has exited but not yet been reaped (a zombie) has
# stopped: kill -0 still succeeds on it, and under some init processes (this project's CI
# VM among them) the reaping of an orphan waits a second or two.
process_running() {
  local state
  state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
  [ -n "$state" ] && [ "$state" != Z ]
}

# True when the PID file names a live process whose command line contains $2.
pid_alive() {
  local pidfile="$1" expected="$2" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && process_running "$pid" || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$expected"
}

# stop_pidfiles GRACE PIDFILE:MATCH...: TERM every process named at once, wait for each to
# exit (up to GRACE seconds, enough for work in flight), then KILL what is left. Stopping
# them together, not one after another, makes the wait the slowest one's, not the sum.
stop_pidfiles() {
  local grace="$1" entry pidfile name pid started elapsed
  shift
  local -A pids=() files=()
  started="$(date +%s%N)"
  for entry in "$@"; do
    pidfile="${entry%%:*}"
    name="$(basename "$pidfile" .pid)"
    if pid_alive "$pidfile" "${entry#*:}"; then
      pids[$name]="$(cat "$pidfile")"
      files[$name]="$pidfile"
      kill -TERM "${pids[$name]}" 2>/dev/null || true
    else
      rm -f "$pidfile"
    fi
  done
  [ "${#pids[@]}" -gt 0 ] || return 0
  say "Stopping ${!pids[*]} (in-flight work finishes first; up to ${grace} s)"
  for _ in $(seq $((grace * 20))); do
    for name in "${!pids[@]}"; do
      if ! process_running "${pids[$name]}"; then
        elapsed="$((($(date +%s%N) - started) / 1000000))"
        say "  $name stopped in $((elapsed / 1000)).$(printf '%03d' $((elapsed % 1000)) | cut -c1) s"
        rm -f "${files[$name]}"
        unset "pids[$name]"
      fi
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    sleep 0.05
  done
  for name in "${!pids[@]}"; do
    say "  $name still running after ${grace} s; sending KILL"
    kill -KILL "${pids[$name]}" 2>/dev/null || true
    rm -f "${files[$name]}"
  done
}
