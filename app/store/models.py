"""The one table: a transaction as received, and how far its processing has got.

The row is also the work queue (the outbox): a transaction is due when it is
PROCESSING and its `next_attempt_at` has passed. A worker claims it by moving
`next_attempt_at` to `claimed_until` (the processor timeout plus a margin) and
counting the attempt; if the worker dies, the row simply falls due again then.
"""

import enum
import re
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Dialect, Enum, Index, Numeric, String, Text, TypeDecorator, text
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import DateTime

from app.extensions import db

# Largest amount the column holds: 15 integer digits, 4 decimal places (the most
# any ISO 4217 currency has: CLF, UYW).
AMOUNT_PRECISION = 19
AMOUNT_SCALE = 4


# What a transaction id may hold: printable ASCII, the first and last character visible.
# The id is the processor's Idempotency-Key header (app/processing/http.py), and a
# header carries nothing else exactly: a server strips the spaces around a value, so
# "txn_1 " would reach the processor as "txn_1", another transaction's key, and a
# character beyond ASCII cannot be sent at all.
TRANSACTION_ID = re.compile(r"[!-~](?:[ -~]*[!-~])?")


def utcnow() -> datetime:
    return datetime.now(UTC)


class TransactionStatus(enum.StrEnum):
    PROCESSING = "PROCESSING"  # received; waiting for, or in, an attempt
    PROCESSED = "PROCESSED"  # the processor answered done
    FAILED = "FAILED"  # refused for good, or out of attempts; an operator may re-drive it


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC on PostgreSQL; text on SQLite, whose NUMERIC would round through a float."""

    impl = Numeric(AMOUNT_PRECISION, AMOUNT_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(AMOUNT_PRECISION + 2))
        return dialect.type_descriptor(Numeric(AMOUNT_PRECISION, AMOUNT_SCALE))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect):
        if value is None or dialect.name != "sqlite":
            return value
        return str(value)

    def process_result_value(self, value, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on PostgreSQL (timestamptz) and SQLite (naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Transaction(db.Model):
    __tablename__ = "transactions"

    transaction_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    source_account: Mapped[str] = mapped_column(String(255))
    destination_account: Mapped[str] = mapped_column(String(255))
    amount: Mapped[Decimal] = mapped_column(ExactDecimal())
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[TransactionStatus] = mapped_column(
        Enum(TransactionStatus, native_enum=False, create_constraint=True, name="status", length=16)
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the next attempt is due; NULL once the outcome is final. While an attempt
    # runs it equals claimed_until, so a dead worker's transaction falls due again.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Processor calls made so far (the attempt in flight included).
    attempts: Mapped[int] = mapped_column(server_default="0")
    # Set while an attempt is in flight: nobody else calls the processor for this
    # transaction before then, and the attempt's answer counts only until then.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text())
    processor_reference: Mapped[str | None] = mapped_column(String(255))
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When an operator last moved it from FAILED back to PROCESSING; NULL if never.
    # failed_at stays then: when it last failed.
    redriven_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        # Only the transactions still waiting, in the order they fall due: the
        # worker's query reads this index, and it stays as small as the backlog.
        Index(
            "ix_transactions_due",
            "next_attempt_at",
            postgresql_where=status == TransactionStatus.PROCESSING.value,
            sqlite_where=status == TransactionStatus.PROCESSING.value,
        ),
        # The listing, newest first, walked by keyset: all transactions...
        Index("ix_transactions_newest", "created_at", "transaction_id"),
        # ...and those still PROCESSING, which an operator asks for most and
        # which would otherwise be needles among the processed.
        Index(
            "ix_transactions_newest_processing",
            "created_at",
            "transaction_id",
            postgresql_where=status == TransactionStatus.PROCESSING.value,
            sqlite_where=status == TransactionStatus.PROCESSING.value,
        ),
        # ...and those FAILED, which the operator's page and re-drive look for.
        Index(
            "ix_transactions_newest_failed",
            "created_at",
            "transaction_id",
            postgresql_where=status == TransactionStatus.FAILED.value,
            sqlite_where=status == TransactionStatus.FAILED.value,
        ),
        # The operator's list of failures, the latest first: FAILED rows only, since
        # failed_at stays on the re-driven (the chart below counts them).
        Index(
            "ix_transactions_latest_failed",
            "failed_at",
            "transaction_id",
            postgresql_where=status == TransactionStatus.FAILED.value,
            sqlite_where=status == TransactionStatus.FAILED.value,
        ),
        # The dashboard's last hour, minute by minute, without scanning the table.
        # Only rows that have the time: a NULL entry per waiting row would be written
        # by every webhook's INSERT and claim, and nothing looks NULLs up.
        *(
            Index(
                f"ix_transactions_{column}",
                column,
                postgresql_where=text(f"{column} IS NOT NULL"),
                sqlite_where=text(f"{column} IS NOT NULL"),
            )
            for column in ("processed_at", "failed_at")
        ),
    )
