"""The schema comes from Alembic migrations, and they match the models."""

import flask_migrate
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import ROOT, make_app
from sqlalchemy import inspect

from app.extensions import db

MIGRATIONS = str(ROOT / "migrations")


def test_migrations_match_the_models(database_url):
    app = make_app(database_url)
    with app.app_context(), db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
        db.engine.dispose()
    assert differences == []


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
