"""Rows for the operator's page tests, written straight into the table.

FAILED rows are made here as the worker makes them (status, failed_at, last_error,
attempts, no due time): test data, not a mock of anything the service runs.
"""

import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, insert

from app.store.models import Transaction, TransactionStatus

table = Transaction.__table__

ERRORS = [
    "processor answered 422: destination account acc_merchant_456 is closed",
    "processor answered 402: insufficient funds in acc_user_789",
    "gave up after 10 attempts; last: timeout after 60 s waiting for the processor",
    "processor answered 409: currency INR not enabled for this merchant",
]


def row(
    transaction_id: str,
    status: TransactionStatus,
    created_at: datetime,
    *,
    processed_at: datetime | None = None,
    failed_at: datetime | None = None,
    next_attempt_at: datetime | None = None,
    attempts: int = 0,
    last_error: str | None = None,
    amount: Decimal = Decimal("25.00"),
    currency: str = "USD",
) -> dict[str, Any]:
    return {
        "transaction_id": transaction_id,
        "source_account": "acc_user_789",
        "destination_account": "acc_merchant_456",
        "amount": amount,
        "currency": currency,
        "status": status,
        "created_at": created_at,
        "next_attempt_at": next_attempt_at,
        "attempts": attempts,
        "last_error": last_error,
        "processed_at": processed_at,
        "failed_at": failed_at,
    }


def failed(transaction_id: str, created_at: datetime, error: str, attempts: int = 10, **kw):
    return row(
        transaction_id,
        TransactionStatus.FAILED,
        created_at,
        failed_at=created_at + timedelta(minutes=2),
        attempts=attempts,
        last_error=error,
        **kw,
    )


def insert_rows(connection: Connection, rows: list[dict[str, Any]]) -> None:
    connection.execute(insert(table), rows)


def realistic_hour(now: datetime, seed: int = 7) -> list[dict[str, Any]]:
    """An hour of traffic: a steady stream processed ~30 s after receipt, a busier
    stretch with slower processing, a few still PROCESSING, and some FAILED."""
    rng = random.Random(seed)
    rows = []
    for minutes_ago in range(59, -1, -1):
        busy = 20 <= minutes_ago <= 30
        for n in range(rng.randint(40, 70) if busy else rng.randint(15, 30)):
            received = now - timedelta(minutes=minutes_ago, seconds=rng.uniform(0, 59))
            waited = timedelta(seconds=30 + rng.expovariate(1 / (25 if busy else 4)))
            transaction_id = f"txn_{minutes_ago:02d}{n:03d}{rng.randrange(16**6):06x}"
            amount = Decimal(rng.randint(100, 500_000)) / 100
            if received + waited > now:  # not yet done: still waiting
                rows.append(
                    row(
                        transaction_id,
                        TransactionStatus.PROCESSING,
                        received,
                        next_attempt_at=received + timedelta(seconds=30),
                        amount=amount,
                    )
                )
            elif rng.random() < 0.01:
                attempts = rng.randint(1, 10)
                rows.append(
                    failed(
                        transaction_id,
                        received,
                        rng.choice(ERRORS),
                        attempts=attempts,
                        amount=amount,
                    )
                    | {"failed_at": received + waited}
                )
            else:
                rows.append(
                    row(
                        transaction_id,
                        TransactionStatus.PROCESSED,
                        received,
                        processed_at=received + waited,
                        attempts=1,
                        amount=amount,
                    )
                )
    return rows
