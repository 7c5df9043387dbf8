"""The operator's page through Flask's test client, on SQLite and PostgreSQL: what it
shows, who may see it, and that its queries read indexes (EXPLAIN on PostgreSQL).
The page in a real browser is tested in test_dashboard_browser.py."""

import base64
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from conftest import emptied_app, make_app
from dashboard_data import failed, insert_rows, row
from sqlalchemy import delete, event, func, select, text
from test_webhooks import assert_problem

from app.dashboard import queries
from app.extensions import db
from app.store.models import Transaction, TransactionStatus, utcnow

PROCESSING, PROCESSED, FAILED = TransactionStatus
ISO_8601_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
READ, ADMIN = "read-token-1", "admin-token-1"


def add(app, *rows):
    with app.app_context(), db.engine.connect() as connection:
        insert_rows(connection, list(rows))


def basic(token: str, user: str = "operator") -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{token}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


@pytest.fixture
def guarded_app(database_url):
    with emptied_app(database_url, API_READ_TOKENS=[READ], API_ADMIN_TOKENS=[ADMIN]) as app:
        yield app


def test_counts_oldest_processing_and_the_backlog_due_now(app, client):
    now = utcnow()
    add(
        app,
        row("old", PROCESSING, now - timedelta(minutes=10), next_attempt_at=now - timedelta(1)),
        row("new", PROCESSING, now - timedelta(seconds=5), next_attempt_at=now + timedelta(1)),
        *[row(f"done{i}", PROCESSED, now - timedelta(hours=3), processed_at=now) for i in range(3)],
        failed("bad", now - timedelta(minutes=3), "processor answered 422: account closed"),
    )
    data = client.get("/dashboard/data").get_json()

    assert data["counts"] == {"PROCESSING": 2, "PROCESSED": 3, "FAILED": 1}
    assert data["processed_estimated"] is False
    assert data["due_now"] == 1
    oldest = data["oldest_processing"]
    assert oldest["transaction_id"] == "old"
    assert 600 <= oldest["age_seconds"] < 660
    assert ISO_8601_Z.match(oldest["created_at"]) and ISO_8601_Z.match(data["generated_at"])
    assert data["access"] == {"open": True, "role": None, "can_act": True}


def test_an_empty_table_is_shown_as_nothing_to_do(client):
    data = client.get("/dashboard/data").get_json()
    assert data["counts"] == {"PROCESSING": 0, "PROCESSED": 0, "FAILED": 0}
    assert data["oldest_processing"] is None and data["due_now"] == 0 and data["failed"] == []
    assert len(data["last_hour"]) == 60
    assert all(m["received"] == m["processed"] == m["failed"] == 0 for m in data["last_hour"])
    starts = [datetime.fromisoformat(m["minute"]) for m in data["last_hour"]]
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00Z", m["minute"]) for m in data["last_hour"]
    )
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == [timedelta(minutes=1)] * 59


# A fixed moment, so that no minute rolls over during the test.
NOW = datetime(2026, 1, 15, 12, 30, 15, tzinfo=UTC)


