"""Gunicorn settings, from the environment (and .env): `gunicorn -c gunicorn.conf.py`."""

import multiprocessing
import os
from pathlib import Path

from dotenv import load_dotenv

load_dotenv(Path(__file__).resolve().parent / ".env", override=False)

wsgi_app = "app:create_app()"
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"

# Sync workers: a request holds its worker only for a commit (a few ms), and
# sync beats gthread for this kind of endpoint. Heroku sets WEB_CONCURRENCY per dyno size.
worker_class = "sync"
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() * 2 + 1)

# Workers signal liveness by touching a file; in memory, not on a (container) disk.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# A request that takes longer than this is stuck; the worker is replaced.
timeout = 30
# On TERM, in-flight requests get this long to finish.
graceful_timeout = 30

loglevel = os.environ.get("LOG_LEVEL", "info").lower()
errorlog = "-"

# Gunicorn's control socket sits at one fixed path per user, so two instances
# on one machine (tests, benchmarks) would fight over it; nothing here uses it.
control_socket_disable = True
