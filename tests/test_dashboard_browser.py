"""The operator's page and /docs in a real browser (Debian's chromium, driven by
Playwright) against a real Gunicorn on PostgreSQL.

Never skipped: without /usr/bin/chromium these tests fail and say how to install it
(./run_tests.sh does). Set DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the
README's screenshot from the run.
"""

import os
import re
import shutil
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import requests
from dashboard_data import ERRORS, failed, insert_rows, realistic_hour
from helpers import wait_until
from sqlalchemy import create_engine, delete, select

from app.config import database_url
from app.store.models import Transaction, utcnow
from scripts.processes import POSTGRES_ADMIN_URL, Service, ThrowawayDatabase

pytestmark = pytest.mark.processes

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ISO_8601_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
READ, ADMIN = "read-token-for-the-browser", "admin-token-for-the-browser"
table = Transaction.__table__

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError as exc:  # a failure, never a skip
    raise RuntimeError("playwright is required: pip install -r requirements-dev.txt") from exc

expect.set_options(timeout=20_000)  # waits for the page, fails only past this


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(
            f"Chromium is required at {CHROMIUM} for the browser tests: run ./run_tests.sh "
            "(it installs Debian's chromium) or apt-get install -y chromium."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def database():
    with ThrowawayDatabase(POSTGRES_ADMIN_URL) as url:
        engine = create_engine(database_url(url), isolation_level="AUTOCOMMIT")
        yield url, engine
        engine.dispose()


def web_only(tmp_path_factory, url: str, broker: str, **tokens: str) -> Service:
    """The web alone, no worker: rows stay as each test leaves them."""
    return Service(
        tmp_path_factory.mktemp("dashboard"),
        DATABASE_URL=url,
        CELERY_BROKER_URL=broker,
        API_READ_TOKENS=tokens.get("read", ""),
        API_ADMIN_TOKENS=tokens.get("admin", ""),
    )


@pytest.fixture(scope="module")
def guarded(database, redis_url, tmp_path_factory):
    with web_only(tmp_path_factory, database[0], redis_url, read=READ, admin=ADMIN) as service:
        yield service.start("web")


@pytest.fixture(scope="module")
def open_service(database, redis_url, tmp_path_factory):
    with web_only(tmp_path_factory, database[0], redis_url) as service:
        yield service.start("web")


@pytest.fixture
def engine(database):
    """The test's rows, and only those."""
    engine = database[1]
    with engine.connect() as connection:
        connection.execute(delete(table))
    return engine


def add(engine, rows) -> None:
    with engine.connect() as connection:
        insert_rows(connection, rows)


def status_of(engine, transaction_id: str) -> str:
    with engine.connect() as connection:
        query = select(table.c.status).where(table.c.transaction_id == transaction_id)
        return connection.scalar(query)


class Page:
    """A browser page that records every script error and every request it makes."""

    def __init__(self, browser, token: str | None = None, **options):
        credentials = {"username": "operator", "password": token} if token else None
        self.context = browser.new_context(http_credentials=credentials, **options)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        self.page.on(
            "console",
            lambda message: message.type == "error" and self.errors.append(message.text),
        )
        self.page.on("request", lambda request: self.requests.append(request.url))

    def open_dashboard(self, service: Service):
        response = self.page.goto(service.url + "/dashboard")
        assert response.status == 200, response.status
        # The first data arrived and was drawn.
        expect(self.page.locator("#freshness")).to_have_attribute("data-generated-at", ISO_8601_Z)
        return self.page

    def close(self):
        self.context.close()


@pytest.fixture
def pages(browser):
    opened: list[Page] = []

    def open_page(token: str | None = None, **options) -> Page:
        opened.append(Page(browser, token, **options))
        return opened[-1]

    yield open_page
    for page in opened:
        page.close()


def test_the_page_shows_counts_chart_and_a_failure_with_its_reason(
    guarded, engine, pages, tmp_path
):
    now = utcnow()
    rows = realistic_hour(now)
    rows.append(failed("txn_card_declined_42", now - timedelta(minutes=4), ERRORS[0], attempts=10))
    add(engine, rows)
    counts = {
        status: sum(r["status"] == status for r in rows)
        for status in ("PROCESSING", "PROCESSED", "FAILED")
    }

    browser_page = pages(ADMIN, viewport={"width": 1280, "height": 900})
    page = browser_page.open_dashboard(guarded)

    for status, count in counts.items():
        expect(page.locator(f"#count-{status}")).to_have_text(f"{count:,}")
    expect(page.locator("#due-now")).not_to_have_text("–")
    expect(page.locator("#oldest-age")).not_to_have_text("none")
    # The chart: a line per series, one point per minute that had any.
    for series in ("s-received", "s-processed", "s-failed"):
        points = page.locator(f"#chart-counts polyline.{series}").first.get_attribute("points")
        assert len(points.split()) >= 2, series
    for series in ("s-p50", "s-p99"):
        expect(page.locator(f"#chart-latency polyline.{series}").first).to_be_attached()
    # The failure, with its reason and attempts.
    row = page.locator('tr[data-transaction-id="txn_card_declined_42"]')
    expect(row.locator("td.error")).to_have_text(ERRORS[0])
    expect(row.locator("td.attempts")).to_have_text("10")
    expect(row.locator("button.redrive")).to_be_enabled()

    # Find any transaction by id: its record and outcome.
    page.fill("#find-id", "txn_card_declined_42")
    page.click("#find-form button")
    expect(page.locator('#find-result dd[data-field="status"]')).to_have_text("FAILED")
    expect(page.locator('#find-result dd[data-field="last_error"]')).to_have_text(ERRORS[0])

    shot = tmp_path / "dashboard.png"
    page.locator("#find-id").fill("")
    page.locator("#find-id").blur()
    page.locator("#find-result").evaluate("node => node.replaceChildren()")
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        shutil.copy(shot, os.environ["DASHBOARD_SCREENSHOT"])
    assert browser_page.errors == []
    host = urlsplit(guarded.url).netloc
    assert {urlsplit(url).netloc for url in browser_page.requests} == {host}


def test_the_page_refreshes_itself_without_reloading(guarded, engine, pages):
    page = pages(ADMIN).open_dashboard(guarded)
    page.evaluate("window.notReloaded = true")
    first = page.locator("#freshness").get_attribute("data-generated-at")
    add(engine, [failed("txn_arrived_later", utcnow(), ERRORS[1])])

    expect(page.locator('tr[data-transaction-id="txn_arrived_later"]')).to_be_visible()
    expect(page.locator("#freshness")).not_to_have_attribute("data-generated-at", first)
    assert page.evaluate("window.notReloaded") is True


def test_it_fits_a_phone_screen(guarded, engine, pages, tmp_path):
    now = utcnow()
    add(engine, [*realistic_hour(now), failed("txn_on_a_phone", now, ERRORS[2], attempts=10)])
    browser_page = pages(ADMIN, viewport={"width": 390, "height": 844}, is_mobile=True)
    page = browser_page.open_dashboard(guarded)
    expect(page.locator('tr[data-transaction-id="txn_on_a_phone"] button.redrive')).to_be_visible()
    wider = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert wider <= 0, f"the page is {wider}px wider than the phone's screen"
    # The failure's reason and its button are on screen, not off to the side of a table.
    row = page.locator('tr[data-transaction-id="txn_on_a_phone"]')
    for part in ("td.error", "button.redrive", "input[type=checkbox]"):
        # The table is redrawn every few seconds; measure a row that is on the page.
        box = wait_until(lambda part=part: row.locator(part).bounding_box(), timeout=10)
        assert 0 <= box["x"] and box["x"] + box["width"] <= 390, (part, box)
    page.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
    assert browser_page.errors == []


def test_the_re_drive_buttons_move_failed_transactions_on(guarded, engine, pages):
    now = utcnow()
    ids = ["txn_one", "txn_two", "txn_three"]
    add(engine, [failed(i, now - timedelta(minutes=n), ERRORS[n]) for n, i in enumerate(ids)])
    page = pages(ADMIN).open_dashboard(guarded)

    page.locator('tr[data-transaction-id="txn_one"] button.redrive').click()
    wait_until(lambda: status_of(engine, "txn_one") != "FAILED", timeout=20)
    expect(page.locator('tr[data-transaction-id="txn_one"]')).to_have_count(0)
    expect(page.locator("#action-status")).to_have_text("Re-driven 1 of 1.")

    for transaction_id in ("txn_two", "txn_three"):
        page.locator(f'tr[data-transaction-id="{transaction_id}"] input[type=checkbox]').check()
    expect(page.locator("#redrive-selected")).to_have_text("Re-drive selected (2)")
    page.locator("#redrive-selected").click()
    expect(page.locator("#action-status")).to_have_text("Re-driven 2 of 2.")
    assert [status_of(engine, i) for i in ids] == ["PROCESSING"] * 3
    expect(page.locator("#failed-empty")).to_be_visible()


def test_a_read_token_sees_failures_but_cannot_act(guarded, engine, pages, tmp_path):
    add(engine, [failed("txn_read_only", utcnow(), ERRORS[3])])
    browser_page = pages(READ)
    page = browser_page.open_dashboard(guarded)
    row = page.locator('tr[data-transaction-id="txn_read_only"]')
    expect(row.locator("td.error")).to_have_text(ERRORS[3])
    expect(page.locator("#access")).to_contain_text("read token")
    expect(page.locator("button.redrive")).to_have_count(0)
    expect(page.locator("#redrive-selected")).to_have_count(0)
    expect(row.locator("input[type=checkbox]")).to_have_count(0)
    page.screenshot(path=str(tmp_path / "dashboard-read-token.png"), full_page=True)

    # The action itself is refused, from this page's own context and from anywhere else.
    status = page.evaluate(
        """async (id) => (await fetch(`/v1/transactions/${id}/retry`, {
            method: "POST", headers: {"X-Requested-With": "dashboard"}})).status""",
        "txn_read_only",
    )
    assert status == 403
    response = requests.post(
        f"{guarded.url}/v1/transactions/txn_read_only/retry",
        auth=("operator", READ),
        headers={"X-Requested-With": "dashboard"},
        timeout=10,
    )
    assert response.status_code == 403
    assert status_of(engine, "txn_read_only") == "FAILED"


def test_anonymous_visitors_get_401_and_no_data(guarded, engine, pages):
    add(engine, [failed("txn_private", utcnow(), ERRORS[0])])
    for path in ("/dashboard", "/dashboard/data", "/dashboard/transactions/txn_private"):
        for auth in (None, ("operator", "wrong-token")):
            response = requests.get(guarded.url + path, auth=auth, timeout=10)
            assert response.status_code == 401, path
            assert response.headers["WWW-Authenticate"].startswith("Basic "), path
            assert "txn_private" not in response.text and "Traceback" not in response.text

    page = pages().page  # a browser with nothing to answer the challenge with
    with page.expect_response(guarded.url + "/dashboard") as answer:
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            page.goto(guarded.url + "/dashboard")  # the browser gives up on the challenge
    assert answer.value.status == 401
    assert answer.value.headers["www-authenticate"].startswith("Basic ")


def test_without_tokens_the_page_is_open_and_says_so(open_service, engine, pages):
    add(engine, [failed("txn_open", utcnow(), ERRORS[1])])
    browser_page = pages()
    page = browser_page.open_dashboard(open_service)
    expect(page.locator("#access")).to_contain_text("Open: no API tokens are configured")
    page.locator('tr[data-transaction-id="txn_open"] button.redrive').click()
    expect(page.locator("#action-status")).to_have_text("Re-driven 1 of 1.")
    assert status_of(engine, "txn_open") == "PROCESSING"
    assert browser_page.errors == []


def test_docs_render_every_operation_with_every_request_on_the_host(open_service, pages):
    spec = requests.get(open_service.url + "/openapi.json", timeout=10).json()
    operations = sum(
        method in {"get", "post", "put", "patch", "delete"}
        for methods in spec["paths"].values()
        for method in methods
    )
    browser_page = pages()
    host = urlsplit(open_service.url).netloc
    elsewhere: list[str] = []

    def offline(route):  # as on a machine with no internet: nothing else answers
        if urlsplit(route.request.url).netloc == host:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    browser_page.context.route("**/*", offline)
    page = browser_page.page
    assert page.goto(open_service.url + "/docs").status == 200
    expect(page.locator(".opblock")).to_have_count(operations)
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    expect(page.get_by_text("/v1/webhooks/transactions")).to_be_visible()

    assert elsewhere == []
    assert browser_page.requests
    for url in browser_page.requests:
        parts = urlsplit(url)
        assert parts.scheme == "data" or parts.netloc == host, url
    assert browser_page.errors == []


def test_a_token_given_in_the_address_works_as_the_sign_in_does(guarded, engine, pages):
    """http://operator:<token>@host/dashboard: the page's own requests must not carry the
    credentials in their URL, which fetch() refuses, yet still be signed in."""
    add(engine, [failed("txn_by_address", utcnow(), ERRORS[0])])
    browser_page = pages()
    address = guarded.url.replace("http://", f"http://operator:{ADMIN}@") + "/dashboard"
    response = browser_page.page.goto(address)
    assert response.status == 200
    page = browser_page.page
    expect(page.locator("#freshness")).to_have_attribute("data-generated-at", ISO_8601_Z)
    expect(page.locator("#count-FAILED")).to_have_text("1")
    page.locator('tr[data-transaction-id="txn_by_address"] button.redrive').click()
    wait_until(lambda: status_of(engine, "txn_by_address") == "PROCESSING", timeout=20)
    assert browser_page.errors == []
