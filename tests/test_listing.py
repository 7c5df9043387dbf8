"""GET /v1/transactions: newest first, filtered by status, keyset pagination."""

import base64
from datetime import UTC, datetime

import pytest
from helpers import TRANSACTION_FIELDS, as_json, webhook
from sqlalchemy import insert, update

from app.extensions import db
from app.store.models import Transaction, TransactionStatus

URL = "/v1/transactions"


def receive(client, count: int, prefix: str = "list") -> list[str]:
    ids = []
    for n in range(count):
        body = webhook(transaction_id=f"{prefix}_{n:03d}")
        response = client.post(
            "/v1/webhooks/transactions", data=as_json(body), content_type="application/json"
        )
        assert response.status_code == 202
        ids.append(body["transaction_id"])
    return ids


def cursor(created_at: str, transaction_id: str = "x") -> str:
    """A cursor as the service writes one, around any text."""
    raw = f"{created_at}\n{transaction_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def walk(client, **params) -> list[list[str]]:
    """Every page, following next_cursor to the end."""
    pages = []
    while True:
        response = client.get(URL, query_string=params)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        pages.append([t["transaction_id"] for t in page["transactions"]])
        if page["next_cursor"] is None:
            return pages
        params["cursor"] = page["next_cursor"]


def test_newest_first_in_pages_that_cover_everything_once(client):
    ids = receive(client, 7)
    pages = walk(client, limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [i for page in pages for i in page] == list(reversed(ids))


def test_each_transaction_is_shown_in_full(client):
    receive(client, 1)
    shown = client.get(URL).get_json()["transactions"][0]
    assert set(shown) == TRANSACTION_FIELDS


def test_filter_by_status(app, client):
    processed = receive(client, 3)
    failed = receive(client, 2, prefix="fail")
    with app.app_context():
        for ids, status in ((processed, "PROCESSED"), (failed, "FAILED")):
            db.session.execute(
                update(Transaction)
                .where(Transaction.transaction_id.in_(ids))
                .values(status=status, next_attempt_at=None)
            )
        db.session.commit()
    waiting = receive(client, 2, prefix="wait")

    assert walk(client, status="PROCESSING") == [waiting[::-1]]
    assert walk(client, status="PROCESSED") == [processed[::-1]]
    assert walk(client, status="FAILED") == [failed[::-1]]
    assert walk(client) == [(processed + failed + waiting)[::-1]]


def test_rows_arriving_between_pages_neither_repeat_nor_vanish(client):
    first = receive(client, 4)
    page = client.get(URL, query_string={"limit": 2}).get_json()
    assert [t["transaction_id"] for t in page["transactions"]] == first[:1:-1]

    receive(client, 1, prefix="arrived_meanwhile")
    rest = client.get(URL, query_string={"limit": 2, "cursor": page["next_cursor"]}).get_json()
    assert [t["transaction_id"] for t in rest["transactions"]] == first[1::-1]
    assert rest["next_cursor"] is None


def test_transactions_received_in_the_same_microsecond_are_each_listed_once(app, client):
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    with app.app_context():
        db.session.execute(
            insert(Transaction),
            [
                {
                    "transaction_id": f"same_{n}",
                    "source_account": "a",
                    "destination_account": "b",
                    "amount": 1,
                    "currency": "USD",
                    "status": TransactionStatus.PROCESSING,
                    "created_at": moment,
                    "next_attempt_at": moment,
                }
                for n in range(5)
            ],
        )
        db.session.commit()
    assert walk(client, limit=2) == [["same_4", "same_3"], ["same_2", "same_1"], ["same_0"]]


def test_limit_is_capped(client):
    receive(client, 205)
    page = client.get(URL, query_string={"limit": 1000}).get_json()
    assert len(page["transactions"]) == 200
    assert page["next_cursor"] is not None


def test_default_page_is_fifty(client):
    receive(client, 55)
    assert len(client.get(URL).get_json()["transactions"]) == 50


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        # int() reads all of these as a number; a page size is ASCII digits only.
        ({"limit": "1_0"}, "limit"),
        ({"limit": " 5"}, "limit"),
        ({"limit": "+5"}, "limit"),
        ({"limit": "\u0661\u0660"}, "limit"),  # 10 in Arabic-Indic digits
        ({"limit": "5.0"}, "limit"),
        ({"limit": "9" * 5000}, "limit"),
        ({"status": "LOST"}, "status"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),  # base64 of "not a cursor"
        ({"cursor": "MjAyNi0wMS0wMVQwMDowMDowMCswMDowMAp4AHk"}, "cursor"),  # id with NUL
        # Times Python reads but no cursor of ours holds; PostgreSQL refuses the first two.
        ({"cursor": cursor("2026-01-01T00:00:00.000000+16:00")}, "cursor"),
        ({"cursor": cursor("2026-01-01T00:00:00.000000+05:30:15.5")}, "cursor"),
        ({"cursor": cursor("2026-01-01T00:00:00.000000")}, "cursor"),  # no zone
        ({"cursor": cursor("0001-01-01T00:00:00.000000+01:00")}, "cursor"),  # before year 1 in UTC
    ],
)
def test_bad_parameters_are_422_naming_them(client, params, field):
    response = client.get(URL, query_string=params)
    assert response.status_code == 422
    assert list(response.get_json()["errors"]) == [field]
    assert response.get_json()["detail"] == "The query parameters failed validation; see errors."


def test_an_empty_cursor_is_no_cursor(client):
    receive(client, 3)
    first = client.get(URL, query_string={"limit": 2}).get_json()
    assert client.get(URL + "?limit=2&cursor=").get_json() == first


def test_an_empty_listing(client):
    assert client.get(URL).get_json() == {"transactions": [], "next_cursor": None}
