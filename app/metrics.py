"""Prometheus metrics for GET /metrics, correct under several Gunicorn workers.

prometheus-client's multiprocess mode: every process (each Gunicorn worker, each
Celery pool process) writes its samples to files in PROMETHEUS_MULTIPROC_DIR and
/metrics adds them up. The variable must be set before prometheus_client is first
imported; gunicorn.conf.py and celery_worker.py set it first thing.

What the processes count (webhooks by outcome, acknowledgement latency, processor
calls by outcome and their latency, calls in flight, retries, attempts per
transaction) comes from those files: GET /metrics. What the pipeline looks like
(transactions waiting, due, FAILED, the age of the oldest still PROCESSING) is read
from the database at scrape time, so it is right even when the worker is dead, which
is exactly when it matters: GET /metrics/pipeline.
"""

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db
from app.store import backlog
from app.store.models import TransactionStatus, utcnow

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
    "Time from receipt to PROCESSED: the processor's latency, retries, and the pipeline's lag.",
    buckets=(1, 2, 5, 10, 20, 30, 31, 32, 35, 45, 60, 120, 300, 900, 3600),
)
PROCESSOR_CALLS = Counter(
    "processor_calls",
    "Processor calls, by answer: done, retry_later (including timeouts and refused "
    "connections) or failed_for_good.",
    ["outcome"],
)
PROCESSOR_SECONDS = Histogram(
    "processor_call_seconds",
    "How long one processor call took, whatever it answered.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
PROCESSOR_IN_FLIGHT = Gauge(
    "processor_calls_in_flight",
    "Processor calls under way now, over every worker process.",
    multiprocess_mode="livesum",
)
OUTCOMES_NOT_RECORDED = Counter(
    "processing_outcomes_not_recorded",
    "Outcomes told (logged, and counted in the figures above) before their commit, then not "
    "recorded, by the status they would have set: a later attempt held the claim, or the "
    "database was away or refused them (the transaction is then attempted again).",
    ["status"],
)
RETRIES_SCHEDULED = Counter(
    "processing_retries_scheduled", "Attempts that ended in a retry later, with a backoff."
)
ATTEMPTS = Histogram(
    "transaction_attempts",
    "Processor calls a transaction took, observed when it ends PROCESSED or FAILED.",
    ["status"],
    buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20),
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


CALLS_BY_OUTCOME = {
    outcome: PROCESSOR_CALLS.labels(outcome)
    for outcome in ("done", "retry_later", "failed_for_good")
}


def record_attempt(
    outcome: str, seconds: float, status: str, attempt: int, waited: float | None
) -> None:
    """One processor call and what it made of the transaction (status after it)."""
    CALLS_BY_OUTCOME[outcome].inc()
    PROCESSOR_SECONDS.observe(seconds)
    if status == "PROCESSING":
        RETRIES_SCHEDULED.inc()
        return
    ATTEMPTS.labels(status).observe(attempt)
    if waited is not None:
        PROCESSED.inc()
        RECEIVED_TO_PROCESSED_SECONDS.observe(waited)


# A count stops here: past it the gauge says "at least this many". A count over a
# backlog of a million rows took 383 ms a scrape; this bound keeps a scrape cheap.
COUNT_UP_TO = 100_000


class PipelineCollector:
    """Database-wide gauges, read when /metrics/pipeline is scraped.

    They are the same whichever instance answers, so they have an endpoint of their
    own, scraped once (through the load balancer): on /metrics, which every instance
    serves for its own processes, summing over instances counted them several times.
    Each query reads an index, and counts stop at COUNT_UP_TO.
    """

    def collect(self):
        up = GaugeMetricFamily("database_up", "1 if the database answered this scrape.")
        processing = TransactionStatus.PROCESSING
        now = utcnow()
        try:
            with db.engine.connect() as connection:
                waiting = backlog.count(connection, processing, up_to=COUNT_UP_TO)
                due = backlog.count(connection, processing, due_by=now, up_to=COUNT_UP_TO)
                failed = backlog.count(connection, TransactionStatus.FAILED, up_to=COUNT_UP_TO)
                oldest = backlog.oldest_processing(connection)
                due_since = backlog.oldest_due(connection, now)
        except SQLAlchemyError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        capped = f" (counted up to {COUNT_UP_TO:,})"
        yield GaugeMetricFamily(
            "transactions_waiting", "Transactions still PROCESSING" + capped, value=waiting
        )
        yield GaugeMetricFamily(
            "transactions_due",
            "PROCESSING transactions whose next attempt is due now: the backlog" + capped,
            value=due,
        )
        yield GaugeMetricFamily(
            "transactions_failed",
            "Transactions FAILED, waiting for an operator's re-drive" + capped,
            value=failed,
        )
        age = (now - oldest.created_at).total_seconds() if oldest else 0
        yield GaugeMetricFamily(
            "oldest_processing_age_seconds",
            "Age of the oldest transaction still PROCESSING (0 if none). Far above the "
            "processor's latency, the pipeline is stuck or the processor is failing.",
            value=age,
        )
        yield GaugeMetricFamily(
            "oldest_due_age_seconds",
            "How long the longest-overdue transaction has waited for a worker to claim it (0 if "
            "none). Beat ticks every second: above a few seconds, nothing claims (the worker, "
            "beat or the broker is down) or the workers cannot keep up.",
            value=(now - due_since).total_seconds() if due_since else 0,
        )


def check_multiprocess_mode() -> None:
    """Fail at start, not with silently empty counters, if the variable came too late."""
    wanted = "PROMETHEUS_MULTIPROC_DIR" in os.environ
    if wanted and values.ValueClass is values.MutexValue:
        raise RuntimeError(
            "PROMETHEUS_MULTIPROC_DIR was set after prometheus_client was imported; "
            "set it before importing the app (see gunicorn.conf.py)."
        )


def forget_dead_processes() -> None:
    """Take back the live gauges (calls in flight) of processes that are gone.

    A process that exits cleanly takes back its own (Gunicorn's master does it for its
    workers, gunicorn.conf.py; the Celery worker at shutdown). One killed with SIGKILL
    cannot: its last figure stayed in the sum for good, "6 calls in flight" with no
    worker running. A Celery worker starting calls this. It judges by PID, so it assumes
    what the rest of this module does: the directory is on one machine's disk, shared by
    the processes of one PID namespace, not by containers."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    pids = {path.stem.rpartition("_")[2] for path in Path(directory).glob("gauge_live*_*.db")}
    for pid in pids:
        if pid.isdigit() and not _running(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)


def forget_this_process() -> None:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(os.getpid())


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal sent: only whether the PID exists
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's, and running
        pass
    return True


def render() -> tuple[bytes, str]:
    """This instance's processes: web workers, and the Celery worker where it shares the disk."""
    registry = CollectorRegistry()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.MultiProcessCollector(registry)
    else:  # one process (tests, `flask run`): its own counters are the whole truth
        registry.register(REGISTRY)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def render_pipeline() -> tuple[bytes, str]:
    """The database-wide gauges, the same from every instance."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
