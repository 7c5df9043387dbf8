#!/usr/bin/env bash
# Stop what ./start_services.sh started, by PID file only.
# Web, worker and beat get TERM together: Gunicorn finishes in-flight requests (up to its
# graceful_timeout, 30 s), the Celery worker finishes its current task and leaves the rest
# with the broker (warm shutdown, up to the task time limit, 60 s). Beat stops after the
# worker: an idle worker notices the TERM only when its broker poll returns, which beat's
# tick each second makes happen soon (with beat gone it would wait out two 2 s polls).
# Redis, if start_services.sh started one, stops last: the worker may still acknowledge.
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"

stop_pidfiles 65 "$RUN_DIR/web.pid:gunicorn" "$RUN_DIR/worker.pid:celery"
stop_pidfiles 10 "$RUN_DIR/beat.pid:celery"
stop_pidfiles 10 "$RUN_DIR/redis.pid:redis-server"
rm -f "$RUN_DIR"/*.log.fifo  # the log writers (scripts/rotating_log.py) end with their process
say "Stopped."
