"""POST /v1/webhooks/transactions through Flask's test client, on SQLite and PostgreSQL."""

from decimal import Decimal

import pytest
from helpers import as_json, webhook
from sqlalchemy import func, select

from app.extensions import db
from app.store.models import Transaction, TransactionStatus

URL = "/v1/webhooks/transactions"
ACCEPTED = {"message": "Webhook received and queued for processing"}


def post(client, body, content_type="application/json"):
    data = body if isinstance(body, str | bytes) else as_json(body)
    return client.post(URL, data=data, content_type=content_type)


def stored_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Transaction))


def stored(app, transaction_id: str) -> Transaction | None:
    with app.app_context():
        return db.session.get(Transaction, transaction_id)


def assert_problem(response, status: int) -> dict:
    """Every error: the status, the problem+json shape, no trace of Python inside."""
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def test_new_transaction_is_stored_processing_and_acknowledged_202(app, client):
    body = webhook(amount=Decimal("100.50"), currency="USD")
    response = post(client, body)
    assert response.status_code == 202
    assert response.get_json() == ACCEPTED

    row = stored(app, body["transaction_id"])
    assert row.status is TransactionStatus.PROCESSING
    assert row.amount == Decimal("100.50")
    assert row.currency == "USD"
    assert row.processed_at is None
    # Due at once: the worker claims it within a tick; the processor is the slow part.
    assert row.next_attempt_at == row.created_at
    assert row.attempts == 0


def test_amount_survives_exactly(app, client):
    body = webhook(amount=Decimal("0.30"), currency="USD")
    assert post(client, body).status_code == 202
    # 0.30 as a float would be stored as 0.299999999999999988897769753748...
    assert stored(app, body["transaction_id"]).amount == Decimal("0.30")
    shown = client.get(f"/v1/transactions/{body['transaction_id']}")
    assert b'"amount":0.3,' in shown.data


def assert_replayed(response) -> None:
    """An identical duplicate: answered as the first was, marked as a replay."""
    assert response.status_code == 202
    assert response.get_json() == ACCEPTED
    assert response.headers["Idempotent-Replayed"] == "true"


def test_identical_duplicate_is_answered_as_the_first_and_changes_nothing(app, client):
    body = webhook()
    first = post(client, body)
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    before = stored(app, body["transaction_id"])

    again = post(client, body)
    assert_replayed(again)
    assert again.get_data() == first.get_data()
    assert stored_count(app) == 1
    after = stored(app, body["transaction_id"])
    assert (after.created_at, after.next_attempt_at) == (before.created_at, before.next_attempt_at)


def test_duplicate_in_another_but_equal_form_is_identical(app, client):
    body = webhook(amount=Decimal("100.5"), currency="USD")
    assert post(client, body).status_code == 202
    same = dict(body, amount=Decimal("100.50"), currency="usd", note="added later")
    assert_replayed(post(client, same))
    assert stored_count(app) == 1


def test_late_duplicate_never_resets_a_processed_transaction(app, client):
    body = webhook()
    assert post(client, body).status_code == 202
    with app.app_context():
        row = db.session.get(Transaction, body["transaction_id"])
        row.status = TransactionStatus.PROCESSED
        row.processed_at = row.created_at
        db.session.commit()

    assert_replayed(post(client, body))
    row = stored(app, body["transaction_id"])
    assert row.status is TransactionStatus.PROCESSED
    assert row.processed_at == row.created_at


@pytest.mark.parametrize(
    "changes, fields",
    [
        ({"amount": Decimal("1500.01")}, ["amount"]),
        ({"currency": "USD"}, ["currency"]),
        ({"source_account": "acc_other"}, ["source_account"]),
        (
            {"destination_account": "acc_other", "amount": Decimal("1")},
            ["destination_account", "amount"],
        ),
    ],
)
def test_conflicting_duplicate_is_409_naming_fields_and_stored_row_is_untouched(
    app, client, changes, fields
):
    body = webhook()
    assert post(client, body).status_code == 202
    conflict = post(client, dict(body, **changes))
    problem = assert_problem(conflict, 409)
    assert "Idempotent-Replayed" not in conflict.headers
    assert sorted(problem["errors"]) == sorted(fields)
    row = stored(app, body["transaction_id"])
    assert (row.source_account, row.destination_account, row.amount, row.currency) == (
        body["source_account"],
        body["destination_account"],
        body["amount"],
        body["currency"],
    )


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8"],
)
def test_json_content_types_are_accepted(client, content_type):
    assert post(client, webhook(), content_type=content_type).status_code == 202


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""]
)
def test_other_content_types_are_415(app, client, content_type):
    assert_problem(post(client, webhook(), content_type=content_type), 415)
    assert stored_count(app) == 0


