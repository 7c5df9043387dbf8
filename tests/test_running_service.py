"""End to end over HTTP: Gunicorn, a Celery worker and beat, on PostgreSQL and Redis."""

import json
import subprocess
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal

import pytest
import redis
import requests
from helpers import get_transaction, post_webhook, times_processed, wait_until, webhook

from scripts.processes import BIN, POSTGRES_ADMIN_URL, ROOT, Service, ThrowawayDatabase

pytestmark = pytest.mark.processes

DELAY = 2.0


@pytest.fixture(scope="module")
def service(postgres_url, redis_url, tmp_path_factory):
    # The session's own Redis (conftest): emptying it touches nobody else's data.
    redis.Redis.from_url(redis_url).flushdb()
    with Service(
        tmp_path_factory.mktemp("service"),
        DATABASE_URL=postgres_url,
        CELERY_BROKER_URL=redis_url,
        PROCESSING_DELAY_SECONDS=str(DELAY),
    ) as service:
        yield service.start()


def send(service, body) -> requests.Response:
    return post_webhook(service.url, body)


def fetch(service, transaction_id) -> dict:
    response = get_transaction(service.url, transaction_id)
    assert response.status_code == 200
    return response.json()


def processed(service, transaction_id) -> dict | None:
    shown = fetch(service, transaction_id)
    return shown if shown["status"] == "PROCESSED" else None


def processed_count(service, transaction_id) -> int:
    return times_processed(service["worker"].log(), transaction_id)


def test_webhook_goes_from_processing_to_processed_after_the_delay(service):
    body = webhook(amount=Decimal("100.50"), currency="USD")
    response = send(service, body)
    assert response.status_code == 202, service.logs()
    assert response.json() == {"message": "Webhook received and queued for processing"}

    shown = fetch(service, body["transaction_id"])
    assert shown["status"] == "PROCESSING"
    assert shown["processed_at"] is None
    assert shown["amount"] == 100.5

    done = wait_until(lambda: processed(service, body["transaction_id"]), timeout=DELAY + 30)
    waited = datetime.fromisoformat(done["processed_at"]) - datetime.fromisoformat(
        done["created_at"]
    )
    assert waited.total_seconds() >= DELAY

    # A late duplicate is answered as the first, changes nothing, and nothing is processed twice.
    late = send(service, body)
    assert (late.status_code, late.headers["Idempotent-Replayed"]) == (202, "true")
    assert late.json() == response.json()
    assert fetch(service, body["transaction_id"]) == done
    assert processed_count(service, body["transaction_id"]) == 1


def test_forty_identical_webhooks_at_once_make_one_row_processed_once(service, postgres_url):
    body = webhook()
    start = threading.Barrier(40)

    def send_at_once(_):
        start.wait()
        response = send(service, body)
        return response.status_code, response.headers.get("Idempotent-Replayed")

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(send_at_once, range(40)))

    # Every copy is answered 202; exactly one of them was the first, not a replay.
    assert Counter(answers) == {(202, None): 1, (202, "true"): 39}
    wait_until(lambda: processed(service, body["transaction_id"]), timeout=DELAY + 30)
    assert processed_count(service, body["transaction_id"]) == 1


def test_a_burst_of_three_hundred_is_all_processed(service):
    bodies = [webhook() for _ in range(300)]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda body: send(service, body).status_code, bodies))
    assert statuses == [202] * 300

    def all_processed():
        return all(processed(service, body["transaction_id"]) for body in bodies)

    wait_until(all_processed, timeout=DELAY + 60, interval=1)
    for body in bodies:
        shown = fetch(service, body["transaction_id"])
        waited = datetime.fromisoformat(shown["processed_at"]) - datetime.fromisoformat(
            shown["created_at"]
        )
        assert waited.total_seconds() >= DELAY
        assert processed_count(service, body["transaction_id"]) == 1


def test_send_webhook_posts_to_the_port_in_the_environment(service):
    # The service listens on a free port, never 8000; PORT is in its environment.
    assert service.env["PORT"] != "8000"
    transaction_id = f"txn_cli_{uuid.uuid4().hex[:12]}"
    sent = subprocess.run(
        [str(BIN / "flask"), "--app", "app", "send-webhook", "--transaction-id", transaction_id],
        cwd=ROOT,
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert f"POST {service.url}/v1/webhooks/transactions" in sent.stdout
    assert fetch(service, transaction_id)["transaction_id"] == transaction_id


def test_without_a_secret_gunicorn_warns_at_start(service):
    assert "WEBHOOK_SECRET is not set: unsigned webhooks are accepted" in service["web"].log()


def test_without_api_tokens_gunicorn_warns_at_start_and_reads_are_open(service):
    assert "API_READ_TOKENS and API_ADMIN_TOKENS are not set" in service["web"].log()
    assert requests.get(f"{service.url}/v1/transactions", timeout=10).status_code == 200


# Celery's TERM handler writes this with os.write straight to stdout, past logging; it
# is the one line that no logging setting reaches.
CELERY_SHUTDOWN_NOTICE = "worker: Warm shutdown (MainProcess)"


def test_json_logs_from_every_process(tmp_path, redis_url):
    # A database of its own: the module's service, still running, would otherwise
    # process this transaction and log it in its own worker's log.
    with ThrowawayDatabase(POSTGRES_ADMIN_URL) as database_url:
        service = Service(
            tmp_path,
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=redis_url,
            PROCESSING_DELAY_SECONDS="1",
            LOG_FORMAT="json",
        )
        try:
            service.start()
            body = webhook()
            assert send(service, body).status_code == 202
            wait_until(lambda: processed(service, body["transaction_id"]), timeout=30)
        finally:
            service.stop()
    for name in ("web", "worker", "beat"):
        lines = [line for line in service[name].log().splitlines() if line.strip()]
        assert lines, name
        for line in lines:
            if line == CELERY_SHUTDOWN_NOTICE:
                continue
            entry = json.loads(line)  # every other line, start-up and shutdown included
            assert {"time", "level", "logger", "message"} <= set(entry), line
    requests_logged = [json.loads(line) for line in service["web"].log().splitlines()]
    webhook_line = next(
        e for e in requests_logged if e.get("transaction_id") == body["transaction_id"]
    )
    assert webhook_line["status"] == 202 and webhook_line["request_id"]
    processed_line = next(
        json.loads(line)
        for line in service["worker"].log().splitlines()
        if body["transaction_id"] in line
    )
    assert processed_line["transaction_id"] == body["transaction_id"]
