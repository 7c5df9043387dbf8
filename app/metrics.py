"""Prometheus metrics for GET /metrics, correct under several Gunicorn workers.

prometheus-client's multiprocess mode: every process (each Gunicorn worker, each
Celery pool process) writes its samples to files in PROMETHEUS_MULTIPROC_DIR and
/metrics adds them up. The variable must be set before prometheus_client is first
imported; gunicorn.conf.py and celery_worker.py set it first thing.

What the processes count (webhooks by outcome, acknowledgement latency,
transactions processed, received-to-processed time) comes from those files. What
the pipeline looks like (transactions waiting, age of the oldest still PROCESSING)
is read from the database at scrape time, so it is right even when the worker is
dead, which is exactly when it matters.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db
from app.store.models import Transaction, TransactionStatus, utcnow

WEBHOOKS = Counter(
    "webhooks_received",
    "Webhooks received, by outcome: accepted, duplicate, conflict, invalid, unauthorized, "
    "too_large, unavailable (database down) or error.",
    ["outcome"],
)
ACKNOWLEDGEMENT_SECONDS = Histogram(
    "webhook_acknowledgement_seconds",
    "Time from a webhook's arrival to its answer, whatever the answer.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PROCESSED = Counter("transactions_processed", "Transactions moved from PROCESSING to PROCESSED.")
RECEIVED_TO_PROCESSED_SECONDS = Histogram(
    "transaction_received_to_processed_seconds",
    "Time from receipt to PROCESSED; PROCESSING_DELAY_SECONDS plus the pipeline's own lag.",
    buckets=(1, 2, 5, 10, 20, 30, 31, 32, 35, 45, 60, 120, 300, 900, 3600),
)

# Where a status code leaves a webhook, for the outcome label. A duplicate answers
# 202 as the first did; the route names that outcome itself.
OUTCOME_BY_STATUS = {
    202: "accepted",
    409: "conflict",
    400: "invalid",
    408: "invalid",  # a body too slow to arrive: the client's doing, not an error of ours
    415: "invalid",
    422: "invalid",
    401: "unauthorized",
    413: "too_large",
    503: "unavailable",
}


# Every outcome exists from the start, at 0, so that rate() and alerts see it; and
# looking the labelled counter up once here saves doing it on every request.
WEBHOOKS_BY_OUTCOME = {
    outcome: WEBHOOKS.labels(outcome)
    for outcome in {*OUTCOME_BY_STATUS.values(), "duplicate", "error"}
}


def record_webhook(status: int, seconds: float, outcome: str | None = None) -> None:
    """Count a webhook by `outcome` if the route named one, else by its status code."""
    WEBHOOKS_BY_OUTCOME[outcome or OUTCOME_BY_STATUS.get(status, "error")].inc()
    ACKNOWLEDGEMENT_SECONDS.observe(seconds)


def record_processed(waited_seconds: list[float]) -> None:
    PROCESSED.inc(len(waited_seconds))
    for seconds in waited_seconds:
        RECEIVED_TO_PROCESSED_SECONDS.observe(seconds)


class PipelineCollector:
    """Gauges read from the database when /metrics is scraped."""

    def collect(self):
        up = GaugeMetricFamily("database_up", "1 if the database answered this scrape.")
        try:
            with db.engine.connect() as connection:
                waiting, oldest = connection.execute(
                    select(func.count(), func.min(Transaction.created_at)).where(
                        Transaction.status == TransactionStatus.PROCESSING
                    )
                ).one()
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "transactions_waiting", "Transactions still PROCESSING.", value=waiting
        )
        age = (utcnow() - oldest).total_seconds() if oldest else 0
        yield GaugeMetricFamily(
            "oldest_processing_age_seconds",
            "Age of the oldest transaction still PROCESSING (0 if none). Above "
            "PROCESSING_DELAY_SECONDS plus a few seconds, the pipeline is stuck.",
            value=age,
        )


def check_multiprocess_mode() -> None:
    """Fail at start, not with silently empty counters, if the variable came too late."""
    wanted = "PROMETHEUS_MULTIPROC_DIR" in os.environ
    if wanted and values.ValueClass is values.MutexValue:
        raise RuntimeError(
            "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported; "
            "set it before importing the app (see gunicorn.conf.py)."
        )


def render() -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.MultiProcessCollector(registry)
    else:  # one process (tests, `flask run`): its own counters are the whole truth
        registry.register(REGISTRY)
    registry.register(PipelineCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
