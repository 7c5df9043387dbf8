"""indexes for listing transactions newest first

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STILL_PROCESSING = sa.text("status = 'PROCESSING'")


def upgrade():
    # CONCURRENTLY on PostgreSQL: webhooks keep being written while an index
    # builds on a large table. It cannot run inside a transaction.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_transactions_newest",
            "transactions",
            ["created_at", "transaction_id"],
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_transactions_newest_processing",
            "transactions",
            ["created_at", "transaction_id"],
            postgresql_where=STILL_PROCESSING,
            sqlite_where=STILL_PROCESSING,
            postgresql_concurrently=True,
        )


def downgrade():
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_transactions_newest_processing",
            table_name="transactions",
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_transactions_newest", table_name="transactions", postgresql_concurrently=True
        )
