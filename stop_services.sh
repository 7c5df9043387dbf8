#!/usr/bin/env bash
# Stop what ./start_services.sh started, by PID file only.
# Gunicorn finishes in-flight requests; the Celery worker finishes its current
# task and leaves the rest with the broker (warm shutdown).
set -euo pipefail
source "$(dirname "$0")/scripts/common.sh"

stop_pidfile "$RUN_DIR/web.pid" gunicorn 35
stop_pidfile "$RUN_DIR/beat.pid" celery 10
stop_pidfile "$RUN_DIR/worker.pid" celery 65
stop_pidfile "$RUN_DIR/redis.pid" redis-server 10
say "Stopped."
