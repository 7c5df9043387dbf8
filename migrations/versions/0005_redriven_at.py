"""re-drives keep their trace: redriven_at, and failed_at kept

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

A re-drive moves a FAILED transaction back to PROCESSING with its attempts counted
afresh. Until now it also cleared failed_at, so its row kept no trace that it had
failed and been re-driven, and the operator's chart lost the failures of an outage
once they were re-driven. Now failed_at stays (when it last failed) and redriven_at
says when it was re-driven. The column is nullable, with no default: no row is
rewritten. The operator's list of what is FAILED, newest failure first, can no
longer walk the failed_at index (it holds the re-driven too), so it gets one of its
own, holding FAILED rows only: as small as the failures.
"""

import sqlalchemy as sa
from alembic import op

from app.store.index_builds import build_index, drop_index
from app.store.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LATEST_FAILED = "ix_transactions_latest_failed"


def upgrade():
    columns = set()
    if not op.get_context().as_sql:  # a run that failed at the index has added it
        columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("transactions")}
    if "redriven_at" not in columns:
        with op.batch_alter_table("transactions") as batch:
            batch.add_column(sa.Column("redriven_at", UTCDateTime(), nullable=True))
    with op.get_context().autocommit_block():  # CONCURRENTLY on PostgreSQL
        build_index(
            LATEST_FAILED,
            "transactions",
            ["failed_at", "transaction_id"],
            where=sa.text("status = 'FAILED'"),
        )


def downgrade():
    with op.get_context().autocommit_block():
        drop_index(LATEST_FAILED, "transactions")
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("redriven_at")
