"""Request ids, the request log line, JSON logs, readiness, and metrics in one process."""

import io
import json
import logging
import socket
import time
from datetime import UTC, datetime, timedelta

import kombu.exceptions
import pytest
from celery.beat import SchedulingError
from conftest import make_app
from helpers import as_json, webhook
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from test_signatures import SECRET, signed_headers

from app.config import celery_settings
from app.extensions import db
from app.logs import OneLinePerMinute, formatter
from app.store.models import Transaction, TransactionStatus

URL = "/v1/webhooks/transactions"


def post(client, body, **headers):
    return client.post(
        URL, data=as_json(body), headers={"Content-Type": "application/json", **headers}
    )


def test_a_request_id_is_echoed(client):
    response = post(client, webhook(), **{"X-Request-ID": "req-abc.123"})
    assert response.headers["X-Request-ID"] == "req-abc.123"


@pytest.mark.parametrize("given", [None, "", "has spaces", "x" * 129, "semi;colon", "é"])
def test_a_missing_or_unusable_request_id_is_replaced(client, given):
    headers = {} if given is None else {"X-Request-ID": given}
    response = client.get("/", headers=headers)
    assert len(response.headers["X-Request-ID"]) == 32
    assert response.headers["X-Request-ID"] != given


def test_errors_carry_the_request_id(client):
    response = client.post(
        URL, data="{", headers={"Content-Type": "application/json", "X-Request-ID": "r-1"}
    )
    assert response.status_code == 400
    assert response.get_json()["request_id"] == "r-1"


def test_one_log_line_per_request_with_its_fields(client, caplog):
    body = webhook()
    with caplog.at_level(logging.INFO, logger="app.requests"):
        post(client, body, **{"X-Request-ID": "req-1"})
        client.get(f"/v1/transactions/{body['transaction_id']}", headers={"X-Request-ID": "req-2"})
    lines = [r for r in caplog.records if r.name == "app.requests"]
    assert [(r.method, r.path, r.status, r.request_id, r.transaction_id) for r in lines] == [
        ("POST", URL, 202, "req-1", body["transaction_id"]),
        ("GET", f"/v1/transactions/{body['transaction_id']}", 200, "req-2", body["transaction_id"]),
    ]
    assert all(r.duration_ms > 0 for r in lines)
    assert f"transaction_id={body['transaction_id']}" in lines[0].getMessage()


def test_a_refused_webhooks_line_says_why_and_which_transaction_it_named(database_url, caplog):
    """A provider asks about txn_X: its refusals are found by grepping for txn_X."""
    app = make_app(database_url, WEBHOOK_SECRETS=[SECRET])
    client = app.test_client()
    refused = webhook(transaction_id="txn_refused_1", currency="XXQ")
    unsigned = webhook(transaction_id="txn_unsigned_1")
    signed = as_json(refused)
    with caplog.at_level(logging.INFO, logger="app.requests"):
        client.post(URL, data=signed, headers=signed_headers(signed))
        post(client, unsigned)
        client.post(URL, data="{", headers=signed_headers("{"))
        accepted = as_json(webhook(transaction_id="txn_fine_1"))
        client.post(URL, data=accepted, headers=signed_headers(accepted))
    lines = [r for r in caplog.records if r.name == "app.requests"]
    # A refused body's id is what it claims, never taken for a transaction's own.
    assert [(r.status, r.transaction_id, r.claimed_transaction_id) for r in lines] == [
        (422, None, "txn_refused_1"),
        (401, None, "txn_unsigned_1"),  # not signed: anyone could have sent it
        (400, None, None),
        (202, "txn_fine_1", None),
    ]
    assert lines[0].problem == (
        "The body failed validation; see errors. "
        "currency: Must be an ISO 4217 currency code, such as USD, EUR or INR."
    )
    message = lines[0].getMessage()
    assert 'claimed_transaction_id="txn_refused_1" problem=The body failed validation' in message
    assert lines[1].problem.startswith("Send webhook-id, webhook-timestamp and webhook-signature")
    assert lines[2].problem.startswith("The body is not valid JSON")
    assert lines[3].problem is None and "problem=" not in lines[3].getMessage()
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize(
    "claimed, logged",
    [
        (
            "txn_a problem=none transaction_id=txn_victim",
            '"txn_a problem=none transaction_id=txn_victim"',
        ),
        ("txn_\u202eevil", None),  # a bidirectional override: not an id we could store
        ("txn_\u200bzero_width", None),
        (" txn_padded", None),
        ("x" * 256, None),
        (12345, None),
    ],
)
def test_a_claimed_id_is_logged_quoted_and_only_if_it_could_be_an_id(
    client, caplog, claimed, logged
):
    with caplog.at_level(logging.INFO, logger="app.requests"):
        post(client, webhook(transaction_id=claimed, currency="XXQ"))
    [line] = [r for r in caplog.records if r.name == "app.requests"]
    assert line.status == 422 and line.transaction_id is None
    message = line.getMessage()
    if logged is None:
        assert line.claimed_transaction_id is None and "claimed_transaction_id" not in message
    else:
        assert f"claimed_transaction_id={logged} problem=" in message


