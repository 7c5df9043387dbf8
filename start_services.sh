#!/usr/bin/env bash
# Start the service in the background: Celery worker, Celery beat and Gunicorn.
# Logs go to var/log, PID files to var/run. Running it again starts nothing twice.
# Settings come from the environment and .env (see .env.example); stop with ./stop_services.sh.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"
cd "$ROOT"

ensure_venv "$ROOT/requirements.txt"
eval "$(PYTHONPATH="$ROOT" "$VENV/bin/python" scripts/effective_settings.py)"
# For ./stop_services.sh: the processes keep the settings they started with.
echo "$STOP_GRACE_SECONDS" > "$RUN_DIR/stop-grace-seconds"

# The database first: nothing is started until it exists and is migrated.
PYTHONPATH="$ROOT" "$VENV/bin/python" scripts/ensure_database.py || exit 1

say "Applying database migrations (log: var/log/migrate.log)"
printf '\n=== %s flask db upgrade\n' "$(date -u +%FT%TZ)" >> "$LOG_DIR/migrate.log"
if ! "$VENV/bin/flask" --app app db upgrade >> "$LOG_DIR/migrate.log" 2>&1; then
  tail -n 15 "$LOG_DIR/migrate.log" >&2
  die "the migrations did not apply; the end of var/log/migrate.log is above. Nothing was started."
fi

# A Redis broker on this machine that is not running: start one, if we can.
if [[ "$BROKER_URL" =~ ^redis://([^@/]*@)?(localhost|127\.0\.0\.1)(:([0-9]+))?(/|$) ]]; then
  redis_port="${BASH_REMATCH[4]:-6379}"
  if ! "$VENV/bin/python" -c "import redis, sys; redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()" "$BROKER_URL" 2>/dev/null; then
    command -v redis-server >/dev/null || die "Redis at $BROKER_URL does not answer and redis-server is not installed."
    say "Starting redis-server on port $redis_port"
    # Nothing precious lives in Redis here (transactions wait in the database), so no persistence.
    nohup redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
      >> "$LOG_DIR/redis.log" 2>&1 &
    echo $! > "$RUN_DIR/redis.pid"
    for _ in $(seq 50); do
      "$VENV/bin/python" -c "import redis, sys; redis.Redis.from_url(sys.argv[1]).ping()" "$BROKER_URL" 2>/dev/null && break
      sleep 0.1
    done
  fi
fi

# start NAME MATCH: run the Procfile's NAME process in the background, unless it already runs.
start() {
  local name="$1" match="$2" command
  if pid_alive "$RUN_DIR/$name.pid" "$match"; then
    say "$name already running (pid $(cat "$RUN_DIR/$name.pid"))"
    return
  fi
  command="$(sed -n "s/^$name: *//p" Procfile)"
  [ -n "$command" ] || die "no $name process in the Procfile"
  read -ra command <<< "$command"
  command[0]="$VENV/bin/${command[0]}"
  # Output goes through a FIFO to scripts/rotating_log.py, which rotates var/log/NAME.log by
  # size between two lines (LOG_MAX_BYTES, LOG_BACKUPS) and exits once the process has.
  local fifo="$RUN_DIR/$name.log.fifo"
  rm -f "$fifo" && mkfifo "$fifo"
  nohup "$VENV/bin/python" scripts/rotating_log.py "$LOG_DIR/$name.log" < "$fifo" >/dev/null 2>&1 &
  nohup "${command[@]}" > "$fifo" 2>&1 &
  echo $! > "$RUN_DIR/$name.pid"
  say "Started $name (pid $!), log: var/log/$name.log"
}

# Metrics files from an earlier run would add old counts to new ones; start empty.
# (Not while something still runs: its open files would be lost from /metrics.)
if ! pid_alive "$RUN_DIR/web.pid" gunicorn && ! pid_alive "$RUN_DIR/worker.pid" celery; then
  rm -rf "$ROOT/var/prometheus"
fi

start worker celery
start beat celery
start web gunicorn

url="http://127.0.0.1:$PORT"
for _ in $(seq 300); do
  if "$VENV/bin/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url/" 2>/dev/null; then
    say "The service answers at $url (health: $url/)"
    # Webhooks are accepted without a broker, so that is not a reason to fail; but nothing
    # is processed until it answers, and a mistyped REDIS_URL should not go unnoticed.
    broker="$(PYTHONPATH="$ROOT" "$VENV/bin/python" scripts/broker_status.py "$url/health/ready")"
    case "$broker" in
      up) ;;
      down) say "warning: the broker does not answer ($url/health/ready): webhooks are accepted and wait in the database, but none is processed until it does; see var/log/worker.log." >&2 ;;
      *) say "warning: $url/health/ready could not be read ($broker); see var/log/web.log." >&2 ;;
    esac
    exit 0
  fi
  pid_alive "$RUN_DIR/web.pid" gunicorn || { tail -n 30 "$LOG_DIR/web.log" >&2; die "Gunicorn exited; its log is above."; }
  sleep 0.1
done
tail -n 30 "$LOG_DIR/web.log" >&2
die "nothing answered at $url within 30 s; see var/log/web.log."
