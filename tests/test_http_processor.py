"""The HTTP processor against real servers: the shipped simulator, and a server that
answers any status we ask of it (a stand-in for a deployment's processor)."""

import http.server
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.processing.http import HttpProcessor
from app.processing.processor import Done, FailedForGood, RetryLater, TransactionToProcess
from scripts.processes import ProcessorSimulator, free_port

ANSWERED = "the processor answered"


def transaction(transaction_id="txn_http_1", account="acc_src", amount="100.10"):
    return TransactionToProcess(
        transaction_id,
        account,
        "acc_dst",
        Decimal(amount),
        "USD",
        datetime.now(UTC),
        attempt=1,
        claimed_until=datetime.now(UTC) + timedelta(seconds=90),
    )


class Answering(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the status, headers and body the test put in `answers`."""

    answers: list = []
    received: list = []

    def do_POST(self):  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        status, headers, text = type(self).answers.pop(0)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *_args):
        pass


@pytest.fixture
def processor():
    """HttpProcessor(url, timeout), its session closed after the test."""
    made = []

    def make(url: str, timeout: float) -> HttpProcessor:
        made.append(HttpProcessor(url, timeout))
        return made[-1]

    yield make
    for each in made:
        each.session.close()


@pytest.fixture
def answering():
    Answering.answers, Answering.received = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/process"
    server.shutdown()
    server.server_close()


def test_the_request_is_exact_json_with_the_idempotency_key(answering, processor):
    _server, url = answering
    Answering.answers.append((201, {}, '{"reference": "pay_42"}'))
    outcome = processor(url, 5).process(transaction(amount="0.30"))
    assert outcome == Done("pay_42")
    [(headers, body)] = Answering.received
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "txn_http_1"
    assert body == (
        b'{"transaction_id":"txn_http_1","source_account":"acc_src",'
        b'"destination_account":"acc_dst","amount":0.3,"currency":"USD"}'
    )


@pytest.mark.parametrize(
    "stored, sent",
    [("1500.0000", b'"amount":1500,'), ("0.3000", b'"amount":0.3,'), ("1E+2", b'"amount":100,')],
)
def test_the_amount_is_sent_in_one_form_whatever_the_database_returns(
    answering, processor, stored, sent
):
    """PostgreSQL's NUMERIC(19, 4) returns 1500.0000 where SQLite returns what came in."""
    _server, url = answering
    Answering.answers.append((200, {}, ""))
    processor(url, 5).process(transaction(amount=stored))
    [(_headers, body)] = Answering.received
    assert sent in body


@pytest.mark.parametrize("transaction_id", ["txn_dup ", " txn_lead", "txn_dup\u00a0", "txn_中文"])
def test_an_id_a_header_cannot_carry_fails_for_good_without_a_call(
    answering, processor, transaction_id
):
    """Such ids are refused at the door now; a row received before that is not sent."""
    _server, url = answering
    outcome = processor(url, 5).process(transaction(transaction_id=transaction_id))
    assert outcome == FailedForGood("the transaction id cannot be sent as an Idempotency-Key")
    assert Answering.received == []


@pytest.mark.parametrize(
    "status,headers,text,expected",
    [
        (200, {}, "not json", Done(None)),
        (204, {}, "", Done(None)),
        (200, {}, '{"reference": 12}', Done(None)),
        (408, {}, "", RetryLater("the processor answered 408")),
        (409, {}, "in flight", RetryLater("the processor answered 409")),
        (425, {}, "", RetryLater("the processor answered 425")),
        (429, {"Retry-After": "17"}, "", RetryLater("the processor answered 429", 17)),
        (500, {}, "", RetryLater("the processor answered 500")),
        (
            503,
            {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"},
            "",
            RetryLater("the processor answered 503"),
        ),
        (400, {}, "bad", FailedForGood("the processor answered 400: bad")),
        (422, {}, "x" * 300, FailedForGood("the processor answered 422: " + "x" * 200)),
    ],
)
def test_each_answer_maps_to_its_outcome(answering, processor, status, headers, text, expected):
    _server, url = answering
    Answering.answers.append((status, headers, text))
    assert processor(url, 5).process(transaction()) == expected


@pytest.mark.parametrize("status", [301, 307, 308])
def test_a_redirect_is_not_followed_and_fails_for_good(answering, processor, status):
    # The contract's table: any status but 2xx and the retryable ones fails for good. A
    # followed redirect would send the transaction (and its key) to another address,
    # one the deployment never configured.
    _server, url = answering
    Answering.answers += [(status, {"Location": url + "/elsewhere"}, "moved"), (200, {}, "")]
    outcome = processor(url, 5).process(transaction())
    assert outcome == FailedForGood(f"the processor answered {status}: moved")
    assert len(Answering.received) == 1


def test_a_refused_connection_is_retried_later(processor):
    outcome = processor(f"http://127.0.0.1:{free_port()}/process", 5).process(transaction())
    assert isinstance(outcome, RetryLater)
    assert outcome.reason == "could not reach the processor: ConnectionError"


@pytest.fixture
def simulator(tmp_path):
    started = []

    def start(*options):
        server = ProcessorSimulator(tmp_path, *options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_a_processor_that_hangs_past_the_timeout_is_retried_later(simulator, processor):
    server = simulator("--latency", "0", "--timeout-rate", "1")
    outcome = processor(server.url + "/process", 0.5).process(transaction())
    assert outcome == RetryLater("no answer from the processor within 0.5 s")
    # It took effect before the answer was lost: the retry, same key, has no second effect.
    assert processor(server.url + "/process", 0.5).process(transaction()).reference
    assert server.keys()["txn_http_1"] == {
        "calls": 2,
        "effects": 1,
        "reference": server.keys()["txn_http_1"]["reference"],
        "in_flight": 1,
    }


def test_the_simulator_refuses_a_chosen_account_for_good(simulator, processor):
    server = simulator("--latency", "0", "--refuse-account", "acc_blocked")
    outcome = processor(server.url + "/process", 5).process(transaction(account="acc_blocked"))
    assert isinstance(outcome, FailedForGood)
    assert outcome.reason.startswith("the processor answered 422: ")
    assert json.loads(outcome.reason.split(": ", 1)[1]) == {"error": "account refused"}


def test_proxy_settings_from_the_environment_are_kept_though_read_only_once(monkeypatch):
    """requests would read the environment on every call; the processor reads it once,
    when it is made, and must not lose what it says (an egress proxy, say)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://egress.internal:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/company-ca.pem")
    made = HttpProcessor("https://processor.example/v1/process", timeout_seconds=5)
    assert made.session.proxies.get("https") == "http://egress.internal:3128"
    assert made.session.verify == "/etc/ssl/certs/company-ca.pem"
    assert made.session.trust_env is False  # not read again per call