def test_a_text_log_line_is_one_line_whatever_the_client_sent(app, client):
    """%0A in a path would otherwise write a forged line into the log."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("text"))
    requests_log = logging.getLogger("app.requests")
    requests_log.addHandler(handler)
    try:
        forged = "2026-12-02 05:41:00,000 INFO app.requests [1] POST /v1/webhooks/transactions 202"
        client.get(f"/x%0A{forged}%0D%1B[31m%E2%80%A8")
        client.get("/y%5Cn")  # a backslash and an n, sent as such
    finally:
        requests_log.removeHandler(handler)
    [line, other] = stream.getvalue().splitlines()
    assert "/x\\n2026-12-02 05:41:00,000 INFO" in line
    assert "\\r\\x1b[31m\\u2028" in line
    assert "/y\\\\n " in other  # not to be read as an escaped newline


def test_json_log_lines_are_json_with_the_fields_as_keys():
    record = logging.LogRecord("app.requests", logging.INFO, __file__, 1, "POST / 202", None, None)
    record.request_id = "req-1"
    record.status = 202
    line = json.loads(formatter("json").format(record))
    assert line["level"] == "INFO"
    assert line["logger"] == "app.requests"
    assert line["message"] == "POST / 202"
    assert line["request_id"] == "req-1"
    assert line["status"] == 202
    assert line["time"]


def readiness_app(database_url, broker):
    return make_app(database_url, CELERY=celery_settings(broker, None, claim_seconds=60))


def test_ready_when_database_and_broker_answer(database_url, redis_url):
    app = readiness_app(database_url, redis_url)
    response = app.test_client().get("/health/ready")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "READY"
    assert {name: c["status"] for name, c in body["components"].items()} == {
        "database": "up",
        "broker": "up",
    }
    with app.app_context():
        db.engine.dispose()


def test_a_broker_that_does_not_answer_is_reported_but_leaves_the_instance_ready(database_url):
    """Webhooks are accepted while Redis is down (they wait in the table), so a 503 here
    would only have the load balancer refuse them."""
    app = readiness_app(database_url, "redis://127.0.0.1:1/0")  # nothing listens on port 1
    response = app.test_client().get("/health/ready")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "READY"
    assert body["components"]["broker"] == {"status": "down", "error": "OperationalError"}
    assert body["components"]["database"]["status"] == "up"
    assert app.test_client().post(URL, json=webhook()).status_code == 202
    with app.app_context():
        db.engine.dispose()


def test_a_broker_that_takes_the_connection_and_never_answers_costs_readiness_no_more_than_2_s(
    database_url,
):
    """kombu's timeouts add up to 5 s there; a probe that gives up first would take the
    instance out for a broker it does not need."""
    with socket.socket() as silent:  # the kernel accepts; nothing ever reads or writes
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        app = readiness_app(database_url, f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        response = app.test_client().get("/health/ready")
        took = time.monotonic() - started
    assert response.status_code == 200
    broker = response.get_json()["components"]["broker"]
    assert broker == {"status": "down", "error": "no answer within 2 s"}
    assert took < 4.5  # what a 5 s probe needs; without the budget, 5 s and more
    with app.app_context():
        db.engine.dispose()


def test_not_ready_names_the_database_that_does_not_answer(redis_url):
    app = readiness_app("postgresql+psycopg2://postgres@127.0.0.1:1/none", redis_url)
    response = app.test_client().get("/health/ready")
    assert response.status_code == 503
    problem = response.get_json()
    assert problem["components"]["database"] == {"status": "down", "error": "OperationalError"}
    assert problem["components"]["broker"]["status"] == "up"
    assert problem["detail"] == "Not ready: the database did not answer."
    assert response.headers["Retry-After"]


def samples(text: str) -> dict[tuple, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_webhooks_by_outcome_in_one_process(client):
    before = samples(client.get("/metrics").get_data(as_text=True))
    body = webhook()
    post(client, body)
    post(client, body)
    post(client, dict(body, amount=1))
    post(client, webhook(currency="XXQ"))
    client.options(URL)  # not a webhook: counted as none (it was once an "error")
    after = samples(client.get("/metrics").get_data(as_text=True))

    def delta(outcome):
        key = ("webhooks_received_total", (("outcome", outcome),))
        return after[key] - before.get(key, 0)

    assert [delta(o) for o in ("accepted", "duplicate", "conflict", "invalid")] == [1, 1, 1, 1]
    assert delta("error") == 0
    pipeline = samples(client.get("/metrics/pipeline").get_data(as_text=True))
    assert pipeline[("transactions_waiting", ())] == 1
    assert pipeline[("transactions_due", ())] == 1
    assert pipeline[("transactions_failed", ())] == 0
    assert pipeline[("oldest_processing_age_seconds", ())] > 0
    assert pipeline[("database_up", ())] == 1


def beat_failure(logger: logging.Logger) -> None:
    """What celery.beat logs when a tick cannot be sent: the error, and its stack."""
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as refused:
            raise kombu.exceptions.OperationalError("Error 111 connecting") from refused
    except kombu.exceptions.OperationalError as exc:
        try:
            raise SchedulingError(f"Couldn't apply scheduled task tick: {exc}") from exc
        except SchedulingError as scheduling:
            logger.error("Message Error: %s\n%s", scheduling, ["stack"], exc_info=True)


def test_an_unreachable_broker_is_one_line_a_minute_with_a_count_of_the_rest():
    stream, now = io.StringIO(), [1000.0]
    logger = logging.getLogger("test.beat.outage")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("text"))
    logger.addHandler(handler)
    logger.addFilter(OneLinePerMinute(clock=lambda: now[0]))
    for _ in range(30):  # thirty ticks, one a second
        beat_failure(logger)
        now[0] += 1
    now[0] += 31
    beat_failure(logger)
    try:
        raise ValueError("a bug")
    except ValueError:
        logger.error("Something else", exc_info=True)

    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(
        "SchedulingError: Couldn't apply scheduled task tick: Error 111 connecting"
    ), lines
    assert lines[1].endswith("(and 29 more like it since the last such line)"), lines
    # Anything that is not a broker away keeps its traceback.
    assert lines[2].endswith("Something else") and lines[3] == "Traceback (most recent call last):"
    assert stream.getvalue().count("Traceback") == 1


def test_oldest_due_age_is_how_long_a_due_transaction_has_waited_for_a_claim(app, client):
    """Neither a transaction whose attempt runs (claimed) nor one due later counts."""
    now = datetime.now(UTC)
    for transaction_id, due in (("overdue", -40), ("claimed", +90), ("later", +20)):
        post(client, webhook(transaction_id=transaction_id))
        with app.app_context():
            db.session.execute(
                update(Transaction)
                .where(Transaction.transaction_id == transaction_id)
                .values(next_attempt_at=now + timedelta(seconds=due))
            )
            db.session.commit()

    def age():
        return samples(client.get("/metrics/pipeline").get_data(as_text=True))[
            ("oldest_due_age_seconds", ())
        ]

    assert 40 <= age() < 60
    with app.app_context():
        db.session.execute(
            update(Transaction)
            .where(Transaction.transaction_id == "overdue")
            .values(status=TransactionStatus.PROCESSED, next_attempt_at=None)
        )
        db.session.commit()
    assert age() == 0


def test_an_error_that_is_not_the_broker_away_keeps_its_message_and_traceback():
    stream = io.StringIO()
    logger = logging.getLogger("test.beat.other")
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("text"))
    logger.addHandler(handler)
    logger.addFilter(OneLinePerMinute())
    for _ in range(2):
        try:
            raise PermissionError(13, "Permission denied", "var/celerybeat-schedule")
        except PermissionError:
            logger.error("Removing corrupted schedule file %r", "var/x", exc_info=True)
    text = stream.getvalue()
    assert text.count("Removing corrupted schedule file 'var/x'") == 2
    assert text.count("Traceback") == 2
