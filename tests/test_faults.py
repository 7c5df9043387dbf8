"""Faults produced for real: every accepted webhook is still processed, exactly once.

Each test runs its own Gunicorn, Celery worker and beat against the session's
PostgreSQL database, and its own redis-server where it breaks Redis.
"""

import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests
from helpers import (
    as_json,
    get_transaction,
    post_webhook,
    times_processed,
    wait_until,
    webhook,
)
from sqlalchemy import make_url, select
from tcp_proxy import TCPProxy

from app.store.models import Transaction, TransactionStatus
from scripts.processes import ProcessorSimulator, Service

pytestmark = pytest.mark.processes

DELAY = 3.0
# The promise: once a fault ends, what is pending is processed within this.
RECOVERY_BOUND = timedelta(minutes=2)


@pytest.fixture
def processor(request, tmp_path):
    """The simulated processor (DELAY s), or with `indirect` "http", the HTTP processor in
    front of the simulator at the same latency; the service's settings for either."""
    if getattr(request, "param", "simulated") == "simulated":
        yield {}
        return
    simulator = ProcessorSimulator(tmp_path, "--latency", str(DELAY)).start()
    yield {"PROCESSOR_URL": f"{simulator.url}/process", "PROCESSOR_TIMEOUT_SECONDS": "10"}
    simulator.stop()


# The faults that touch processing most, run with both processors; the rest with the default.
BOTH_PROCESSORS = pytest.mark.parametrize("processor", ["simulated", "http"], indirect=True)


@pytest.fixture
def start_service(postgres_url, redis_server, tmp_path, processor):
    started: list[Service] = []

    def start(database_url: str = postgres_url) -> Service:
        service = Service(
            tmp_path,
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=redis_server.url,
            PROCESSING_DELAY_SECONDS=str(DELAY),
            **processor,
        )
        started.append(service)
        return service.start()

    yield start
    for service in started:
        service.stop()


def accept(service: Service, count: int) -> list[str]:
    """Send `count` new webhooks; every one must be acknowledged 202."""
    bodies = [webhook() for _ in range(count)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda body: post_webhook(service.url, body).status_code, bodies))
    assert statuses == [202] * count, service.logs()
    return [body["transaction_id"] for body in bodies]


def rows(database, ids: list[str]) -> list[Transaction]:
    with database.connect() as connection:
        return list(
            connection.execute(select(Transaction).where(Transaction.transaction_id.in_(ids)))
        )


def assert_all_processed_once(service: Service, database, ids: list[str], recovered_at: datetime):
    """Every id reaches PROCESSED within the bound, and the worker told each done once."""

    def all_processed():
        found = rows(database, ids)
        return len(found) == len(ids) and all(
            r.status == TransactionStatus.PROCESSED for r in found
        )

    wait_until(all_processed, timeout=RECOVERY_BOUND.total_seconds(), interval=0.5)
    for row in rows(database, ids):
        due = row.created_at + timedelta(seconds=DELAY)  # the simulated processor's wait
        assert row.processed_at >= due
        assert row.processed_at <= max(due, recovered_at) + RECOVERY_BOUND
    worker_log = service["worker"].log()
    assert [times_processed(worker_log, i) for i in ids] == [1] * len(ids)


def still_processing(database, ids: list[str]) -> bool:
    return all(r.status == TransactionStatus.PROCESSING for r in rows(database, ids))


@BOTH_PROCESSORS
def test_worker_killed_mid_wait(start_service, database):
    service = start_service()
    ids = accept(service, 50)
    service["worker"].kill()
    time.sleep(DELAY + 2)  # all fall due while no worker runs
    assert still_processing(database, ids)

    recovered_at = datetime.now(UTC)
    service.start("worker")
    assert_all_processed_once(service, database, ids, recovered_at)


@BOTH_PROCESSORS
def test_redis_restarted_with_ticks_pending(start_service, database, redis_server):
    service = start_service()
    ids = accept(service, 50)
    service["worker"].kill()
    time.sleep(1.5)  # beat queues ticks no worker takes
    redis_server.restart()  # ...and they are gone: Redis keeps nothing on disk here
    recovered_at = datetime.now(UTC)
    service.start("worker")
    assert_all_processed_once(service, database, ids, recovered_at)

    # Beat and worker reconnected: what arrives afterwards is processed too.
    later = accept(service, 10)
    assert_all_processed_once(service, database, later, datetime.now(UTC))


def test_redis_flushed(start_service, database, redis_server):
    service = start_service()
    ids = accept(service, 50)
    redis_server.flushall()
    assert_all_processed_once(service, database, ids, datetime.now(UTC))


