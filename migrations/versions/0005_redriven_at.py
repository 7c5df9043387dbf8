"""when an operator last re-drove a transaction

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

A re-drive moves a FAILED transaction back to PROCESSING with its attempts counted
afresh and its failed_at cleared; without this column, its row kept no trace that it
had failed and been re-driven. Nullable, with no default: cheap on a large table, no
row is rewritten.
"""

import sqlalchemy as sa
from alembic import op

from app.store.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(sa.Column("redriven_at", UTCDateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("redriven_at")
