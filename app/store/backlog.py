"""What is waiting: counts by status, the backlog due now, the oldest still PROCESSING,
and the longest any due transaction has waited for a worker.

Read by the operator's page (app/dashboard/) and by GET /metrics/pipeline (app/metrics.py),
so both say the same thing the same way. PROCESSING and FAILED are read through indexes
as small as the backlog and the failures (partial indexes, app/store/models.py);
PROCESSED, nearly every row, is counted only while the table is small (the dashboard's
`status_counts` estimates it past that).
"""

from datetime import datetime

from sqlalchemy import Connection, Row, func, literal, select

from app.store.models import Transaction, TransactionStatus

table = Transaction.__table__


def count(
    connection: Connection,
    status: TransactionStatus,
    *,
    due_by: datetime | None = None,
    up_to: int | None = None,
) -> int:
    """Transactions in `status` (only those due by `due_by`, if given).

    With `up_to`, counting stops there, so that the cost stays bounded however large
    the backlog: a count over a million PROCESSING rows took 383 ms.
    """
    where = [table.c.status == status]
    if due_by is not None:
        where.append(table.c.next_attempt_at <= due_by)
    if up_to is None:
        return connection.scalar(select(func.count()).select_from(table).where(*where))
    limited = select(literal(1)).select_from(table).where(*where).limit(up_to).subquery()
    return connection.scalar(select(func.count()).select_from(limited))


def oldest_processing(connection: Connection) -> Row | None:
    """The PROCESSING transaction received first (ix_transactions_newest_processing)."""
    query = (
        select(table.c.transaction_id, table.c.created_at)
        .where(table.c.status == TransactionStatus.PROCESSING)
        .order_by(table.c.created_at, table.c.transaction_id)
        .limit(1)
    )
    return connection.execute(query).first()


def oldest_due(connection: Connection, now: datetime) -> datetime | None:
    """When the longest-overdue transaction fell due (ix_transactions_due, its first entry).

    A claimed transaction is not due: its claim moved next_attempt_at to the claim's end."""
    query = select(func.min(table.c.next_attempt_at)).where(
        table.c.status == TransactionStatus.PROCESSING, table.c.next_attempt_at <= now
    )
    return connection.scalar(query)