def test_the_last_hour_minute_by_minute_with_median_and_p99(app):
    twenty_past = datetime(2026, 1, 15, 12, 20, tzinfo=UTC)
    rows = [
        # Processed at 12:20, after 1, 2, 3 and 4 s: median 2.5 s, p99 3.97 s.
        row(f"p{s}", PROCESSED, twenty_past - timedelta(seconds=s), processed_at=twenty_past)
        for s in (1, 2, 3, 4)
    ]
    rows += [
        # The window is 11:31:00 (59 minutes before the current one) up to 12:31:00.
        row(
            "before",
            PROCESSED,
            NOW - timedelta(hours=2),
            processed_at=datetime(2026, 1, 15, 11, 30, 59, tzinfo=UTC),
        ),
        row("first", PROCESSING, datetime(2026, 1, 15, 11, 31, tzinfo=UTC)),
        row("current", PROCESSING, datetime(2026, 1, 15, 12, 30, 14, tzinfo=UTC)),
        failed("f1", datetime(2026, 1, 15, 12, 23, tzinfo=UTC), "no"),  # fails at 12:25
    ]
    add(app, *rows)
    with app.app_context(), queries.connect() as connection:
        minutes = queries.last_hour(connection, NOW)

    assert len(minutes) == 60
    assert minutes[0].start == datetime(2026, 1, 15, 11, 31, tzinfo=UTC)
    assert minutes[-1].start == datetime(2026, 1, 15, 12, 30, tzinfo=UTC)
    by_minute = {m.start.strftime("%H:%M"): m for m in minutes}
    assert by_minute["11:31"].received == 1  # "first"; "before" is outside
    assert by_minute["12:30"].received == 1
    assert by_minute["12:19"].received == 4
    assert by_minute["12:20"].processed == 4
    assert by_minute["12:20"].p50_seconds == pytest.approx(2.5)
    assert by_minute["12:20"].p99_seconds == pytest.approx(3.97)
    assert by_minute["12:25"].failed == 1
    assert by_minute["12:23"].received == 1
    assert sum(m.processed for m in minutes) == 4  # "before" was processed at 11:30:59
    assert sum(m.failed for m in minutes) == 1
    untouched = by_minute["12:00"]
    assert (untouched.received, untouched.processed, untouched.p50_seconds) == (0, 0, None)


