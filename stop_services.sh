#!/usr/bin/env bash
# Stop what ./start_services.sh started, by PID file only.
# Web and worker get TERM together: Gunicorn finishes in-flight requests (up to its
# graceful_timeout, 30 s), the Celery worker finishes its current tasks and leaves the rest
# with the broker (warm shutdown, up to the task time limit). Beat stops after the worker: an idle worker notices the TERM only when its broker poll returns, which beat's
# tick each second makes happen soon (with beat gone it would wait out two 2 s polls).
# Redis, if start_services.sh started one, stops last: the worker may still acknowledge.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"

# Up to the task time limit the services started with (start_services.sh wrote it), then KILL.
grace="$(cat "$RUN_DIR/stop-grace-seconds" 2>/dev/null || echo 120)"
stop_pidfiles "$grace" "$RUN_DIR/web.pid:gunicorn" "$RUN_DIR/worker.pid:celery"
stop_pidfiles 10 "$RUN_DIR/beat.pid:celery"
stop_pidfiles 10 "$RUN_DIR/redis.pid:redis-server"
rm -f "$RUN_DIR/stop-grace-seconds"
rm -f "$RUN_DIR"/*.log.fifo  # the log writers (scripts/rotating_log.py) end with their process
say "Stopped."
