"""Extensions, created unbound here and bound to the app in `create_app`.

Nothing here connects to anything: an engine or broker connection made at
import time would be shared by every process Gunicorn and Celery fork.
"""

import gc
import logging

from celery import Celery, Task
from celery.signals import (
    beat_init,
    setup_logging,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)
from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event
from sqlalchemy.orm import DeclarativeBase

from app.config import STATEMENT_TIMEOUT_SECONDS
from app.logs import OneLinePerMinute, configure_logging
from app.web.api import Api


class Base(DeclarativeBase):
    # Named constraints, so that migrations can refer to them on every database.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


db = SQLAlchemy(model_class=Base)
# Batch mode, so that later migrations can alter tables on SQLite too.
migrate = Migrate(render_as_batch=True)
api = Api()


def engine_options(url: str) -> dict:
    """Pool and driver settings for the configured database."""
    # Every write the service makes is one statement (the webhook's INSERT, the
    # worker's UPDATE), atomic on its own; in autocommit it is committed when the
    # database answers it. One round trip instead of BEGIN, the statement and COMMIT,
    # and nothing to reset when the connection goes back to the pool.
    # Migrations, which need a transaction, ask for one (migrations/env.py).
    autocommit = {"isolation_level": "AUTOCOMMIT"}
    if url.startswith("sqlite"):
        # Gunicorn workers, the Celery worker and beat all write to one file:
        # wait up to 30 s for the lock instead of failing with "database is locked".
        return autocommit | {"connect_args": {"timeout": 30}}
    return autocommit | {
        # Five connections per process, no overflow: under gevent every request and
        # every processor call is a green thread, and with SQLAlchemy's default overflow
        # of 10 each of them could open one more. Green threads wait their turn for a
        # connection instead (a statement takes about a millisecond), and the service's
        # processes stay well inside PostgreSQL's max_connections (100 by default, 20 on
        # small managed plans): 5 per Gunicorn worker and 5 for the Celery worker.
        # Measured: with the overflow, the benchmark ran PostgreSQL out of connections.
        "pool_size": 5,
        "max_overflow": 0,
        "pool_timeout": 10,
        # No pool_pre_ping: it costs a round trip per request. A connection that
        # died with the server is detected on use instead, which invalidates the
        # pool; services retry the write once, and the service recovers by itself.
        # A database that is down answers "503" in seconds, not after TCP's minutes;
        # a statement that runs too long is cancelled by the server, so a task killed
        # at its time limit leaves no statement behind (app/config.py).
        "connect_args": {
            "connect_timeout": 3,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_SECONDS * 1000}",
        },
    }


def cooperative_database_driver() -> None:
    """Under gevent (Gunicorn's gevent workers, Celery's gevent pool), make psycopg2 yield.

    Both sides run on green threads so that a slow client or a slow processor call
    waits without holding a process (README, "One pool for both sides"). psycopg2 is
    a C extension that gevent's monkey-patching cannot reach; psycogreen installs a
    wait callback so that a query in flight lets the other greenlets run.
    """
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return
    if monkey.is_module_patched("socket"):
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


def init_db(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_wal)


def _sqlite_wal(dbapi_connection, _record) -> None:
    # WAL lets readers go on while one process writes; FULL sync keeps a 202's
    # commit on disk even if the machine loses power.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def init_celery(app: Flask) -> Celery:
    """Flask's Celery pattern: every task runs inside an app context."""

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app

    @worker_process_init.connect(weak=False)
    def fresh_pool_per_child(**_kwargs) -> None:
        # A pooled connection inherited across fork would be shared by two
        # processes; psycopg2 then fails in odd ways and updates are lost.
        with app.app_context():
            db.engine.dispose(close=False)

    @worker_init.connect(weak=False)
    def take_back_a_killed_workers_gauges(**_kwargs) -> None:
        from app import metrics  # it needs `db` from here

        metrics.forget_dead_processes()

    @worker_shutdown.connect(weak=False)
    def take_back_our_gauges(**_kwargs) -> None:
        from app import metrics

        metrics.forget_this_process()

    @worker_ready.connect(weak=False)
    def freeze_what_startup_made(**_kwargs) -> None:
        # Everything imported and built so far (Celery, Flask, SQLAlchemy: a few hundred
        # thousand objects) lives as long as the process. Frozen, the garbage collector
        # stops walking it on each full collection, which thousands of waiting calls
        # trigger often: the worker's CPU per transaction fell by a tenth to a fifth
        # (README, Performance). Gunicorn's workers do the same (gunicorn.conf.py).
        gc.freeze()

    @setup_logging.connect(weak=False)
    def same_logging_as_the_web(**_kwargs) -> None:
        # Connecting here stops Celery from installing its own handlers: the worker
        # logs like the web (LOG_FORMAT=json included).
        configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
        # Beat sends a tick every second; logging each one's receipt and success
        # would bury the lines that matter ("transaction ... processed").
        for name in (
            "celery.beat",
            "celery.app.trace",
            "celery.worker.strategy",
            "celery.worker.request",  # "Discarding revoked task" for each expired tick
        ):
            logging.getLogger(name).setLevel(logging.WARNING)
        beat_log = logging.getLogger("celery.beat")
        if not any(isinstance(f, OneLinePerMinute) for f in beat_log.filters):
            beat_log.addFilter(OneLinePerMinute())

    @beat_init.connect(weak=False)
    def say_beat_runs(**_kwargs) -> None:
        # With its per-tick lines muted, this one line tells an operator that beat is up.
        for name, entry in celery_app.conf.beat_schedule.items():
            logging.getLogger("app.beat").info("beat sends %s every %s s", name, entry["schedule"])

    return celery_app
