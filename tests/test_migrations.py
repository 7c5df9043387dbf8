"""The schema comes from Alembic migrations, and they match the models."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import flask_migrate
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import ROOT, make_app
from sqlalchemy import create_engine, event, inspect, select, text

from app.extensions import db
from app.processing.pipeline import claim_due
from app.store.models import Transaction, TransactionStatus
from scripts.processes import POSTGRES_ADMIN_URL, ThrowawayDatabase

MIGRATIONS = str(ROOT / "migrations")
HEAD = ScriptDirectory(MIGRATIONS).get_current_head()


def test_migrations_match_the_models(database_url):
    app = make_app(database_url)
    with app.app_context(), db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
        db.engine.dispose()
    assert differences == []


def test_the_outcome_time_indexes_hold_only_rows_that_have_the_time(database_url):
    """Every webhook's INSERT and claim would otherwise write a NULL entry in both."""
    app = make_app(database_url)
    with app.app_context(), db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'transactions'"
        else:
            query = "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'transactions'"
        definitions = dict(connection.execute(text(query)).all())
        db.engine.dispose()
    for column in ("processed_at", "failed_at"):
        definition = definitions[f"ix_transactions_{column}"]
        words = " ".join(definition.replace("(", " ").replace(")", " ").split())
        assert words.endswith(f"WHERE {column} IS NOT NULL"), definition


def test_migrations_upgrade_downgrade_and_upgrade_again(tmp_path):
    app = make_app(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    with app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS)
        assert "transactions" in inspect(db.engine).get_table_names()
        flask_migrate.downgrade(directory=MIGRATIONS, revision="base")
        assert "transactions" not in inspect(db.engine).get_table_names()
        flask_migrate.upgrade(directory=MIGRATIONS)
        assert "transactions" in inspect(db.engine).get_table_names()
        db.engine.dispose()


def test_upgrading_a_database_that_holds_transactions_in_every_state(database_url, tmp_path):
    """0002 -> 0003 on rows as the old service left them; the new worker then takes them on."""
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'upgrade.sqlite3'}"
    else:
        database = ThrowawayDatabase(POSTGRES_ADMIN_URL, migrated=False)
        database_url = database.__enter__()
    app = make_app(database_url)
    try:
        with app.app_context():
            flask_migrate.upgrade(directory=MIGRATIONS, revision="0002")
            now = datetime.now(UTC)
            with db.engine.connect() as connection:
                for transaction_id, status, due, processed in (
                    ("old_waiting", "PROCESSING", now - timedelta(seconds=5), None),
                    ("old_later", "PROCESSING", now + timedelta(hours=1), None),
                    ("old_done", "PROCESSED", now - timedelta(hours=1), now),
                ):
                    connection.execute(
                        text(
                            "INSERT INTO transactions (transaction_id, source_account,"
                            " destination_account, amount, currency, status, created_at,"
                            " process_after, processed_at) VALUES (:id, 'a', 'b', :amount, 'USD',"
                            " :status, :created, :due, :processed)"
                        ),
                        {
                            "id": transaction_id,
                            "amount": "10.50",
                            "status": status,
                            "created": _stored(db.engine, now - timedelta(hours=1)),
                            "due": _stored(db.engine, due),
                            "processed": _stored(db.engine, processed),
                        },
                    )
            flask_migrate.upgrade(directory=MIGRATIONS)

            rows = {r.transaction_id: r for r in db.session.scalars(select(Transaction))}
            assert rows["old_done"].status is TransactionStatus.PROCESSED
            assert rows["old_done"].attempts == 0 and rows["old_done"].processed_at is not None
            assert rows["old_waiting"].status is TransactionStatus.PROCESSING
            assert rows["old_waiting"].amount == Decimal("10.50")
            assert rows["old_later"].next_attempt_at > now  # its old due time is kept
            assert all(r.last_error is None and r.claimed_until is None for r in rows.values())
            assert all(r.redriven_at is None for r in rows.values())  # 0005: none was
            # The pipeline takes on what was due, and FAILED is a status the table accepts.
            [claim] = claim_due(db.engine, 10, hold_seconds=60)
            assert claim.transaction_id == "old_waiting" and claim.attempt == 1
            with db.engine.connect() as connection:
                connection.execute(
                    text("UPDATE transactions SET status = 'FAILED' WHERE transaction_id = :id"),
                    {"id": "old_later"},
                )
            db.session.remove()
            db.engine.dispose()
    finally:
        if not database_url.startswith("sqlite"):
            database.__exit__()