def test_broker_unreachable_when_webhooks_arrive(start_service, database, redis_server):
    service = start_service()
    # Everything connected first (start() waits for the web only): one webhook through.
    assert_all_processed_once(service, database, accept(service, 1), datetime.now(UTC))
    redis_server.stop()
    # A tick delivered just before the stop could still claim what arrives next.
    wait_until(lambda: "Connection to broker lost" in service["worker"].log(), timeout=30)

    ids = accept(service, 30)  # the request path never touches the broker
    # ...so the instance stays in the load balancer, saying what is down.
    ready = requests.get(f"{service.url}/health/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["components"]["broker"]["status"] == "down"
    time.sleep(DELAY + 2)
    assert still_processing(database, ids)  # nothing can run without a broker
    assert {r.attempts for r in rows(database, ids)} == {0}  # nor was anything claimed

    redis_server.start()  # same port
    assert_all_processed_once(service, database, ids, datetime.now(UTC))
    # Beat had a tick to send each second of the outage: lines of one line each say it
    # could not, where a failed tick used to write two tracebacks (about 150 lines); the
    # worker's mailbox wrote one more.
    beat_lines = [line for line in service["beat"].log().splitlines() if "ERROR" in line]
    assert beat_lines and all("onnect" in line or "apply" in line for line in beat_lines)
    assert "Traceback" not in service.logs(), service.logs()


@BOTH_PROCESSORS
def test_database_down_answers_503_and_recovers_without_restart(
    start_service, database, postgres_url
):
    url = make_url(postgres_url)
    proxy = TCPProxy(url.host, url.port or 5432).start()
    service = start_service(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
    before = accept(service, 10)

    proxy.cut()
    body = webhook()
    response = post_webhook(service.url, body)  # a timeout here would fail the test: no hanging
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 503
    assert "Traceback" not in response.text

    lookup = get_transaction(service.url, before[0])
    assert lookup.status_code == 503
    assert lookup.json()["title"] == "Service Unavailable"
    time.sleep(2)  # some ticks fail while the database is away

    proxy.restore()
    retried = wait_until(lambda: post_webhook(service.url, body).status_code == 202, timeout=30)
    assert retried
    assert_all_processed_once(
        service, database, [*before, body["transaction_id"]], datetime.now(UTC)
    )
    assert "database unavailable" in service["worker"].log()
    assert "Traceback" not in service["web"].log() + service["worker"].log()
    proxy.cut()


def test_a_database_restart_costs_no_webhook(start_service, database, postgres_url):
    """Pooled connections die with the server; the next webhook is still accepted at once."""
    url = make_url(postgres_url)
    proxy = TCPProxy(url.host, url.port or 5432).start()
    service = start_service(url.set(host="127.0.0.1", port=proxy.port).render_as_string(False))
    before = accept(service, 20)  # every Gunicorn worker now holds a pooled connection
    proxy.cut()  # ...which the "restart" kills
    proxy.restore()
    after = accept(service, 20)  # 202 each, first try
    assert_all_processed_once(service, database, before + after, datetime.now(UTC))
    proxy.cut()


def test_conflicting_duplicate_is_refused_and_the_original_processed(start_service, database):
    service = start_service()
    body = webhook(amount=Decimal("250.00"), currency="EUR")
    assert post_webhook(service.url, body).status_code == 202
    conflict = post_webhook(service.url, dict(body, amount=Decimal("2500.00")))
    assert conflict.status_code == 409
    assert list(conflict.json()["errors"]) == ["amount"]

    assert_all_processed_once(service, database, [body["transaction_id"]], datetime.now(UTC))
    assert get_transaction(service.url, body["transaction_id"]).json()["amount"] == 250


def test_gunicorn_workers_reloaded_under_load(start_service, database):
    service = start_service()
    statuses: list[int] = []
    ids: list[str] = []
    stop = threading.Event()

    def keep_sending():
        while not stop.is_set():
            body = webhook()
            statuses.append(post_webhook(service.url, body).status_code)
            ids.append(body["transaction_id"])

    senders = [threading.Thread(target=keep_sending) for _ in range(4)]
    for sender in senders:
        sender.start()
    for _ in range(2):
        time.sleep(1)
        service["web"].popen.send_signal(signal.SIGHUP)  # new workers, old ones finish gracefully
    time.sleep(1)
    stop.set()
    for sender in senders:
        sender.join()

    assert statuses and set(statuses) == {202}
    assert_all_processed_once(service, database, ids, datetime.now(UTC))


def test_stopping_gunicorn_lets_the_request_in_flight_finish(start_service, database):
    service = start_service()
    sent = webhook()
    body = as_json(sent).encode()
    request = (
        f"POST /v1/webhooks/transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=20) as sock:
        sock.sendall(request + body[:20])  # the request is now in flight
        time.sleep(0.3)
        service["web"].popen.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(body[20:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 202"), answer
    assert [row.transaction_id for row in rows(database, [sent["transaction_id"]])] == [
        sent["transaction_id"]
    ]
    service["web"].popen.wait(timeout=40)  # and then Gunicorn exits


def test_stop_and_start_loses_nothing(start_service, database):
    service = start_service()
    ids = accept(service, 50)
    service.stop()  # TERM: Gunicorn finishes requests, the worker shuts down warm
    time.sleep(DELAY)
    recovered_at = datetime.now(UTC)
    service.start()
    assert_all_processed_once(service, database, ids, recovered_at)


@BOTH_PROCESSORS
def test_a_steady_stream_survives_everything_at_once(start_service, database, redis_server):
    """Webhooks keep arriving while the worker is killed and Redis restarted."""
    service = start_service()
    accepted: list[str] = []
    stop = threading.Event()

    def keep_sending():
        session = requests.Session()
        while not stop.is_set():
            body = webhook()
            if post_webhook(service.url, body, session=session).status_code == 202:
                accepted.append(body["transaction_id"])

    senders = [threading.Thread(target=keep_sending) for _ in range(2)]
    for sender in senders:
        sender.start()
    time.sleep(1)
    service["worker"].kill()
    time.sleep(1)
    redis_server.restart()
    service.start("worker")
    time.sleep(1)
    stop.set()
    for sender in senders:
        sender.join()

    assert_all_processed_once(service, database, accepted, datetime.now(UTC))
