"""indexes for listing transactions newest first

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from app.store.index_builds import build_index, drop_index

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STILL_PROCESSING = sa.text("status = 'PROCESSING'")


def upgrade():
    # CONCURRENTLY on PostgreSQL: webhooks keep being written while an index
    # builds on a large table. It cannot run inside a transaction.
    with op.get_context().autocommit_block():
        build_index("ix_transactions_newest", "transactions", ["created_at", "transaction_id"])
        build_index(
            "ix_transactions_newest_processing",
            "transactions",
            ["created_at", "transaction_id"],
            where=STILL_PROCESSING,
        )


def downgrade():
    with op.get_context().autocommit_block():
        drop_index("ix_transactions_newest_processing", "transactions")
        drop_index("ix_transactions_newest", "transactions")
