"""What the operator's page shows, read from the database so that every instance agrees.

The counts, the backlog due now and the oldest waiting come from app/store/backlog.py,
which /metrics/pipeline reads too. Each query is served by one of the table's indexes
(app/store/models.py) and reads only the rows it shows: the backlog, the failures, the
last hour. The total of PROCESSED is counted while the table is small and estimated once
it is large (see `status_counts`).
"""

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Row, extract, func, select, text
from sqlalchemy.sql.elements import ColumnElement

from app.extensions import db
from app.store import backlog
from app.store.models import Transaction, TransactionStatus

table = Transaction.__table__
MINUTES = 60
FAILED_SHOWN = 100


@dataclass(frozen=True)
class Minute:
    """One minute of the chart: what arrived, what finished, and how long it took."""

    start: datetime
    received: int = 0
    processed: int = 0
    failed: int = 0
    p50_seconds: float | None = None  # receipt to processed, of those processed this minute
    p99_seconds: float | None = None


def status_counts(connection: Connection) -> tuple[dict[str, int], bool]:
    """Transactions per status, and whether the PROCESSED figure is an estimate.

    PROCESSING and FAILED are counted exactly on their partial indexes, which are as
    small as the backlog and the failures. PROCESSED is nearly every row: past
    EXACT_UP_TO rows, PostgreSQL's own row count of the table (kept by autovacuum and
    ANALYZE) less the other two stands in for a count that would read the whole table
    on every refresh of every open page.
    """
    counts = {status.value: backlog.count(connection, status) for status in _SMALL_STATUSES}
    processed = TransactionStatus.PROCESSED.value
    rows = _estimated_rows(connection)
    if rows > EXACT_UP_TO:
        counts[processed] = max(rows - sum(counts.values()), 0)
        estimated = True
    else:
        counts[processed] = backlog.count(connection, TransactionStatus.PROCESSED)
        estimated = False
    return {status.value: counts[status.value] for status in TransactionStatus}, estimated


EXACT_UP_TO = 100_000
_SMALL_STATUSES = (TransactionStatus.PROCESSING, TransactionStatus.FAILED)


def _estimated_rows(connection: Connection) -> int:
    """PostgreSQL's estimate of the table's rows (-1 before it was first analysed); 0 on
    SQLite, which keeps none and serves one machine's traffic: there the count is exact."""
    if connection.dialect.name != "postgresql":
        return 0
    estimate = text("SELECT reltuples FROM pg_class WHERE oid = 'transactions'::regclass")
    return int(connection.scalar(estimate))


def newest_failed(connection: Connection, limit: int = FAILED_SHOWN) -> list[Row]:
    """FAILED transactions, the latest failure first (ix_transactions_latest_failed, FAILED
    rows only, read backwards from its newest end)."""
    query = (
        select(
            table.c.transaction_id,
            table.c.amount,
            table.c.currency,
            table.c.created_at,
            table.c.failed_at,
            table.c.attempts,
            table.c.last_error,
        )
        .where(table.c.status == TransactionStatus.FAILED, table.c.failed_at.is_not(None))
        .order_by(table.c.failed_at.desc(), table.c.transaction_id.desc())
        .limit(limit)
    )
    return list(connection.execute(query))


def chart_window(now: datetime) -> tuple[datetime, datetime]:
    """The last hour as whole minutes: 59 past ones and the one in progress."""
    this_minute = now.replace(second=0, microsecond=0)
    return this_minute - timedelta(minutes=MINUTES - 1), this_minute + timedelta(minutes=1)


def last_hour(connection: Connection, now: datetime) -> list[Minute]:
    """The chart, minute by minute, oldest first, from three range scans:
    created_at (ix_transactions_newest), processed_at and failed_at (their indexes)."""
    start, end = chart_window(now)
    received = _per_minute(connection, table.c.created_at, start, end)
    failed = _per_minute(connection, table.c.failed_at, start, end)
    if connection.dialect.name == "postgresql":
        processed = _processed_in_sql(connection, start, end)
    else:
        processed = _processed_in_python(connection, start, end)
    minutes = []
    for index in range(MINUTES):
        moment = start + timedelta(minutes=index)
        key = _key(moment)
        count, p50, p99 = processed.get(key, (0, None, None))
        minutes.append(Minute(moment, received.get(key, 0), count, failed.get(key, 0), p50, p99))
    return minutes


def _key(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M")


def _minute_of(connection: Connection, column) -> ColumnElement[str]:
    """The UTC minute a timestamp falls in, as text like 2026-11-27T17:40, in SQL."""
    if connection.dialect.name == "postgresql":
        utc = func.timezone("UTC", column)  # timestamptz -> UTC wall time
        return func.to_char(func.date_trunc("minute", utc), 'YYYY-MM-DD"T"HH24:MI')
    return func.strftime("%Y-%m-%dT%H:%M", column)  # SQLite keeps naive UTC text


def _per_minute(connection: Connection, column, start: datetime, end: datetime) -> dict:
    minute = _minute_of(connection, column).label("minute")
    query = select(minute, func.count()).where(column >= start, column < end).group_by(minute)
    return {key: count for key, count in connection.execute(query)}


def _processed_in_sql(connection: Connection, start: datetime, end: datetime) -> dict:
    """PostgreSQL: count and percentiles per minute in one statement; 60 rows come back,
    however many thousands were processed in the hour."""
    minute = _minute_of(connection, table.c.processed_at).label("minute")
    waited = extract("epoch", table.c.processed_at - table.c.created_at)
    query = (
        select(
            minute,
            func.count(),
            func.percentile_cont(0.5).within_group(waited),
            func.percentile_cont(0.99).within_group(waited),
        )
        .where(table.c.processed_at >= start, table.c.processed_at < end)
        .group_by(minute)
    )
    return {
        key: (count, float(p50), float(p99)) for key, count, p50, p99 in connection.execute(query)
    }


def _processed_in_python(connection: Connection, start: datetime, end: datetime) -> dict:
    """SQLite has no percentile function: read the hour's processed rows (through the
    processed_at index) and compute what percentile_cont computes on PostgreSQL."""
    query = select(table.c.created_at, table.c.processed_at).where(
        table.c.processed_at >= start, table.c.processed_at < end
    )
    waits: dict[str, list[float]] = defaultdict(list)
    for created_at, processed_at in connection.execute(query):
        waits[_key(processed_at)].append((processed_at - created_at).total_seconds())
    return {
        key: (len(values), percentile_cont(values, 0.5), percentile_cont(values, 0.99))
        for key, values in waits.items()
    }


def percentile_cont(values: list[float], fraction: float) -> float:
    """The continuous percentile, interpolated between the two nearest values, as SQL's
    percentile_cont: of [1, 2, 3, 4] the median is 2.5."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def connect() -> Connection:
    return db.engine.connect()
