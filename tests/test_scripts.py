"""The start and stop scripts, run as a newcomer runs them, on a copy of the repository.

With nothing configured, this is the embedded default: SQLite for the data and
kombu's SQLAlchemy transport on a SQLite file as the broker, yet still separate
web, worker and beat processes.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from helpers import post_webhook, wait_until, webhook
from sqlalchemy import create_engine, make_url, text

from app.config import database_url
from scripts.processes import POSTGRES_ADMIN_URL, ROOT, free_port, service_env

pytestmark = pytest.mark.processes


@pytest.fixture
def checkout(tmp_path) -> Path:
    """The repository's files (as git sees them) in a fresh folder, sharing this .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    copy = tmp_path / "checkout"
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    # The venv is shared so the test does not reinstall every package.
    (copy / ".venv").symlink_to(Path(sys.prefix))
    return copy


def run(script: Path, env: dict) -> str:
    result = subprocess.run(
        [str(script)], cwd=script.parent, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: the broker" not in result.stderr, result.stderr
    return result.stdout


def pids(checkout: Path) -> dict[str, int]:
    run_dir = checkout / "var" / "run"
    return {path.stem: int(path.read_text()) for path in run_dir.glob("*.pid")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_start_serve_process_restart_and_stop_on_the_embedded_default(checkout):
    port = free_port()
    env = service_env(
        PORT=str(port),
        PROCESSING_DELAY_SECONDS="1",
        WEB_CONCURRENCY="2",
        LOG_MAX_BYTES="2048",  # so that var/log files rotate within the test
        LOG_BACKUPS="1000",  # ...and the first lines are still in a backup, however slow it is
    )
    url = f"http://127.0.0.1:{port}"
    try:
        output = run(checkout / "start_services.sh", env)
        assert f"The service answers at {url}" in output
        started = pids(checkout)
        assert set(started) == {"web", "worker", "beat"}

        body = webhook()
        assert post_webhook(url, body).status_code == 202

        def is_processed():
            shown = requests.get(
                f"{url}/v1/transactions/{body['transaction_id']}", timeout=5
            ).json()
            return shown["status"] == "PROCESSED"

        wait_until(is_processed, timeout=60)
        # Metrics from the web's and the worker's processes, as the scripts run them.
        figures = requests.get(f"{url}/metrics", timeout=5).text
        assert 'webhooks_received_total{outcome="accepted"} 1.0' in figures
        assert "transactions_processed_total 1.0" in figures
        assert (checkout / "var" / "webhooks.sqlite3").exists()
        assert (checkout / "var" / "celery-broker.sqlite3").exists()
        # Gunicorn's start-up and the requests pass 2 KB: the web's log has been rotated,
        # and its first lines are in a backup.
        backups = sorted((checkout / "var" / "log").glob("web.log.*"))
        assert backups, "web.log was not rotated"
        assert any("Booting worker" in backup.read_text() for backup in backups)

        again = run(checkout / "start_services.sh", env)
        assert again.count("already running") == 3
        assert pids(checkout) == started
    finally:
        stopped = run(checkout / "stop_services.sh", env)
    assert "Stopped." in stopped
    assert pids(checkout) == {}
    assert not any(alive(pid) for pid in started.values())


def run_failing(script: Path, env: dict) -> str:
    result = subprocess.run(
        [str(script)], cwd=script.parent, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture
def postgres_admin():
    engine = create_engine(database_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def role_without_rights(postgres_admin):
    """A PostgreSQL login that may neither create databases nor tables in others' schemas."""
    name = f"webhooks_test_role_{uuid.uuid4().hex[:8]}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f'CREATE ROLE "{name}" LOGIN NOCREATEDB'))
    yield name
    with postgres_admin.connect() as connection:
        connection.execute(text(f'DROP ROLE "{name}"'))


def server_url(user: str, database: str) -> str:
    url = make_url(database_url(POSTGRES_ADMIN_URL))
    return url.set(username=user, database=database).render_as_string(hide_password=False)


def test_a_missing_database_is_created_when_the_server_allows_it(checkout, postgres_admin):
    name = f"webhooks_test_missing_{uuid.uuid4().hex[:8]}"
    admin_user = make_url(database_url(POSTGRES_ADMIN_URL)).username
    port = free_port()
    env = service_env(PORT=str(port), DATABASE_URL=server_url(admin_user, name))
    try:
        output = run(checkout / "start_services.sh", env)
        assert f'Created the database "{name}"' in output
        assert f"The service answers at http://127.0.0.1:{port}" in output
        body = webhook()
        assert post_webhook(f"http://127.0.0.1:{port}", body).status_code == 202
    finally:
        run(checkout / "stop_services.sh", env)
        with postgres_admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_a_missing_database_that_cannot_be_created_is_named_with_the_command(
    checkout, role_without_rights
):
    name = f"webhooks_test_missing_{uuid.uuid4().hex[:8]}"
    env = service_env(PORT=str(free_port()), DATABASE_URL=server_url(role_without_rights, name))
    output = run_failing(checkout / "start_services.sh", env)
    assert "Traceback" not in output
    assert f'the database "{name}" does not exist' in output
    assert "createdb -h " in output and f"-O {role_without_rights} {name}" in output
    assert len(output.strip().splitlines()) <= 6, output
    assert pids(checkout) == {}  # nothing half-started


def test_a_failed_migration_is_kept_in_var_log_and_starts_nothing(
    checkout, postgres_admin, role_without_rights
):
    # The database exists, but this login may not create tables in it (PostgreSQL 15+).
    name = f"webhooks_test_locked_{uuid.uuid4().hex[:8]}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    env = service_env(PORT=str(free_port()), DATABASE_URL=server_url(role_without_rights, name))
    try:
        output = run_failing(checkout / "start_services.sh", env)
    finally:
        with postgres_admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    assert "var/log/migrate.log" in output
    logged = (checkout / "var" / "log" / "migrate.log").read_text()
    assert "permission denied for schema public" in logged
    assert pids(checkout) == {}


def test_a_broker_that_does_not_answer_is_a_warning_not_a_failed_start(checkout):
    """Webhooks are accepted without it; but a mistyped REDIS_URL must not pass unseen."""
    port = free_port()
    # Not this machine's loopback address, so the script starts no redis-server for it.
    env = service_env(PORT=str(port), REDIS_URL="redis://127.0.0.2:1/0")
    try:
        result = subprocess.run(
            [str(checkout / "start_services.sh")],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"The service answers at http://127.0.0.1:{port}" in result.stdout
        assert "warning: the broker does not answer" in result.stderr, result.stderr
        assert post_webhook(f"http://127.0.0.1:{port}", webhook()).status_code == 202
    finally:
        run(checkout / "stop_services.sh", env)
    assert pids(checkout) == {}


def test_stop_waits_for_a_request_in_flight(checkout):
    port = free_port()
    env = service_env(PORT=str(port), WEB_CONCURRENCY="1")
    run(checkout / "start_services.sh", env)
    body = json.dumps(webhook(amount=15)).encode()
    head = (
        f"POST /v1/webhooks/transactions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    client = socket.create_connection(("127.0.0.1", port), timeout=60)
    client.sendall(head + body[:10])  # the request is now in flight, half sent
    stopping = subprocess.Popen(
        [str(checkout / "stop_services.sh")],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Gunicorn closes its listening socket as soon as it has the TERM.
        wait_until(lambda: refused(port), timeout=30)
        assert stopping.poll() is None, "stop_services.sh did not wait for the request"
        client.sendall(body[10:])
        answer = client.recv(65536).decode()
    finally:
        client.close()
        output, _ = stopping.communicate(timeout=120)
    assert answer.startswith("HTTP/1.1 202"), answer
    assert stopping.returncode == 0 and "sending KILL" not in output, output
    assert pids(checkout) == {}


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False