def test_percentile_cont_interpolates_as_sql_does():
    assert queries.percentile_cont([4.0], 0.99) == 4.0
    assert queries.percentile_cont([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert queries.percentile_cont([float(n) for n in range(1, 101)], 0.99) == pytest.approx(99.01)


def test_failed_transactions_newest_first_with_their_reason_and_attempts(app, client):
    now = utcnow()
    add(
        app,
        failed("older", now - timedelta(minutes=9), "processor answered 402", attempts=3),
        failed(
            "newer",
            now - timedelta(minutes=1),
            "processor answered 422: <b>closed</b>",
            attempts=10,
            amount=Decimal("1234567890123.4567"),
            currency="CLF",
        ),
        row("fine", PROCESSED, now, processed_at=now),
        # Received first, failed last (after hours of retries): the newest failure.
        failed("retried", now - timedelta(hours=5), "timeout")
        | {"failed_at": now + timedelta(minutes=3)},
    )
    every = client.get("/dashboard/data").get_json()["failed"]
    assert every[0]["transaction_id"] == "retried"
    shown = every[1:]
    assert [t["transaction_id"] for t in shown] == ["newer", "older"]
    assert shown[0]["last_error"] == "processor answered 422: <b>closed</b>"
    assert shown[0]["attempts"] == 10 and shown[1]["attempts"] == 3
    # Exact: a string, since JavaScript would round this number.
    assert shown[0]["amount"] == "1234567890123.4567" and shown[0]["currency"] == "CLF"
    assert (shown[1]["amount"], shown[1]["currency"]) == ("25.00", "USD")
    assert ISO_8601_Z.match(shown[0]["failed_at"])


def test_find_shows_the_whole_record_and_its_outcome(app, client):
    now = utcnow()
    add(app, failed("acc/with/slashes 1", now, "processor answered 402", attempts=4))
    response = client.get("/dashboard/transactions/acc%2Fwith%2Fslashes%201")
    assert response.status_code == 200
    record = response.get_json()
    assert record["transaction_id"] == "acc/with/slashes 1"
    assert record["status"] == "FAILED" and record["attempts"] == 4
    assert record["last_error"] == "processor answered 402"
    assert record["amount"] == "25.00" and record["processed_at"] is None
    assert ISO_8601_Z.match(record["failed_at"])
    assert set(record) == set(Transaction.__table__.c.keys())

    assert_problem(client.get("/dashboard/transactions/nope"), 404)


def test_open_without_tokens_and_says_so(client):
    page = client.get("/dashboard")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Open: no API tokens are configured" in html
    assert 'data-can-act="true"' in html and 'id="redrive-selected"' in html


def test_anonymous_and_unknown_tokens_get_401_basic_and_no_data(guarded_app):
    add(guarded_app, failed("secret-txn", utcnow(), "processor answered 402"))
    client = guarded_app.test_client()
    for url in ("/dashboard", "/dashboard/data", "/dashboard/transactions/secret-txn"):
        for headers in ({}, basic("not-a-token"), {"Authorization": "Bearer not-a-token"}):
            response = client.get(url, headers=headers)
            body = assert_problem(response, 401)
            assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert "secret-txn" not in response.get_data(as_text=True), body


def test_a_read_token_sees_everything_and_can_act_on_nothing(guarded_app):
    add(guarded_app, failed("stuck", utcnow(), "processor answered 402"))
    client = guarded_app.test_client()
    page = client.get("/dashboard", headers=basic(READ))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-can-act="false"' in html and "read token" in html
    assert "redrive-selected" not in html
    data = client.get("/dashboard/data", headers=basic(READ)).get_json()
    assert data["access"] == {"open": False, "role": "read", "can_act": False}
    assert [t["transaction_id"] for t in data["failed"]] == ["stuck"]

    action = {"X-Requested-With": "dashboard"}
    refused = client.post("/v1/transactions/stuck/retry", headers=basic(READ) | action)
    assert_problem(refused, 403)
    still = client.get("/dashboard/transactions/stuck", headers=basic(READ)).get_json()
    assert still["status"] == "FAILED"


def test_an_admin_token_can_re_drive_from_the_page(guarded_app):
    # Received 5 minutes ago, failed 2 minutes later: within the chart's hour.
    add(guarded_app, failed("stuck", utcnow() - timedelta(minutes=5), "processor answered 402"))
    client = guarded_app.test_client()
    data = client.get("/dashboard/data", headers=basic(ADMIN)).get_json()
    assert data["access"] == {"open": False, "role": "admin", "can_act": True}
    # Without the header a forged cross-site form could have sent this: refused.
    assert_problem(client.post("/v1/transactions/stuck/retry", headers=basic(ADMIN)), 403)
    action = {"X-Requested-With": "dashboard"}
    moved = client.post("/v1/transactions/stuck/retry", headers=basic(ADMIN) | action)
    assert moved.status_code == 202
    after = client.get("/dashboard/data", headers=basic(ADMIN)).get_json()
    assert after["failed"] == [] and after["counts"]["FAILED"] == 0
    # The chart still shows the failure: a re-drive does not rewrite the hour.
    assert sum(minute["failed"] for minute in after["last_hour"]) == 1
    record = client.get("/dashboard/transactions/stuck", headers=basic(ADMIN)).get_json()
    assert record["status"] == "PROCESSING"
    assert record["failed_at"] is not None and record["redriven_at"] is not None


def test_the_page_loads_only_its_own_files_and_no_inline_script(client):
    page = client.get("/dashboard")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    html = page.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assets = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert assets
    for asset in assets:
        if asset.startswith("data:"):
            continue
        assert asset.startswith("/dashboard/static/"), asset
        with client.get(asset) as response:  # a file: closed with the response
            assert response.status_code == 200, asset


@pytest.fixture
def postgres_app(postgres_url):
    app = make_app(postgres_url)
    with app.app_context():
        db.session.execute(delete(Transaction))
        db.session.commit()
    yield app
    with app.app_context():
        db.session.execute(delete(Transaction))
        db.session.commit()
        with db.engine.connect() as connection:  # the row estimate back to an empty table
            connection.execute(text("VACUUM ANALYZE transactions"))
        db.engine.dispose()


# Thirty days of traffic, a few still PROCESSING or FAILED: the shape of a real table.
THIRTY_DAYS = """
INSERT INTO transactions (transaction_id, source_account, destination_account, amount,
    currency, status, created_at, next_attempt_at, attempts, processed_at, failed_at, last_error)
SELECT 'bulk_' || n, 'a', 'b', 10, 'USD',
    CASE WHEN n % 1000 = 0 THEN 'FAILED' WHEN n % 997 = 0 THEN 'PROCESSING' ELSE 'PROCESSED' END,
    now() - n * interval '20 seconds',
    CASE WHEN n % 997 = 0 AND n % 1000 <> 0 THEN now() END,
    1,
    CASE WHEN n % 1000 <> 0 AND n % 997 <> 0 THEN now() - n * interval '20 seconds' + interval '30 seconds' END,
    CASE WHEN n % 1000 = 0 THEN now() - n * interval '20 seconds' + interval '60 seconds' END,
    CASE WHEN n % 1000 = 0 THEN 'gave up' END
FROM generate_series(1, 130000) AS n
"""  # noqa: E501


def test_every_query_of_the_page_reads_an_index_on_postgresql(postgres_app):
    """EXPLAIN each statement the data endpoint runs: none reads the whole table; the
    chart, the backlog and the failures read their indexes."""
    with postgres_app.app_context():
        with db.engine.connect() as connection:
            connection.execute(text(THIRTY_DAYS))
            connection.execute(text("ANALYZE transactions"))
        statements = []

        def capture(_conn, _cursor, statement, parameters, _context, _many):
            statements.append((statement, parameters))

        event.listen(db.engine, "before_cursor_execute", capture)
        try:
            response = postgres_app.test_client().get("/dashboard/data")
        finally:
            event.remove(db.engine, "before_cursor_execute", capture)
        assert response.status_code == 200
        data = response.get_json()
        # Past 100 000 rows the PROCESSED total is PostgreSQL's estimate, near the truth.
        assert data["processed_estimated"] is True
        assert data["counts"]["FAILED"] == 130 and data["counts"]["PROCESSING"] == 130
        assert abs(data["counts"]["PROCESSED"] - 129_740) < 129_740 * 0.05, data["counts"]
        # Three a minute, over 59 whole minutes and the one in progress: every row since the
        # chart's first minute, counted here without the buckets. Where it begins depends on
        # whether a minute turned between the insert and the request, hence 176 to 179.
        start = datetime.fromisoformat(data["last_hour"][0]["minute"])
        with db.engine.connect() as connection:
            since_start = connection.scalar(
                select(func.count()).where(Transaction.created_at >= start)
            )
        assert 176 <= since_start <= 179
        assert sum(m["received"] for m in data["last_hour"]) == since_start

        plans = []
        with db.engine.connect() as connection:
            for statement, parameters in statements:
                plan = connection.exec_driver_sql("EXPLAIN " + statement, parameters)
                plans.append((statement, parameters, "\n".join(line for (line,) in plan)))
    assert len(plans) == 9, plans  # 3 counts, oldest, due, failed, 3 for the chart
    whole_table = [(s, p) for s, p, plan in plans if "Seq Scan" in plan]
    assert whole_table == []

    def plan_of(fragment: str) -> str:
        (plan,) = [plan for statement, _p, plan in plans if fragment in statement]
        return plan

    expected = {
        "GROUP BY to_char(date_trunc(%(date_trunc_1)s, timezone(%(timezone_1)s, "
        "transactions.created_at))": "ix_transactions_newest",
        "percentile_cont": "ix_transactions_processed_at",
        "GROUP BY to_char(date_trunc(%(date_trunc_1)s, timezone(%(timezone_1)s, "
        "transactions.failed_at))": "ix_transactions_failed_at",
        "ORDER BY transactions.failed_at DESC": "ix_transactions_latest_failed",
        "ORDER BY transactions.created_at, transactions.transaction_id": (
            "ix_transactions_newest_processing"
        ),
        "transactions.next_attempt_at <=": "ix_transactions_due",
    }
    for fragment, index in expected.items():
        assert re.search(rf"\b{index}\b", plan_of(fragment)), (fragment, plan_of(fragment))


def test_a_database_that_is_away_is_a_503_problem_not_a_traceback():
    app = make_app("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere")  # nothing listens
    client = app.test_client()
    for url in ("/dashboard/data", "/dashboard/transactions/txn_1"):
        body = assert_problem(client.get(url), 503)
        assert body["detail"] == "The database is unavailable; retry later."
    with app.app_context():
        db.engine.dispose()
