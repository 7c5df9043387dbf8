"""The Celery task: a thin wrapper over the pipeline (app/processing/pipeline.py)."""

import logging

import gevent
from celery import shared_task
from flask import current_app

from app.config import BATCH_SIZE, claim_seconds
from app.extensions import db
from app.processing import pipeline

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def process_due_transactions() -> int:
    """Claim a batch of due transactions and process them; returns how many it claimed.

    Beat sends this every second. A run that finds a full batch due sends another
    as it starts calling, so a backlog fans out over the worker's pool at once;
    claims are made only by a run that has a pool slot, so nothing waits in the
    broker holding a claim. A lost, repeated or late message costs nothing: the
    next run claims whatever is due, including what a dead worker left behind.
    """
    processor = current_app.extensions["processor"]
    policy = pipeline.RetryPolicy.from_config(current_app.config)
    hold = claim_seconds(current_app.config)
    try:
        claims = pipeline.claim_due(db.engine, BATCH_SIZE, hold)
    except pipeline.DATABASE_AWAY as exc:
        # One line, not a traceback a second: the next tick tries again.
        log.warning("database unavailable, will retry next tick: %s", str(exc).splitlines()[0])
        return 0
    if len(claims) == BATCH_SIZE:
        # In a greenlet of its own: a publish to a broker that has stopped answering
        # (packets dropped) would otherwise hold these claims uncalled until they expire.
        gevent.spawn(_fan_out)
    pipeline.process_claims(db.engine, processor, policy, claims)
    return len(claims)


def _fan_out() -> None:
    try:
        process_due_transactions.delay()
    except Exception as exc:  # away, or silent past its socket timeout: the next tick fans out
        log.warning("broker unavailable, the next tick takes the backlog: %s", exc)
