"""Celery tasks: thin wrappers over the services."""

import logging

from celery import shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from app import metrics
from app.store import transactions as store

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def process_due_transactions() -> int:
    """Sent by beat every second: process every transaction whose delay has passed.

    Every run looks at all overdue transactions, not only those that fell due
    since the last one, so this is also the sweep that recovers from any fault:
    a lost message, a dead worker, a database that was away.
    """
    try:
        processed = store.process_due_transactions()
    except (OperationalError, InterfaceError) as exc:
        # One line, not a traceback a second: the next tick tries again.
        log.warning("database unavailable, will retry next tick: %s", str(exc).splitlines()[0])
        return 0
    waits = []
    for transaction in processed:
        waited = (transaction.processed_at - transaction.created_at).total_seconds()
        waits.append(waited)
        log.info(
            "transaction %s processed %.3f s after it was received",
            transaction.transaction_id,
            waited,
            extra={"transaction_id": transaction.transaction_id, "waited_seconds": waited},
        )
    metrics.record_processed(waits)
    return len(processed)
