"""GET /v1/transactions/<id>, the health check, and errors outside the webhook."""

import re
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import quote

import pytest
from helpers import TRANSACTION_FIELDS, as_json, webhook
from test_webhooks import URL, assert_problem

ISO_8601_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


def send(client, body):
    response = client.post(URL, data=as_json(body), content_type="application/json")
    assert response.status_code == 202


def test_health_check_answers_healthy_with_the_utc_time(client):
    response = client.get("/")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "HEALTHY"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["current_time"])
    shown = datetime.fromisoformat(body["current_time"])
    assert abs((datetime.now(UTC) - shown).total_seconds()) < 5


def test_transaction_is_returned_with_every_field(client):
    body = webhook(amount=Decimal("100.50"), currency="USD")
    send(client, body)

    response = client.get(f"/v1/transactions/{body['transaction_id']}")
    assert response.status_code == 200
    shown = response.get_json()
    assert set(shown) == TRANSACTION_FIELDS
    assert shown["transaction_id"] == body["transaction_id"]
    assert shown["source_account"] == body["source_account"]
    assert shown["destination_account"] == body["destination_account"]
    assert shown["amount"] == 100.5 and b'"amount":100.5,' in response.data
    assert shown["currency"] == "USD"
    assert shown["status"] == "PROCESSING"
    assert ISO_8601_Z.match(shown["created_at"])
    assert shown["processed_at"] is None
    assert shown["failed_at"] is None
    # Due from the moment it is stored: the processor's wait is the call itself.
    assert ISO_8601_Z.match(shown["next_attempt_at"])
    assert shown["next_attempt_at"] >= shown["created_at"]


@pytest.mark.parametrize(
    "transaction_id",
    ["txn:2024.01-15", "a/b/c", "with space", "100%", "?#&", "a%2Fb", "/lead", "a//b", "x/retry"],
)
def test_ids_with_reserved_characters_are_found_url_encoded(client, transaction_id):
    send(client, webhook(transaction_id=transaction_id))
    response = client.get(f"/v1/transactions/{quote(transaction_id, safe='')}")
    assert response.status_code == 200
    assert response.get_json()["transaction_id"] == transaction_id
    retry = client.post(f"/v1/transactions/{quote(transaction_id, safe='')}/retry")
    assert retry.status_code == 409  # found, and PROCESSING: not redirected to another id


@pytest.mark.parametrize("path", ["/v1/transactions/a%00b", "/dashboard/transactions/a%00b"])
def test_an_id_with_nul_is_unknown_not_an_error(client, path):
    """PostgreSQL refuses NUL in a string, so no stored id holds one."""
    assert_problem(client.get(path), 404)
    assert_problem(client.post("/v1/transactions/a%00b/retry"), 404)


def test_unknown_transaction_is_404_json(client):
    problem = assert_problem(client.get("/v1/transactions/txn_never_sent"), 404)
    assert "txn_never_sent" in problem["detail"]


def test_unknown_route_is_404_json(client):
    assert_problem(client.get("/wp-admin"), 404)


def test_unexpected_exception_is_500_json_without_internals(app, client, monkeypatch):
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def broken(_transaction_id):
        raise RuntimeError("secret internals: password=hunter2")

    monkeypatch.setattr("app.store.transactions.find_transaction", broken)
    response = client.get("/v1/transactions/anything")
    problem = assert_problem(response, 500)
    assert "hunter2" not in response.get_data(as_text=True)
    assert "RuntimeError" not in response.get_data(as_text=True)
    assert problem["title"] == "Internal Server Error"
