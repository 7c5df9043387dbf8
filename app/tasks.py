"""Celery tasks: thin wrappers over the services."""

import logging

from celery import shared_task

from app import services

log = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def process_due_transactions() -> int:
    """Run by beat every second: process every transaction whose delay has passed."""
    processed = services.process_due_transactions()
    for transaction in processed:
        waited = (transaction.processed_at - transaction.created_at).total_seconds()
        log.info(
            "transaction %s processed %.3f s after it was received",
            transaction.transaction_id,
            waited,
            extra={"transaction_id": transaction.transaction_id, "waited_seconds": waited},
        )
    return len(processed)