@pytest.mark.parametrize(
    "raw, detail_part",
    [
        ('{"transaction_id": "t1", ', "not valid JSON"),
        ("", "not valid JSON"),
        # simplejson's own templates, filled in: the character, and one "at"
        ('{"transaction_id": "t\t1"}', "Invalid control character '\\t' at position 21."),
        ('{"transaction_id": "t\\q"}', "Invalid \\X escape sequence 'q' at position 22."),
        ('{"transaction_id": "t1', "Unterminated string starting at position 19."),
        ("[1, 2]", "must be a JSON object"),
        ('"a string"', "must be a JSON object"),
        ("null", "must be a JSON object"),
        ('{"amount": NaN}', "not valid JSON"),
        ('{"amount": Infinity}', "not valid JSON"),
        ('{"amount": -Infinity}', "not valid JSON"),
        (b'{"transaction_id": "\xff\xfe"}', "not valid UTF-8"),
        ('{"amount": 1, "amount": 1000}', "appears more than once"),
        ("[" * 30_000 + "]" * 30_000, "nests too deeply"),
        ('{"amount": ' + "9" * 5000 + "}", "a number with too many digits"),  # not Python's
        ('{"x": 1e1000000000000000000}', "a number too large to read"),  # past Decimal's exponent
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(app, client, raw, detail_part):
    problem = assert_problem(post(client, raw), 400)
    assert detail_part in problem["detail"]
    assert stored_count(app) == 0


def test_a_body_over_64_kib_is_413(app, client):
    body = webhook(padding="x" * 65_536)
    assert_problem(post(client, body), 413)
    assert stored_count(app) == 0


def test_a_body_just_under_the_limit_is_accepted(client):
    body = webhook()
    body["padding"] = "x" * (65_536 - len(as_json(body)) - len(',"padding":""'))
    assert len(as_json(body)) == 65_536
    assert post(client, body).status_code == 202


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"amount": Decimal("0")}, "amount"),
        ({"amount": Decimal("-10")}, "amount"),
        ({"amount": "100.50"}, "amount"),
        ({"amount": Decimal("1.5"), "currency": "JPY"}, "amount"),
        ({"amount": Decimal("10.123"), "currency": "USD"}, "amount"),
        ({"amount": Decimal("1E+15"), "currency": "USD"}, "amount"),
        ({"currency": "XXQ"}, "currency"),
        ({"currency": "US"}, "currency"),
        ({"currency": "840"}, "currency"),
        ({"transaction_id": ""}, "transaction_id"),
        ({"transaction_id": "x" * 256}, "transaction_id"),
        ({"source_account": 42}, "source_account"),
        ({"destination_account": None}, "destination_account"),
    ],
)
def test_a_body_that_fails_validation_is_422_naming_the_field(app, client, changes, field):
    problem = assert_problem(post(client, webhook(**changes)), 422)
    assert list(problem["errors"]) == [field]
    assert stored_count(app) == 0


def test_missing_fields_are_all_named(app, client):
    problem = assert_problem(post(client, {"transaction_id": "t1"}), 422)
    assert sorted(problem["errors"]) == [
        "amount",
        "currency",
        "destination_account",
        "source_account",
    ]
    assert stored_count(app) == 0


def test_unknown_fields_are_ignored(app, client):
    assert post(client, webhook(fee={"amount": 1}, memo="hi")).status_code == 202
    assert stored_count(app) == 1


def test_wrong_method_is_405_json(client):
    response = client.get(URL)
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_options_is_204_with_allow_and_stores_nothing(app, client):
    response = client.options(URL)
    assert response.status_code == 204
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    assert "Content-Type" not in response.headers and response.data == b""
    assert stored_count(app) == 0
