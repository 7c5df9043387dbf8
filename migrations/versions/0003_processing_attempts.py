"""processing by a processor: attempts, claims, outcomes, FAILED

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

Cheap on a large table: a column rename, nullable columns and a constant default
change no row. Rows already PROCESSED keep attempts = 0 (no processor was called
for them) and their old due time, which nothing reads once a row is final.
"""

import sqlalchemy as sa
from alembic import op

from app.store.index_builds import build_index, drop_index
from app.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FAILED = sa.text("status = 'FAILED'")
STATUSES = {
    "upgrade": "status IN ('PROCESSING', 'PROCESSED', 'FAILED')",
    "downgrade": "status IN ('PROCESSING', 'PROCESSED')",
}


def _replace_status_check(direction: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        # NOT VALID, then VALIDATE: the check of existing rows does not block writers.
        op.execute("ALTER TABLE transactions DROP CONSTRAINT ck_transactions_status")
        op.execute(
            "ALTER TABLE transactions ADD CONSTRAINT ck_transactions_status "
            f"CHECK ({STATUSES[direction]}) NOT VALID"
        )
        op.execute("ALTER TABLE transactions VALIDATE CONSTRAINT ck_transactions_status")
        return
    with op.batch_alter_table("transactions", recreate="always") as batch:
        batch.drop_constraint(op.f("ck_transactions_status"), type_="check")
        batch.create_check_constraint("status", STATUSES[direction])


def upgrade():
    # A run that failed while building the indexes (below) has committed these changes;
    # run again, it goes straight to the indexes. (Offline, with --sql, there is nothing
    # to inspect, and all of it is written out.)
    columns = set()
    if not op.get_context().as_sql:
        columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("transactions")}
    if "attempts" not in columns:
        with op.batch_alter_table("transactions") as batch:
            batch.alter_column("process_after", new_column_name="next_attempt_at", nullable=True)
            batch.add_column(
                sa.Column("attempts", sa.Integer(), server_default="0", nullable=False)
            )
            batch.add_column(sa.Column("claimed_until", UTCDateTime(), nullable=True))
            batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
            batch.add_column(sa.Column("processor_reference", sa.String(255), nullable=True))
            batch.add_column(sa.Column("failed_at", UTCDateTime(), nullable=True))
        _replace_status_check("upgrade")
    # CONCURRENTLY on PostgreSQL: webhooks keep arriving while the indexes build.
    with op.get_context().autocommit_block():
        build_index(
            "ix_transactions_newest_failed",
            "transactions",
            ["created_at", "transaction_id"],
            where=FAILED,
        )
        for column in ("processed_at", "failed_at"):
            build_index(f"ix_transactions_{column}", "transactions", [column])


def downgrade():
    with op.get_context().autocommit_block():
        for name in ("failed_at", "processed_at", "newest_failed"):
            drop_index(f"ix_transactions_{name}", "transactions")
    # FAILED has no place in the old schema: such rows go back to waiting.
    op.execute(
        "UPDATE transactions SET status = 'PROCESSING', next_attempt_at = failed_at"
        " WHERE status = 'FAILED'"
    )
    op.execute("UPDATE transactions SET next_attempt_at = created_at WHERE next_attempt_at IS NULL")
    _replace_status_check("downgrade")
    with op.batch_alter_table("transactions") as batch:
        for column in ("failed_at", "processor_reference", "last_error", "claimed_until"):
            batch.drop_column(column)
        batch.drop_column("attempts")
        batch.alter_column("next_attempt_at", new_column_name="process_after", nullable=False)
