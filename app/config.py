"""Settings, read from the environment (and `.env`) once, when the app is created.

With nothing configured the service runs on a machine that has only Python:
SQLite for the data and a SQLite file as the Celery broker, both under `var/`.
"""

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from app import embedded_broker, open_files
from app.web.signatures import parse_secrets

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = PROJECT_ROOT / "var"

# Webhook bodies are a few hundred bytes; anything past this is refused with 413.
MAX_WEBHOOK_BYTES = 64 * 1024


def database_url(raw: str | None) -> str:
    """The SQLAlchemy URL for DATABASE_URL, or the embedded SQLite file."""
    if not raw:
        return f"sqlite:///{VAR_DIR / 'webhooks.sqlite3'}"
    # Heroku hands out postgres://, and SQLAlchemy 2.1 maps a bare postgresql://
    # to psycopg 3; we ship psycopg2.
    for scheme in ("postgres://", "postgresql://"):
        if raw.startswith(scheme):
            return "postgresql+psycopg2://" + raw.removeprefix(scheme)
    return raw


def broker_url(env: Mapping[str, str]) -> str:
    """CELERY_BROKER_URL, else REDIS_URL, else kombu's SQLAlchemy transport on SQLite."""
    return (
        env.get("CELERY_BROKER_URL")
        or env.get("REDIS_URL")
        or f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
    )


def seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if not 0 <= value < float("inf"):
        raise ValueError(f"{name} must be a number of seconds, 0 or more; got {raw!r}")
    return value


def whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number, 1 or more; got {raw!r}")
    return int(raw)


def token_list(raw: str | None) -> list[str]:
    """API_READ_TOKENS / API_ADMIN_TOKENS: comma-separated, so a token can be rotated."""
    return [token.strip() for token in (raw or "").split(",") if token.strip()]


def load_config(
    environ: Mapping[str, str] = os.environ, dotenv_path: Path = PROJECT_ROOT / ".env"
) -> dict[str, Any]:
    """Flask config from the environment; a variable already set wins over `.env`."""
    from_file = {
        key: value for key, value in dotenv_values(dotenv_path).items() if value is not None
    }
    env = {**from_file, **environ}
    config = {
        "SQLALCHEMY_DATABASE_URI": database_url(env.get("DATABASE_URL")),
        # The simulated processor's wait: the seed's 30 s, standing in for a slow API.
        "PROCESSING_DELAY_SECONDS": seconds(env, "PROCESSING_DELAY_SECONDS", default=30),
        # Set, and transactions are processed by POSTing them here (app/processing/http.py).
        "PROCESSOR_URL": env.get("PROCESSOR_URL") or None,
        "PROCESSOR_TIMEOUT_SECONDS": seconds(env, "PROCESSOR_TIMEOUT_SECONDS", default=60),
        "PROCESSING_RETRY_BASE_SECONDS": seconds(env, "PROCESSING_RETRY_BASE_SECONDS", default=5),
        "PROCESSING_RETRY_MAX_SECONDS": seconds(env, "PROCESSING_RETRY_MAX_SECONDS", default=3600),
        "PROCESSING_MAX_ATTEMPTS": whole_number(env, "PROCESSING_MAX_ATTEMPTS", default=10),
        # The port Gunicorn binds (gunicorn.conf.py) and `flask send-webhook` posts to.
        "PORT": whole_number(env, "PORT", default=8000),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO").upper(),
        "LOG_FORMAT": "json" if env.get("LOG_FORMAT", "").lower() == "json" else "text",
        "MAX_CONTENT_LENGTH": MAX_WEBHOOK_BYTES,
        # Secrets for Standard Webhooks signatures; none means unsigned webhooks are accepted.
        "WEBHOOK_SECRETS": parse_secrets(env.get("WEBHOOK_SECRET")),
        # Bearer tokens for the read side and for actions; none set means the read side
        # is open (as the seed's walk-through expects) and actions are open too.
        "API_READ_TOKENS": token_list(env.get("API_READ_TOKENS")),
        "API_ADMIN_TOKENS": token_list(env.get("API_ADMIN_TOKENS")),
    }
    config["CELERY"] = celery_settings(
        broker_url(env), env.get("CELERY_RESULT_BACKEND") or None, claim_seconds(config)
    )
    return config


# A claim outlives the processor's timeout by this much: the worker's lag between
# claiming and calling, and the clocks of several machines, fit inside it.
CLAIM_MARGIN_SECONDS = 30
# Every database statement gives up after this long (PostgreSQL's statement_timeout),
# well inside a task's time limit: a task that is killed leaves no statement running.
STATEMENT_TIMEOUT_SECONDS = 30


# The simulated processor only sleeps; its call is cut off this long after its delay,
# which only a worker too busy to wake its greenlets would reach.
SIMULATED_SLACK_SECONDS = 10


def processor_timeout(config: Mapping[str, Any]) -> float:
    """The longest one processor call may take before it is cut off and retried."""
    if config["PROCESSOR_URL"]:
        return config["PROCESSOR_TIMEOUT_SECONDS"]
    return config["PROCESSING_DELAY_SECONDS"] + SIMULATED_SLACK_SECONDS


def claim_seconds(config: Mapping[str, Any]) -> float:
    """How long a claimed transaction is held: the processor's longest call plus a margin."""
    return processor_timeout(config) + CLAIM_MARGIN_SECONDS


