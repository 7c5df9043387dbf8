"""GET /metrics on the running service: Gunicorn workers and the Celery worker add up."""

import pytest
import requests
from conftest import make_app
from helpers import as_json, wait_until, webhook
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, delete
from test_signatures import SECRET, signed_headers

from app.store.models import Transaction
from scripts.processes import POSTGRES_ADMIN_URL, Service, ThrowawayDatabase

pytestmark = pytest.mark.processes

DELAY = 3.0


@pytest.fixture(scope="module")
def service(postgres_url, redis_url, tmp_path_factory):
    # Known traffic needs a known start: no transactions from earlier tests.
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(delete(Transaction))
    engine.dispose()
    with Service(
        tmp_path_factory.mktemp("metrics"),
        DATABASE_URL=postgres_url,
        CELERY_BROKER_URL=redis_url,
        PROCESSING_DELAY_SECONDS=str(DELAY),
        WEBHOOK_SECRET=SECRET,
        WEB_CONCURRENCY="3",  # several workers: the counts must add up across them
    ) as service:
        # The web alone: the test starts the worker once the traffic is in (known figures).
        yield service.start("web")


def scrape(service, path: str = "/metrics") -> dict[tuple, float]:
    text = requests.get(f"{service.url}{path}", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def send(service, body, signed=True, raw: str | None = None) -> int:
    data = raw if raw is not None else as_json(body)
    headers = signed_headers(data) if signed else {"Content-Type": "application/json"}
    response = requests.post(
        f"{service.url}/v1/webhooks/transactions", data=data, headers=headers, timeout=10
    )
    return response.status_code


def test_known_traffic_gives_known_figures(service):
    before = scrape(service)
    bodies = [webhook() for _ in range(6)]
    statuses = [send(service, body) for body in bodies]  # spread over the 3 workers
    statuses += [send(service, bodies[0]), send(service, bodies[1])]  # duplicates
    statuses += [send(service, dict(bodies[2], amount=1))]  # conflict
    statuses += [send(service, webhook(currency="XXQ")), send(service, None, raw="{")]  # invalid
    statuses += [send(service, webhook(), signed=False)]  # unauthorized
    statuses += [send(service, webhook(padding="x" * 70_000))]  # too large
    # The duplicates answer 202 as the first did; the metrics still count them apart.
    assert statuses == [202] * 6 + [202, 202, 409, 422, 400, 401, 413]

    pipeline = scrape(service, "/metrics/pipeline")
    assert pipeline[("transactions_waiting", ())] == 6
    assert pipeline[("oldest_processing_age_seconds", ())] > 0
    assert pipeline[("transactions_failed", ())] == 0
    assert pipeline[("oldest_due_age_seconds", ())] > 0  # due, and no worker runs yet
    # The database-wide gauges are not on /metrics, which every instance serves.
    waiting = scrape(service)
    assert ("transactions_waiting", ()) not in waiting
    # The simulated processor waits DELAY: all six calls are in flight at once, as the
    # worker, started now, claims them together.
    service.start("worker", "beat")
    in_flight = ("processor_calls_in_flight", ())
    assert wait_until(lambda: scrape(service).get(in_flight) == 6, timeout=DELAY + 10)

    def counted(outcome, figures):
        key = ("webhooks_received_total", (("outcome", outcome),))
        return figures.get(key, 0) - before.get(key, 0)

    assert {
        outcome: counted(outcome, waiting)
        for outcome in ("accepted", "duplicate", "conflict", "invalid", "unauthorized", "too_large")
    } == {
        "accepted": 6,
        "duplicate": 2,
        "conflict": 1,
        "invalid": 2,
        "unauthorized": 1,
        "too_large": 1,
    }
    latency = ("webhook_acknowledgement_seconds_count", ())
    assert waiting[latency] - before.get(latency, 0) == 13

    wait_until(
        lambda: scrape(service, "/metrics/pipeline")[("transactions_waiting", ())] == 0,
        timeout=DELAY + 30,
    )
    processed = scrape(service)
    # The worker's figures, from its own processes, in the web's /metrics.
    assert (
        processed[("transactions_processed_total", ())]
        - before.get(("transactions_processed_total", ()), 0)
        == 6
    )
    waited = ("transaction_received_to_processed_seconds_count", ())
    assert processed[waited] - before.get(waited, 0) == 6
    under_delay = ("transaction_received_to_processed_seconds_bucket", (("le", "2.0"),))
    assert processed[under_delay] - before.get(under_delay, 0) == 0  # none before the delay
    calls = ("processor_calls_total", (("outcome", "done"),))
    assert processed[calls] - before.get(calls, 0) == 6
    call_seconds = ("processor_call_seconds_count", ())
    assert processed[call_seconds] - before.get(call_seconds, 0) == 6
    attempts = ("transaction_attempts_sum", (("status", "PROCESSED"),))
    assert processed[attempts] - before.get(attempts, 0) == 6  # one attempt each
    assert processed[in_flight] == 0
    drained = scrape(service, "/metrics/pipeline")
    assert drained[("oldest_processing_age_seconds", ())] == 0
    assert drained[("oldest_due_age_seconds", ())] == 0
    assert drained[("database_up", ())] == 1


def test_send_webhook_command_sends_a_signed_webhook(service):
    app = make_app(service.env["DATABASE_URL"], WEBHOOK_SECRETS=[SECRET])
    result = app.test_cli_runner().invoke(
        args=[
            "send-webhook",
            "--url",
            service.url,
            "--transaction-id",
            "cli_1",
            "--amount",
            "12.30",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "202" in result.output
    shown = requests.get(f"{service.url}/v1/transactions/cli_1", timeout=10).json()
    assert shown["amount"] == 12.3

    unsigned = make_app(service.env["DATABASE_URL"], WEBHOOK_SECRETS=[])
    refused = unsigned.test_cli_runner().invoke(args=["send-webhook", "--url", service.url])
    assert refused.exit_code == 1
    assert "401" in refused.output


def test_a_killed_workers_calls_in_flight_are_taken_back_when_a_worker_starts(redis_url, tmp_path):
    """SIGKILL leaves a worker's last figure in the sum; the next worker to start removes it
    (the killed worker's claims still hold, so the new one has nothing in flight)."""
    in_flight = ("processor_calls_in_flight", ())
    # A database of its own: the module's service, still running, claims only from its own.
    with (
        ThrowawayDatabase(POSTGRES_ADMIN_URL) as database_url,
        Service(
            tmp_path,
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=redis_url,
            PROCESSING_DELAY_SECONDS="60",
        ) as service,
    ):
        service.start()
        assert [send(service, webhook()) for _ in range(4)] == [202] * 4
        assert wait_until(lambda: scrape(service).get(in_flight) == 4, timeout=20)
        service["worker"].kill()
        assert scrape(service)[in_flight] == 4  # no one is left to take them back

        service.start("worker")
        wait_until(lambda: service["worker"].log().count(" ready.") == 2, timeout=30)
        assert scrape(service)[in_flight] == 0
