"""the processed_at and failed_at indexes hold only the rows that have one

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

As 0003 made them, both indexes had an entry for every row, NULL or not: a
webhook's INSERT, its claim and its outcome each wrote one in both, and the
failed_at index was nearly all NULLs. Their readers (the operator's page, the
re-drive's --since) only ask for times, which no NULL matches, so the planner
still picks them with the predicate.
"""

import sqlalchemy as sa
from alembic import op

from app.store.index_builds import IndexState, build_index, drop_index, index_state

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("processed_at", "failed_at")


def _rebuild(column: str, partial: bool) -> None:
    name = f"ix_transactions_{column}"
    where = sa.text(f"{column} IS NOT NULL") if partial else None
    if op.get_bind().dialect.name != "postgresql":  # SQLite cannot rename an index
        drop_index(name, "transactions")
        build_index(name, "transactions", [column], where=where)
        return
    # The new index beside the old one, then the swap, both CONCURRENTLY: webhooks keep
    # being written while a large table is indexed. Each step is one a second run can
    # repeat, should the first fail between them; a swap it finished is not done again.
    wanted = IndexState.PARTIAL if partial else IndexState.FULL
    if index_state(name) is wanted and index_state(f"{name}_new") is IndexState.MISSING:
        return
    build_index(f"{name}_new", "transactions", [column], where=where)
    drop_index(name, "transactions")
    op.execute(f"ALTER INDEX {name}_new RENAME TO {name}")


def upgrade():
    with op.get_context().autocommit_block():
        for column in COLUMNS:
            _rebuild(column, partial=True)


def downgrade():
    with op.get_context().autocommit_block():
        for column in COLUMNS:
            _rebuild(column, partial=False)
