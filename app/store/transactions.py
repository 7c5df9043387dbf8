"""A transaction's rules on the way in and for operators: received once, found, listed,
re-driven. No Flask request objects here. (Processing is app/processing/pipeline.py.)
"""

import enum
import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Dialect, Row, bindparam, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from app.extensions import db
from app.store.driver import DriverStatement, compile_for_driver, fetch_one
from app.store.models import Transaction, TransactionStatus, utcnow

BUSINESS_FIELDS = ("source_account", "destination_account", "amount", "currency")
INSERTED_COLUMNS = ("transaction_id", *BUSINESS_FIELDS, "status", "created_at", "next_attempt_at")


class Receipt(enum.Enum):
    ACCEPTED = "accepted"  # new: stored, processing scheduled
    DUPLICATE = "duplicate"  # seen before, identical: nothing changed


class ConflictingDuplicate(Exception):
    """A known transaction_id arrived with other business fields; it is refused."""

    def __init__(self, fields: list[str]):
        super().__init__(f"differs in {', '.join(fields)}")
        self.fields = fields


@functools.cache
def _insert_ignoring_conflicts(dialect: Dialect) -> DriverStatement:
    """Built and compiled once per dialect; run for every webhook by app/store/driver.py."""
    table = Transaction.__table__
    dialect_insert = sqlite.insert if dialect.name == "sqlite" else postgresql.insert
    statement = (
        dialect_insert(table)
        .on_conflict_do_nothing(index_elements=["transaction_id"])
        .returning(table.c.transaction_id)
    )
    return compile_for_driver(
        statement, dialect, results=[table.c.transaction_id], column_keys=INSERTED_COLUMNS
    )


def ingest_webhook(payload: dict[str, Any]) -> Receipt:
    """Store a validated webhook as PROCESSING, exactly once per transaction_id.

    One atomic INSERT ... ON CONFLICT DO NOTHING decides which of any number of
    concurrent copies is new; a check-then-insert would let two of them through.
    Once this returns ACCEPTED the row is committed and due, and the worker will
    find it (app/processing/pipeline.py): nothing else has to be enqueued, so
    nothing can be lost between the commit and a broker.
    """
    received_at = utcnow()
    row = {
        **{field: payload[field] for field in ("transaction_id", *BUSINESS_FIELDS)},
        "status": TransactionStatus.PROCESSING,
        "created_at": received_at,
        "next_attempt_at": received_at,  # due at once: the processor is the slow part
    }
    if _insert(row) is not None:
        return Receipt.ACCEPTED

    stored = find_transaction(payload["transaction_id"])
    differing = [field for field in BUSINESS_FIELDS if getattr(stored, field) != payload[field]]
    if differing:
        raise ConflictingDuplicate(differing)
    return Receipt.DUPLICATE


def _insert(row: dict[str, Any]) -> str | None:
    """The INSERT, committed; the transaction_id if it was new, None if it existed."""
    try:
        return _insert_once(row)
    except DBAPIError as exc:
        # After a database restart every pooled connection is dead. The first one
        # used raises and the whole pool is invalidated, so one retry gets a fresh
        # connection; retrying is safe, the insert is idempotent. This replaces
        # pool_pre_ping, which costs a round trip on every request.
        if not exc.connection_invalidated:
            raise
        return _insert_once(row)


def _insert_once(row: dict[str, Any]) -> str | None:
    inserted = fetch_one(db.engine, _insert_ignoring_conflicts(db.engine.dialect), row)
    return inserted.transaction_id if inserted else None


@functools.cache
def _select_by_id(dialect: Dialect) -> DriverStatement:
    table = Transaction.__table__
    statement = select(table).where(table.c.transaction_id == bindparam("transaction_id"))
    return compile_for_driver(statement, dialect, results=list(table.c))


def find_transaction(transaction_id: str) -> tuple | None:
    """The stored transaction (attributes as on the model), or None."""
    statement = _select_by_id(db.engine.dialect)
    return fetch_one(db.engine, statement, {"transaction_id": transaction_id})


def list_transactions(
    *, status: TransactionStatus | None, limit: int, after: tuple[datetime, str] | None
) -> list[Row]:
    """Newest first, `limit` of them, starting after the (created_at, transaction_id) given."""
    table = Transaction.__table__
    query = select(table).order_by(table.c.created_at.desc(), table.c.transaction_id.desc())
    if status is not None:
        query = query.where(table.c.status == status)
    if after is not None:
        query = query.where(tuple_(table.c.created_at, table.c.transaction_id) < tuple_(*after))
    with db.engine.connect() as connection:
        return list(connection.execute(query.limit(limit)))


def _failed(since: datetime | None, error_contains: str | None, ids: list[str] | None):
    """The WHERE clause for FAILED transactions, narrowed by the re-drive's filters."""
    table = Transaction.__table__
    clauses = [table.c.status == TransactionStatus.FAILED]
    if ids is not None:
        clauses.append(table.c.transaction_id.in_(ids))
    if since is not None:
        clauses.append(table.c.failed_at >= since)
    if error_contains:
        clauses.append(table.c.last_error.contains(error_contains, autoescape=True))
    return clauses


def redrive_failed(
    *,
    transaction_ids: list[str] | None = None,
    since: datetime | None = None,
    error_contains: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Move FAILED transactions back to PROCESSING, due now, attempts counted afresh.

    Returns the ids re-driven (or, with dry_run, those that would be). With `limit`, the
    longest-failed first, that many: a processor just back need not take every failure
    of an outage at once. The UPDATE is conditional on FAILED, so two operators
    re-driving at once move each row once. last_error stays until the next attempt's
    outcome replaces it.
    """
    table = Transaction.__table__
    where = _failed(since, error_contains, transaction_ids)
    with db.engine.connect() as connection:
        if limit is not None:
            # The ids first, then the UPDATE by id: `WHERE id IN (SELECT ... LIMIT n)` is
            # the form the planner may turn inside out (app/processing/pipeline.py).
            oldest = (
                select(table.c.transaction_id)
                .where(*where)
                .order_by(table.c.failed_at, table.c.transaction_id)
                .limit(limit)
            )
            picked = list(connection.scalars(oldest))
            if dry_run or not picked:
                return picked
            where.append(table.c.transaction_id.in_(picked))
        elif dry_run:
            return list(connection.scalars(select(table.c.transaction_id).where(*where)))
        now = utcnow()
        statement = (
            update(table)
            .where(*where)
            .values(
                status=TransactionStatus.PROCESSING,
                next_attempt_at=now,
                attempts=0,
                claimed_until=None,
                redriven_at=now,  # failed_at stays: when it failed, for the record and the chart
            )
            .returning(table.c.transaction_id)
        )
        moved = list(connection.scalars(statement))
        if limit is None:
            return moved
        kept = set(moved)  # in the order they failed, as the dry run showed them
        return [transaction_id for transaction_id in picked if transaction_id in kept]
