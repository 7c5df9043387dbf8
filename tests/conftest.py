"""Fixtures: the app on SQLite and on a throwaway PostgreSQL database, migrated by Alembic.

PostgreSQL and Redis are required, not optional: a test that needs one fails with
a message naming it rather than skipping. ./run_tests.sh starts them where it can.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import flask_migrate
import pytest
from flask import Flask
from sqlalchemy import delete
from sqlalchemy.exc import OperationalError

from app import create_app
from app.extensions import db
from app.store.models import Transaction
from scripts.processes import POSTGRES_ADMIN_URL, ThrowawayDatabase

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def make_app(database_url: str, **overrides) -> Flask:
    return create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url, **overrides})


def migrate(database_url: str) -> None:
    app = make_app(database_url)
    with app.app_context():
        flask_migrate.upgrade(directory=str(ROOT / "migrations"))
        db.engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped afterwards."""
    database = ThrowawayDatabase(POSTGRES_ADMIN_URL)
    try:
        url = database.__enter__()
    except OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is required at {POSTGRES_ADMIN_URL} (set TEST_POSTGRES_URL, "
            f"or run ./run_tests.sh, which starts it): {exc.orig}"
        )
    yield url
    database.__exit__()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'webhooks.sqlite3'}"
    migrate(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """Each test that asks for it runs on both databases."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    app = make_app(database_url)
    with app.app_context():
        db.session.execute(delete(Transaction))
        db.session.commit()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app: Flask):
    return app.test_client()
