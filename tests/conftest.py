"""Fixtures: the app on SQLite and on a throwaway PostgreSQL database, migrated by Alembic.

PostgreSQL and Redis are required, not optional: a test that needs one fails with
a message naming it rather than skipping. ./run_tests.sh starts PostgreSQL where it can.
Redis is a redis-server this session starts on a free port and stops: a Redis the
developer already runs (127.0.0.1:6379 or any other) is never touched. TEST_REDIS_URL
names one to use instead, which must be empty when the session starts.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import flask_migrate
import pytest
import redis
from flask import Flask
from sqlalchemy import Engine, create_engine, delete
from sqlalchemy.exc import OperationalError

from app import create_app
from app.extensions import db
from app.store.models import Transaction
from scripts.processes import POSTGRES_ADMIN_URL, RedisServer, ThrowawayDatabase

ROOT = Path(__file__).resolve().parent.parent


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
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A Redis database for this session alone: a redis-server of its own, or TEST_REDIS_URL."""
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        try:
            keys = redis.Redis.from_url(given, socket_connect_timeout=2).dbsize()
        except redis.RedisError as exc:
            pytest.fail(f"TEST_REDIS_URL={given} does not answer: {exc}")
        if keys:
            pytest.fail(
                f"TEST_REDIS_URL={given} holds {keys} keys; the tests empty the database "
                "they use, so they use only an empty one. Unset TEST_REDIS_URL to let them "
                "start a redis-server of their own."
            )
        yield given
        return
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.fail(f"redis-server is required (./run_tests.sh installs it): {exc}")
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'webhooks.sqlite3'}"
    migrate(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """Each test that asks for it runs on both databases."""
    return request.getfixturevalue(f"{request.param}_url")


@contextmanager
def emptied_app(database_url: str, **overrides) -> Iterator[Flask]:
    """The app on this database, with no transactions in it; its pool closed afterwards."""
    app = make_app(database_url, **overrides)
    with app.app_context():
        db.session.execute(delete(Transaction))
        db.session.commit()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    with emptied_app(database_url) as app:
        yield app


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that stop, restart or flush it."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def database(postgres_url) -> Iterator[Engine]:
    """An engine on the session's PostgreSQL database, for reading what processes wrote."""
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()