@pytest.mark.parametrize(
    ("start", "failing_build", "built_before"),
    [
        # 0002's second index fails; its first stays.
        ("0001", "ix_transactions_newest_processing", "ix_transactions_newest"),
        # 0003's second, its columns committed.
        ("0002", "ix_transactions_processed_at", "ix_transactions_newest_failed"),
        # 0004's second swap; its first is done.
        ("0003", "ix_transactions_failed_at_new", "ix_transactions_processed_at"),
        # 0005's index, its column committed; what 0004 built is kept.
        ("0004", "ix_transactions_latest_failed", "ix_transactions_failed_at"),
    ],
)
def test_an_upgrade_whose_index_build_failed_completes_when_run_again(
    postgres_url, start, failing_build, built_before
):
    """A CONCURRENTLY build that fails leaves an INVALID index; the next run deals with it,
    and does not build again what the failed run had finished (on a large table, hours).

    The build fails as it does in production: it waits for a transaction that writes to
    the table, and a statement_timeout cancels it.
    """
    with ThrowawayDatabase(POSTGRES_ADMIN_URL, migrated=False) as database_url:
        app = make_app(database_url)
        writer = create_engine(database_url)
        with app.app_context(), writer.connect() as writing:
            flask_migrate.upgrade(directory=MIGRATIONS, revision=start)

            def fail_the_build(_conn, cursor, statement, *_args):
                if statement.startswith(f"CREATE INDEX CONCURRENTLY {failing_build} "):
                    writing.execute(text("LOCK TABLE transactions IN ROW EXCLUSIVE MODE"))
                    cursor.execute("SET statement_timeout = '300ms'")

            event.listen(db.engine, "before_cursor_execute", fail_the_build)
            with pytest.raises(Exception, match="statement timeout"):
                flask_migrate.upgrade(directory=MIGRATIONS)
            event.remove(db.engine, "before_cursor_execute", fail_the_build)
            writing.rollback()
            db.engine.dispose()
            assert _invalid_indexes(db.engine) == [failing_build]  # as a real failure leaves it
            kept = _index_oid(db.engine, built_before)

            flask_migrate.upgrade(directory=MIGRATIONS)

            assert _invalid_indexes(db.engine) == []
            assert _index_oid(db.engine, built_before) == kept
            with db.engine.connect() as connection:
                assert MigrationContext.configure(connection).get_current_revision() == HEAD
                assert compare_metadata(MigrationContext.configure(connection), db.metadata) == []
            db.engine.dispose()
        writer.dispose()


def _index_oid(engine, name: str) -> int:
    with engine.connect() as connection:
        return connection.scalar(text("SELECT to_regclass(:name)::oid"), {"name": name})


def test_the_migrations_write_their_sql_offline_for_postgresql(postgres_url, capsys):
    """`flask db upgrade --sql`: no database to ask whether an index exists."""
    app = make_app(postgres_url)
    with app.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS, sql=True)
        db.engine.dispose()
    written = capsys.readouterr().out
    assert "CREATE INDEX CONCURRENTLY ix_transactions_newest_failed" in written
    assert (
        "ALTER INDEX ix_transactions_failed_at_new RENAME TO ix_transactions_failed_at" in written
    )


def _invalid_indexes(engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.scalars(
                text(
                    "SELECT indexrelid::regclass::text FROM pg_index"
                    " WHERE NOT indisvalid AND indrelid = 'transactions'::regclass"
                )
            )
        )


def _stored(engine, moment):
    """A time as the old schema's column held it (naive UTC text on SQLite)."""
    if moment is None or engine.dialect.name != "sqlite":
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
