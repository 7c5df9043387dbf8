"""Readiness: can this instance do its job right now? Each dependency, within a short timeout."""

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as NoAnswerYet

from celery import Celery
from sqlalchemy import Engine, text

# Each check gives up after this long; both run at once, so an answer comes in ~2 s at worst.
TIMEOUT_SECONDS = 2


def check_components(engine: Engine, celery_app: Celery) -> dict[str, dict]:
    started = time.perf_counter()
    pool = ThreadPoolExecutor(2)
    try:
        database = pool.submit(_timed, _ping_database, engine)
        broker = pool.submit(_timed, _ping_broker, celery_app)
        found = {"database": database.result()}
        # Only reported, so not waited for past the budget: kombu's own timeouts add up to
        # 5 s against a broker that takes the connection and never answers, and a probe
        # that gives up first would take the instance out, broker or not.
        left = max(0.0, TIMEOUT_SECONDS - (time.perf_counter() - started))
        try:
            found["broker"] = broker.result(timeout=left)
        except NoAnswerYet:
            found["broker"] = {"status": "down", "error": f"no answer within {TIMEOUT_SECONDS} s"}
        return found
    finally:
        pool.shutdown(wait=False)  # a check still running ends by its own timeouts


def _timed(check, target) -> dict:
    started = time.perf_counter()
    try:
        check(target)
    except Exception as exc:  # any failure means "down"; say which kind, never the internals
        return {"status": "down", "error": type(exc).__name__}
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def _ping_database(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _ping_broker(celery_app: Celery) -> None:
    with celery_app.connection_for_write(connect_timeout=TIMEOUT_SECONDS) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=TIMEOUT_SECONDS)
        connection.default_channel  # noqa: B018 - opening a channel is the ping
