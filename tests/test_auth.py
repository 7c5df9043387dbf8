"""Who may read and act, tried as an attacker would: over HTTP against a real Gunicorn."""

import base64
from urllib.parse import quote

import pytest
import requests
from helpers import post_webhook, webhook
from sqlalchemy import create_engine, insert

from app.store.models import Transaction, TransactionStatus, utcnow
from scripts.processes import Service

pytestmark = pytest.mark.processes

# Two read tokens: one being rotated out, one in. Both work until the old one is dropped.
READ_OLD, READ_NEW, ADMIN = "read-token-old-5f1c", "read-token-new-9a2e", "admin-token-77d0"
UNKNOWN = "leak-me-if-you-dare-3141"


@pytest.fixture(scope="module")
def service(postgres_url, redis_url, tmp_path_factory):
    with Service(
        tmp_path_factory.mktemp("auth"),
        DATABASE_URL=postgres_url,
        CELERY_BROKER_URL=redis_url,
        API_READ_TOKENS=f"{READ_OLD}, {READ_NEW}",
        API_ADMIN_TOKENS=ADMIN,
    ) as service:
        yield service.start("web")


@pytest.fixture(scope="module")
def known_id(service) -> str:
    body = webhook()
    assert post_webhook(service.url, body).status_code == 202  # no token: webhooks are signed
    return body["transaction_id"]


@pytest.fixture
def failed_id(postgres_url) -> str:
    """A FAILED transaction, as the pipeline leaves one, for the re-drive to move."""
    transaction_id = f"failed_{utcnow().timestamp()}"
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            insert(Transaction).values(
                transaction_id=transaction_id,
                source_account="a",
                destination_account="b",
                amount=1,
                currency="USD",
                status=TransactionStatus.FAILED,
                created_at=utcnow(),
                next_attempt_at=utcnow(),
                failed_at=utcnow(),
            )
        )
    engine.dispose()
    return transaction_id


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(token: str, user: str = "operator") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


NO_TOKEN: dict[str, str] = {}
REFUSED_CREDENTIALS = {
    "none": NO_TOKEN,
    "unknown bearer": bearer(UNKNOWN),
    "empty bearer": {"Authorization": "Bearer "},
    "unknown basic": basic(UNKNOWN),
    "garbage basic": {"Authorization": "Basic !!!not-base64"},
    "other scheme": {"Authorization": f"Token {ADMIN}"},
    "a token's prefix": bearer(ADMIN[:-1]),
}


def read_urls(service, known_id) -> list[str]:
    return [
        f"{service.url}/v1/transactions",
        f"{service.url}/v1/transactions/{quote(known_id, safe='')}",
        f"{service.url}/metrics",
    ]


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["title"] and problem["detail"]
    return problem


@pytest.mark.parametrize("credentials", REFUSED_CREDENTIALS.values(), ids=REFUSED_CREDENTIALS)
def test_reads_without_a_known_token_are_401_with_a_bearer_challenge(
    service, known_id, credentials
):
    for url in read_urls(service, known_id):
        response = requests.get(url, headers=credentials, timeout=10)
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert known_id not in response.text and "acc_" not in response.text


@pytest.mark.parametrize(
    "credentials",
    [bearer(READ_OLD), bearer(READ_NEW), bearer(ADMIN), basic(READ_NEW), basic(ADMIN, user="")],
    ids=["read (old)", "read (new)", "admin", "read as basic", "admin as basic"],
)
def test_a_read_or_admin_token_may_read(service, known_id, credentials):
    listing, one, metrics = (
        requests.get(url, headers=credentials, timeout=10) for url in read_urls(service, known_id)
    )
    assert listing.status_code == 200
    assert known_id in [t["transaction_id"] for t in listing.json()["transactions"]]
    assert one.status_code == 200 and one.json()["transaction_id"] == known_id
    assert metrics.status_code == 200 and "webhooks_received_total" in metrics.text


def retry(service, transaction_id: str, headers: dict[str, str]) -> requests.Response:
    url = f"{service.url}/v1/transactions/{quote(transaction_id, safe='')}/retry"
    return requests.post(url, headers=headers, timeout=10)


@pytest.mark.parametrize("credentials", REFUSED_CREDENTIALS.values(), ids=REFUSED_CREDENTIALS)
def test_an_action_without_a_known_token_is_401_and_changes_nothing(
    service, failed_id, credentials
):
    response = retry(service, failed_id, credentials)
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    shown = requests.get(
        f"{service.url}/v1/transactions/{failed_id}", headers=bearer(ADMIN), timeout=10
    )
    assert shown.json()["status"] == "FAILED"


@pytest.mark.parametrize(
    "credentials", [bearer(READ_OLD), basic(READ_NEW) | {"X-Requested-With": "fetch"}]
)
def test_a_read_token_on_an_action_is_403_and_changes_nothing(service, failed_id, credentials):
    assert "write" not in assert_problem(retry(service, failed_id, credentials), 403)
    shown = requests.get(
        f"{service.url}/v1/transactions/{failed_id}", headers=bearer(ADMIN), timeout=10
    )
    assert shown.json()["status"] == "FAILED"


def test_an_admin_token_may_act(service, failed_id):
    response = retry(service, failed_id, bearer(ADMIN))
    assert response.status_code == 202, response.text
    assert response.json() == {"transaction_id": failed_id, "status": "PROCESSING"}
    assert retry(service, "no-such-transaction", bearer(ADMIN)).status_code == 404
    # Who re-drove it is in the log, named by its place in API_ADMIN_TOKENS, never itself.
    log = service["web"].log()
    assert f"{failed_id} re-driven: PROCESSING again, due now, by API_ADMIN_TOKENS #1" in log
    assert ADMIN not in log
    shown = requests.get(
        f"{service.url}/v1/transactions/{failed_id}", headers=bearer(ADMIN), timeout=10
    ).json()
    assert shown["status"] == "PROCESSING" and shown["redriven_at"].endswith("Z")


def test_an_action_by_basic_must_carry_x_requested_with(service, failed_id):
    # A browser replays cached Basic credentials on a forged cross-site form POST;
    # a form cannot set this header.
    assert_problem(retry(service, failed_id, basic(ADMIN)), 403)
    allowed = retry(service, failed_id, basic(ADMIN) | {"X-Requested-With": "fetch"})
    assert allowed.status_code == 202


@pytest.mark.parametrize("path", ["/", "/health/ready", "/docs", "/openapi.json"])
def test_probes_and_the_api_description_stay_open(service, path):
    assert requests.get(service.url + path, timeout=10).status_code == 200


def test_webhooks_need_no_api_token(service):
    assert post_webhook(service.url, webhook()).status_code == 202


def test_tokens_are_never_echoed_nor_logged(service, known_id):
    answers = [
        requests.get(url, headers=headers, timeout=10)
        for url in read_urls(service, known_id)
        for headers in (bearer(UNKNOWN), basic(UNKNOWN), bearer(ADMIN), bearer(READ_OLD))
    ]
    for response in answers:
        shown = response.text + str(response.headers)
        for token in (UNKNOWN, ADMIN, READ_OLD, READ_NEW):
            assert token not in shown
    log = service["web"].log()
    assert "GET /v1/transactions 401" in log  # the requests were logged...
    for token in (UNKNOWN, ADMIN, READ_OLD, READ_NEW):
        assert token not in log  # ...and no token with them
    assert "API_READ_TOKENS and API_ADMIN_TOKENS are not set" not in log
