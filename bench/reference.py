"""The reference receivers: the least work a correct receiver must do, written by hand.

Parse the JSON (decimals exact), one INSERT ... ON CONFLICT DO NOTHING committed
through psycopg2 (in autocommit, one round trip), one LPUSH to Redis, answer 202.
The row is due after PROCESSING_DELAY_SECONDS, as the service's are, so the
service's worker (same database) processes the reference's load as well.
No validation, no error handling: only the benchmark runs them, under the same
Gunicorn settings as the service: gunicorn.conf.py's gevent workers, with psycopg2
made cooperative (psycogreen) and a pool of at most as many connections per process
as the service's SQLAlchemy pool holds (5), as green threads cannot share one
connection.

- `create_app()`: a minimal Flask view. Flask is part of the fixed stack, so this
  is the practical ceiling for our service, and the ratio the targets speak of.
- `wsgi`: the same work without Flask, to show what the framework itself costs.

Both read DATABASE_URL and REDIS_URL from the environment.
"""

import json
import os
import queue
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg2
import redis
from flask import Flask, request

INSERT = """
    INSERT INTO transactions (transaction_id, source_account, destination_account, amount,
                              currency, status, created_at, next_attempt_at)
    VALUES (%s, %s, %s, %s, %s, 'PROCESSING', %s, %s)
    ON CONFLICT (transaction_id) DO NOTHING
"""
PROCESSING_DELAY = timedelta(seconds=float(os.environ.get("PROCESSING_DELAY_SECONDS", "30")))
# As the service's pool (app/extensions.py): 5 connections per process, no overflow.
POOL_SIZE, POOL_LIMIT = 5, 5
_connections: dict[str, object] = {}
_idle: queue.LifoQueue | None = None


def _setup() -> None:
    # Opened lazily, in each Gunicorn worker after the fork (and after gevent's patching).
    from gevent import monkey

    if monkey.is_module_patched("socket"):  # as create_app does
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    global _idle
    _idle = queue.LifoQueue(POOL_SIZE)  # made now, so it is gevent's cooperative queue
    _connections["open"] = 0
    _connections["redis"] = redis.Redis.from_url(os.environ["REDIS_URL"])


def _checkout():
    try:
        return _idle.get_nowait()
    except queue.Empty:
        pass
    if _connections["open"] >= POOL_LIMIT:
        return _idle.get()
    _connections["open"] += 1
    dsn = os.environ["DATABASE_URL"].replace("postgresql+psycopg2://", "postgresql://")
    connection = psycopg2.connect(dsn)
    # Autocommit, as the service: the INSERT is committed when it returns, in one
    # round trip instead of BEGIN, INSERT and COMMIT.
    connection.autocommit = True
    return connection


def _checkin(connection) -> None:
    try:
        _idle.put_nowait(connection)
    except queue.Full:
        connection.close()
        _connections["open"] -= 1


def _store(raw: bytes) -> None:
    if not _connections:
        _setup()
    body = json.loads(raw, parse_float=Decimal)
    now = datetime.now(UTC)
    database = _checkout()
    try:
        with database.cursor() as cursor:
            cursor.execute(
                INSERT,
                (
                    body["transaction_id"],
                    body["source_account"],
                    body["destination_account"],
                    body["amount"],
                    body["currency"],
                    now,
                    now + PROCESSING_DELAY,  # processed like the service's (docstring)
                ),
            )
    finally:
        _checkin(database)
    _connections["redis"].lpush("reference:received", body["transaction_id"])


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/v1/webhooks/transactions")
    def receive():
        _store(request.get_data())
        return {"message": "Webhook received and queued for processing"}, 202

    return app


def wsgi(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    _store(environ["wsgi.input"].read(length))
    body = b'{"message":"Webhook received and queued for processing"}'
    start_response(
        "202 Accepted", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
