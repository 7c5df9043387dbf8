"""Gunicorn settings, from the environment (and .env): `gunicorn -c gunicorn.conf.py`."""

import gc
import multiprocessing
import os
from pathlib import Path

from dotenv import load_dotenv

ROOT = Path(__file__).resolve().parent
load_dotenv(ROOT / ".env", override=False)

# Prometheus multiprocess mode: every worker adds to one set of metrics. It must be
# on before prometheus_client is first imported, so before anything from `app`.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(ROOT / "var" / "prometheus"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

from gunicorn import glogging  # noqa: E402

from app import open_files  # noqa: E402
from app.config import load_config  # noqa: E402
from app.logs import formatter  # noqa: E402

wsgi_app = "app:create_app()"
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"

# gevent workers: a client that sends its request one byte at a time, or opens a
# socket and sends nothing, holds a greenlet, not a process; with sync workers five
# such sockets stalled the whole service (README, "One pool for both sides").
# psycopg2 is made cooperative in create_app. Heroku sets WEB_CONCURRENCY per dyno size.
# The class is Gunicorn's gevent worker, writing its own error pages (400, 414, 431,
# 500) as the API's problem+json (app/web/server.py).
worker_class = "app.web.server.ProblemGeventWorker"
# Connections (green threads) per worker. Past this, gevent stops accepting, and every
# new connection, a health check's too, waits in the kernel's accept queue behind the
# ones already there until a held socket's deadline (keepalive 2 s, BODY_READ_SECONDS
# for a body) frees a place. At 1,000, 3,000 trickling sockets on two workers made
# `GET /` wait 2 to 6 s with the CPU far from busy. A held socket costs a green thread
# of about 23 KB and a file descriptor: no more than the open-files limit, raised
# first, leaves room for (app/open_files.py).
open_files.raise_limit()
worker_connections = min(4000, open_files.connections_allowed())
# Seconds to wait for the next request's line and headers on a connection, the first
# request included: under gevent workers this is also the deadline for the headers.
# An idle socket, or one trickling its headers, is closed after it.
keepalive = 2
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() * 2 + 1)

# Workers signal liveness by touching a file; in memory, not on a (container) disk.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# A request that takes longer than this is stuck; the worker is replaced.
timeout = 30
# On TERM, in-flight requests get this long to finish.
graceful_timeout = 30

# (Not named `config`: Gunicorn would read that as its own setting.)
app_config = load_config()

loglevel = app_config["LOG_LEVEL"].lower()
errorlog = "-"
# No access log: the app logs one line per request itself, with its request id.


class AppFormatLogger(glogging.Logger):
    """Gunicorn's own lines in the app's format (text, or JSON with LOG_FORMAT=json).

    Gunicorn calls setup() before its first line and again on HUP. (Its
    logconfig_dict setting would do the same, but it switches on the access log's
    per-request work, about 5% of a webhook's CPU, even with no access log.)
    """

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter(app_config["LOG_FORMAT"]))


logger_class = AppFormatLogger

# Gunicorn's control socket sits at one fixed path per user, so two instances
# on one machine (tests, benchmarks) would fight over it; nothing here uses it.
control_socket_disable = True


def on_starting(server):
    if not app_config["WEBHOOK_SECRETS"]:
        server.log.warning(
            "WEBHOOK_SECRET is not set: unsigned webhooks are accepted. "
            "Set it to require Standard Webhooks signatures."
        )
    if not (app_config["API_READ_TOKENS"] or app_config["API_ADMIN_TOKENS"]):
        server.log.warning(
            "API_READ_TOKENS and API_ADMIN_TOKENS are not set: anyone can read transactions "
            "and metrics, and re-drive. Set them to require Authorization: Bearer <token>."
        )


def post_worker_init(worker):
    # The app is loaded, and what exists now lives as long as the worker: frozen, the
    # garbage collector stops walking it on each full collection (as the Celery
    # worker does, app/extensions.py).
    gc.freeze()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
