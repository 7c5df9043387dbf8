"""Index builds in migrations that a second run completes after the first failed half-way.

On PostgreSQL the migrations build indexes CONCURRENTLY, so that webhooks keep being
written while a large table is indexed. Such a build cannot run in a transaction, and when
it fails (cancelled by the operator, a timeout, the connection lost) it leaves an INVALID
index under its name: never read, yet written by every INSERT, and in the way of the next
run ("relation ... already exists"). Every index the migrations build on PostgreSQL goes
through `build_index`, so that running `flask db upgrade` again is the whole recovery.

Offline (`flask db upgrade --sql`) there is no database to ask: the statements are those
for a database that has none of these indexes yet.
"""

from collections.abc import Sequence
from enum import Enum

from alembic import op
from sqlalchemy import TextClause, text


class IndexState(Enum):
    MISSING = "missing"
    INVALID = "invalid"  # what a failed CONCURRENTLY build leaves
    FULL = "full"  # valid, every row
    PARTIAL = "partial"  # valid, with a WHERE


def index_state(name: str) -> IndexState:
    """What PostgreSQL holds under this index name."""
    if op.get_context().as_sql:
        return IndexState.MISSING
    row = (
        op.get_bind()
        .execute(
            text(
                "SELECT indisvalid, indpred IS NOT NULL FROM pg_index"
                " WHERE indexrelid = to_regclass(:name)"
            ),
            {"name": name},
        )
        .first()
    )
    if row is None:
        return IndexState.MISSING
    valid, partial = row
    if not valid:
        return IndexState.INVALID
    return IndexState.PARTIAL if partial else IndexState.FULL


def build_index(
    name: str, table: str, columns: Sequence[str], where: TextClause | None = None
) -> None:
    """CREATE INDEX, CONCURRENTLY on PostgreSQL; call it inside an autocommit_block.

    A valid index of this name was built by an earlier run that failed later, and is kept;
    an invalid one is what a failed build left, and is dropped and built again. (The name
    is the whole test: give an index of another definition another name.)
    """
    if op.get_bind().dialect.name != "postgresql":  # SQLite: no concurrent builds
        op.create_index(name, table, columns, sqlite_where=where, if_not_exists=True)
        return
    state = index_state(name)
    if state in (IndexState.FULL, IndexState.PARTIAL):
        return
    if state is IndexState.INVALID:
        drop_index(name, table)
    op.create_index(name, table, columns, postgresql_where=where, postgresql_concurrently=True)


def drop_index(name: str, table: str) -> None:
    """DROP INDEX, CONCURRENTLY on PostgreSQL, and none the worse if an earlier run did it."""
    op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
