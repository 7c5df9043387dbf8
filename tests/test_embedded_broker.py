"""The embedded default runs for months: its SQLite broker holds what is pending, not history.

Real worker and beat processes on a SQLite database and kombu's SQLite broker, as
./start_services.sh runs them with nothing configured, for a little over a minute: beat sends
a tick a second, the worker consumes each one, and the broker must not grow with time.
"""

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import migrate

from app.embedded_broker import CLEANUP_EVERY_SECONDS
from scripts.processes import Service

pytestmark = pytest.mark.processes

WARM_UP_SECONDS = 15
WATCH_SECONDS = 60  # six cleanups; without them, 60 more consumed rows and ~100 KB


def consumed_and_pending(broker: Path) -> tuple[int, int]:
    with sqlite3.connect(broker, timeout=30) as connection:
        rows = dict(
            connection.execute("SELECT visible, count(*) FROM kombu_message GROUP BY visible")
        )
    return rows.get(0, 0), rows.get(1, 0)


def test_the_sqlite_broker_does_not_grow_with_time(tmp_path):
    database = f"sqlite:///{tmp_path / 'webhooks.sqlite3'}"
    migrate(database)
    broker = tmp_path / "celery-broker.sqlite3"
    service = Service(tmp_path, DATABASE_URL=database, CELERY_BROKER_URL=f"sqla+sqlite:///{broker}")
    try:
        service.start("worker", "beat")
        time.sleep(WARM_UP_SECONDS)
        size_after_warm_up = broker.stat().st_size
        samples = []
        deadline = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < deadline:
            time.sleep(5)
            samples.append((*consumed_and_pending(broker), broker.stat().st_size))
        assert service["worker"].running() and service["beat"].running(), service.logs()
    finally:
        service.stop()
    print("consumed, pending, file size every 5 s:", samples)
    assert "Traceback" not in service["worker"].log(), service.logs()
    # Beat sent a tick a second and the worker consumed each one, yet consumed rows never
    # pile up past about one cleanup interval's worth,
    assert max(consumed for consumed, _, _ in samples) <= 3 * CLEANUP_EVERY_SECONDS, samples
    # and the file keeps its size: freed pages are reused (at most a few new ones, 4 KB each).
    assert samples[-1][2] <= size_after_warm_up + 16 * 1024, (size_after_warm_up, samples)