# How often beat asks for due transactions to be claimed. It bounds how late past its
# due time a transaction is first called when no backlog is fanning out already.
PROCESS_DUE_EVERY_SECONDS = 1.0

# Green threads in the worker's gevent pool: each runs one task, which claims up to
# BATCH_SIZE due transactions and calls the processor for them at once
# (app/processing/pipeline.py), so one worker process keeps up to 100 x 100 calls in
# flight: fewer threads if its open-files limit does not leave room for them all.
WORKER_GREEN_THREADS = 100
BATCH_SIZE = 100


def worker_green_threads() -> int:
    return max(1, min(WORKER_GREEN_THREADS, open_files.connections_allowed() // BATCH_SIZE))


BROKER_SOCKET_SECONDS = 5


def broker_transport_options(broker: str, task_time_limit: float) -> dict[str, Any]:
    if broker.startswith("sqla+"):
        # kombu hands these to SQLAlchemy's create_engine: like the data file,
        # the broker file makes concurrent writers wait instead of failing.
        return {"connect_args": {"timeout": 30}}
    return {
        # Redis redelivers a message not acknowledged within this time. No
        # message here waits for a countdown, so it need only exceed the time
        # limit; a message is never redelivered while its task still runs.
        "visibility_timeout": max(300, 2 * task_time_limit),
        # A broker that goes silent without closing the connection (a managed Redis
        # failing over, a NAT timing out) would hold a publish for ever (kombu's
        # docs); past this, the command fails and is retried on a new connection.
        # Well above the consumer's 1 s BRPOP.
        "socket_timeout": BROKER_SOCKET_SECONDS,
        "socket_connect_timeout": BROKER_SOCKET_SECONDS,
    }


def redis_tls(url: str | None) -> dict[str, Any] | None:
    """TLS settings for a rediss:// URL, None for anything else.

    Heroku's Redis add-on hands out rediss:// URLs whose certificate is self-signed, so it
    cannot be verified; Heroku's documentation says to connect with ssl_cert_reqs=CERT_NONE.
    The traffic is still encrypted. (kombu would do the same for the broker, with a warning;
    Celery's Redis result backend refuses a rediss:// URL without it.)
    """
    if not url or not url.startswith("rediss://"):
        return None
    return {"ssl_cert_reqs": ssl.CERT_NONE}


def tls_settings(broker: str, result_backend: str | None) -> dict[str, Any]:
    settings = {}
    if broker_tls := redis_tls(broker):
        settings["broker_use_ssl"] = broker_tls
    if backend_tls := redis_tls(result_backend):
        settings["redis_backend_use_ssl"] = backend_tls
    return settings


def celery_settings(
    broker: str, result_backend: str | None, claim_seconds: float
) -> dict[str, Any]:
    """Celery, set up for a task that must run, may run twice, and never waits in the broker.

    Transactions wait in the database, not in the broker: every run claims whatever
    is due, so a lost, duplicated or late message costs at most one tick. These
    settings make the worker's side of that hold too.
    """
    # A task calls the processor for its claims (each call cut off at the processor's
    # timeout) and records the outcomes; it cannot outlive its claims by much.
    task_time_limit = claim_seconds + 10
    settings = {
        "broker_url": broker,
        "result_backend": result_backend,
        # Nobody reads task results: the transaction row is the result.
        "task_ignore_result": True,
        "imports": ["app.processing.tasks"],
        # Acknowledge a message after its task ran, not before: a worker that
        # dies mid-task leaves the message in the broker for another worker.
        "task_acks_late": True,
        # ...and when the worker is lost mid-task, requeue its message at once.
        # Safe: a message carries no transaction, only "claim what is due".
        "task_reject_on_worker_lost": True,
        # The gevent pool (Procfile): green threads, so a processor call that takes
        # 30 s holds a greenlet, not a process. Scale out with more worker processes.
        "worker_concurrency": worker_green_threads(),
        # One message per green thread at a time: a message claims only when it
        # runs, so holding more buys nothing, and a dead worker strands fewer.
        "worker_prefetch_multiplier": 1,
        # A stuck task is killed (gevent's pool has the hard limit only).
        "task_time_limit": task_time_limit,
        "broker_transport_options": broker_transport_options(broker, task_time_limit),
        # No remote control (celery inspect/control): nothing here uses it, and its
        # mailbox, a green thread of its own, died with a traceback on every broker
        # outage. The transaction rows say what the worker is doing (GET /dashboard).
        "worker_enable_remote_control": False,
        # Keep trying to reach the broker, at start-up and after it goes away.
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # Beat's record of when it last sent each task; losing it costs nothing.
        "beat_schedule_filename": str(VAR_DIR / "celerybeat-schedule"),
        "beat_schedule": {
            "process-due-transactions": {
                "task": "app.processing.tasks.process_due_transactions",
                "schedule": PROCESS_DUE_EVERY_SECONDS,
                # Ticks that queued up while no worker ran are worthless later:
                # the next one that runs picks up everything that is due.
                "options": {"expires": 10 * PROCESS_DUE_EVERY_SECONDS},
            },
        },
    }
    return settings | embedded_broker_settings(settings) | tls_settings(broker, result_backend)


def embedded_broker_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """On the SQLite broker, the worker also deletes consumed messages (app/embedded_broker.py)."""
    if not embedded_broker.is_embedded(settings["broker_url"]):
        return {}
    return {
        "imports": [*settings["imports"], "app.embedded_broker"],
        "beat_schedule": settings["beat_schedule"] | embedded_broker.beat_schedule(),
    }
