"""The rules of a transaction's life: received once, processed once its delay has passed.

No Flask request objects here: the routes and the Celery tasks both call in.
"""

import enum
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import db
from app.models import Transaction, TransactionStatus, utcnow

BUSINESS_FIELDS = ("source_account", "destination_account", "amount", "currency")


class Receipt(enum.Enum):
    ACCEPTED = "accepted"  # new: stored, processing scheduled
    DUPLICATE = "duplicate"  # seen before, identical: nothing changed


class ConflictingDuplicate(Exception):
    """A known transaction_id arrived with other business fields; it is refused."""

    def __init__(self, fields: list[str]):
        super().__init__(f"differs in {', '.join(fields)}")
        self.fields = fields


@dataclass(frozen=True)
class ProcessedTransaction:
    transaction_id: str
    created_at: datetime
    processed_at: datetime


def _insert_ignoring_conflicts(values: dict[str, Any]):
    dialect_insert = sqlite.insert if db.engine.dialect.name == "sqlite" else postgresql.insert
    return (
        dialect_insert(Transaction)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[Transaction.transaction_id])
        .returning(Transaction.transaction_id)
    )


def ingest_webhook(payload: dict[str, Any]) -> Receipt:
    """Store a validated webhook as PROCESSING, exactly once per transaction_id.

    One atomic INSERT ... ON CONFLICT DO NOTHING decides which of any number of
    concurrent copies is new; a check-then-insert would let two of them through.
    Once this returns ACCEPTED the row is committed, and the worker will find it
    when its delay has passed: nothing else has to be enqueued, so nothing can
    be lost between the commit and a broker.
    """
    received_at = utcnow()
    delay = timedelta(seconds=current_app.config["PROCESSING_DELAY_SECONDS"])
    statement = _insert_ignoring_conflicts(
        {
            **{field: payload[field] for field in ("transaction_id", *BUSINESS_FIELDS)},
            "status": TransactionStatus.PROCESSING,
            "created_at": received_at,
            "process_after": received_at + delay,
        }
    )
    inserted = db.session.execute(statement).scalar_one_or_none()
    db.session.commit()
    if inserted is not None:
        return Receipt.ACCEPTED

    stored = db.session.get(Transaction, payload["transaction_id"])
    differing = [field for field in BUSINESS_FIELDS if getattr(stored, field) != payload[field]]
    if differing:
        raise ConflictingDuplicate(differing)
    return Receipt.DUPLICATE


def find_transaction(transaction_id: str) -> Transaction | None:
    return db.session.get(Transaction, transaction_id)


def process_due_transactions(
    batch_size: int = 1000, time_budget_seconds: float = 20.0
) -> list[ProcessedTransaction]:
    """Mark every transaction whose delay has passed PROCESSED, in committed batches.

    The UPDATE only touches rows still PROCESSING, so a transaction moves forward
    once however many workers, retries and sweeps run this at the same time; on
    PostgreSQL, SKIP LOCKED lets concurrent runs share a backlog instead of queueing
    behind each other. Stops after the time budget; the next run goes on from there.
    """
    processed: list[ProcessedTransaction] = []
    deadline = time.monotonic() + time_budget_seconds
    while time.monotonic() < deadline:
        batch = _process_batch(batch_size)
        processed.extend(batch)
        if len(batch) < batch_size:
            break
    return processed


def _process_batch(batch_size: int) -> list[ProcessedTransaction]:
    now = utcnow()
    still_processing = Transaction.status == TransactionStatus.PROCESSING
    due = (
        select(Transaction.transaction_id)
        .where(still_processing, Transaction.process_after <= now)
        .order_by(Transaction.process_after)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(Transaction)
        .where(Transaction.transaction_id.in_(due.scalar_subquery()), still_processing)
        .values(status=TransactionStatus.PROCESSED, processed_at=now)
        .returning(Transaction.transaction_id, Transaction.created_at, Transaction.processed_at)
        .execution_options(synchronize_session=False)
    )
    rows = db.session.execute(statement).all()
    db.session.commit()
    return [ProcessedTransaction(*row) for row in rows]
