"""transactions table

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from app.store.models import ExactDecimal, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STILL_PROCESSING = sa.text("status = 'PROCESSING'")


def upgrade():
    op.create_table(
        "transactions",
        sa.Column("transaction_id", sa.String(length=255), nullable=False),
        sa.Column("source_account", sa.String(length=255), nullable=False),
        sa.Column("destination_account", sa.String(length=255), nullable=False),
        sa.Column("amount", ExactDecimal(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "PROCESSING",
                "PROCESSED",
                name="status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("process_after", UTCDateTime(), nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("transaction_id", name=op.f("pk_transactions")),
    )
    op.create_index(
        "ix_transactions_due",
        "transactions",
        ["process_after"],
        postgresql_where=STILL_PROCESSING,
        sqlite_where=STILL_PROCESSING,
    )


def downgrade():
    op.drop_index("ix_transactions_due", table_name="transactions")
    op.drop_table("transactions")
