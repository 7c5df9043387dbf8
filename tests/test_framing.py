"""Every framing of a body, and the errors Gunicorn answers itself: raw sockets, real Gunicorn.

The service requires signatures here, as in production: a body cut short or cut at
the limit must be refused for what it is (400, 413), not as a bad signature.
"""

import gzip
import json
from http import HTTPStatus

import pytest
from helpers import as_json, parse_response, raw_exchange, wait_until, webhook
from sqlalchemy import create_engine, func, select
from test_signatures import SECRET, as_svix, signed_headers

from app.store.models import Transaction
from scripts.processes import Service

pytestmark = pytest.mark.processes

LIMIT = 64 * 1024
URL = "/v1/webhooks/transactions"


@pytest.fixture(scope="module")
def service(postgres_url, redis_url, tmp_path_factory):
    with Service(
        tmp_path_factory.mktemp("framing"),
        DATABASE_URL=postgres_url,
        CELERY_BROKER_URL=redis_url,
        WEBHOOK_SECRET=SECRET,
    ) as service:
        yield service.start("web")


@pytest.fixture(scope="module")
def database(postgres_url):
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


def stored(database, transaction_id: str) -> int:
    with database.connect() as connection:
        return connection.scalar(
            select(func.count())
            .select_from(Transaction)
            .where(Transaction.transaction_id == transaction_id)
        )


def head(headers: dict[str, str], **more: str) -> bytes:
    lines = [f"POST {URL} HTTP/1.1", "Host: test"]
    lines += [f"{name}: {value}" for name, value in (headers | more).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, size: int = 8000) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def assert_problem(raw: bytes, status: int) -> dict:
    got, headers, body = parse_response(raw)
    assert got == status, raw[:600]
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert b"Traceback" not in raw and b"<html" not in raw.lower()
    return problem


def padded_to(body: dict, size: int) -> str:
    """The webhook as JSON with spaces after it, `size` bytes in all (JSON allows them)."""
    text = as_json(body)
    return text + " " * (size - len(text))


def test_a_chunked_body_over_the_limit_is_413_and_nothing_is_stored(service, database):
    body = webhook()
    text = padded_to(body, 70_000)  # a valid object, then spaces: cut at 64 KiB it would pass
    raw = head(signed_headers(text), **{"Transfer-Encoding": "chunked"}) + chunked(text.encode())
    problem = assert_problem(raw_exchange(service.port, raw), 413)
    assert "65536" in problem["detail"]
    assert stored(database, body["transaction_id"]) == 0


def test_a_chunked_body_at_the_limit_is_accepted(service, database):
    body = webhook()
    text = padded_to(body, LIMIT)
    raw = head(signed_headers(text), **{"Transfer-Encoding": "chunked"}) + chunked(text.encode())
    status, _, answer = parse_response(raw_exchange(service.port, raw))
    assert status == 202, answer
    assert stored(database, body["transaction_id"]) == 1


@pytest.mark.parametrize("missing", [1, 50, "all"])
def test_a_body_shorter_than_its_content_length_is_400_and_nothing_is_stored(
    service, database, missing
):
    body = webhook()
    text = as_json(body)
    # The sender signs and announces the whole body, and half-closes having sent part of
    # it; what arrived may even be valid JSON (here: all of it, with more announced).
    sent = b"" if missing == "all" else text.encode()
    announced = len(text) + (missing if isinstance(missing, int) else 0)
    raw = head(signed_headers(text), **{"Content-Length": str(announced)}) + sent
    problem = assert_problem(raw_exchange(service.port, raw, half_close=True), 400)
    assert "Content-Length" in problem["detail"]
    assert stored(database, body["transaction_id"]) == 0


@pytest.mark.parametrize(
    "framing, half_close",
    [
        (lambda data: b"zz\r\n" + data + b"\r\n0\r\n\r\n", False),  # a size that is no number
        (lambda data: b"-3\r\n" + data + b"\r\n0\r\n\r\n", False),
        (lambda data: b"%x\r\n%sXX0\r\n\r\n" % (len(data), data), False),  # no CRLF after it
        (lambda data: chunked(data)[:-2] + b"Bad Trailer\r\n\r\n", False),
        (lambda data: b"%x\r\n%s\r\n" % (len(data), data), True),  # cut off, no last chunk
    ],
    ids=["size not hex", "negative size", "no terminator", "bad trailer", "cut off"],
)
def test_a_malformed_chunked_body_is_400_and_nothing_is_stored(
    service, database, framing, half_close
):
    """Not a 500: a server error would count against the service, and page its operator."""
    body = webhook()
    text = as_json(body)
    raw = head(signed_headers(text), **{"Transfer-Encoding": "chunked"}) + framing(text.encode())
    tracebacks = service["web"].log().count("Traceback")
    problem = assert_problem(raw_exchange(service.port, raw, half_close=half_close), 400)
    assert "chunked" in problem["detail"]
    assert stored(database, body["transaction_id"]) == 0
    wait_until(lambda: problem["request_id"] in service["web"].log(), timeout=5)
    assert service["web"].log().count("Traceback") == tracebacks


@pytest.mark.parametrize(
    "header, codings",
    [
        ("Transfer-Encoding", "gzip, chunked"),  # Gunicorn passes it on, still compressed
        ("Transfer-Encoding", "deflate,chunked"),
        ("Content-Encoding", "gzip"),
        ("Content-Encoding", "identity, br"),
    ],
)
def test_a_compressed_body_is_415_naming_the_coding_and_nothing_is_stored(
    service, database, header, codings
):
    """Not "not valid UTF-8" or "not JSON" about bytes that were never meant as JSON."""
    body = webhook()
    text = as_json(body)
    data = gzip.compress(text.encode())
    headers = signed_headers(text)  # signed as the sender would: the JSON itself
    if header == "Transfer-Encoding":
        raw = head(headers, **{header: codings}) + chunked(data)
    else:
        raw = head(headers, **{header: codings, "Content-Length": str(len(data))}) + data
    reply = raw_exchange(service.port, raw)
    problem = assert_problem(reply, 415)
    assert header in problem["detail"] and codings in problem["detail"]
    assert parse_response(reply)[1]["accept-encoding"] == "identity"
    assert stored(database, body["transaction_id"]) == 0


def test_a_body_as_sent_normally_is_accepted_by_every_framing(service, database):
    """The guards refuse only broken framings: the same webhook, four ways, all 202."""
    for framing in ("length", "chunked", "svix", "identity"):
        body = webhook()
        text = as_json(body)
        headers = signed_headers(text)
        if framing == "chunked":
            raw = head(headers, **{"Transfer-Encoding": "chunked"}) + chunked(text.encode(), 7)
        elif framing == "identity":  # the coding that codes nothing
            headers |= {"Content-Encoding": "identity", "Content-Length": str(len(text))}
            raw = head(headers) + text.encode()
        else:
            headers = as_svix(headers) if framing == "svix" else headers
            raw = head(headers, **{"Content-Length": str(len(text))}) + text.encode()
        status, _, answer = parse_response(raw_exchange(service.port, raw))
        assert status == 202, (framing, answer)
        assert stored(database, body["transaction_id"]) == 1


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: test\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (
            b"GET / HTTP/1.1\r\nHost: test\r\n"
            + b"".join(b"X-Many-%d: b\r\n" % n for n in range(120))
            + b"\r\n",
            431,
        ),
        (b"NOT-HTTP\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: test\r\nBad Header Name: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    ],
    ids=[
        "line too long",
        "header too large",
        "too many headers",
        "not HTTP",
        "bad name",
        "two lengths",
        "unknown coding",
        "unsupported coding",
    ],
)
def test_errors_gunicorn_answers_itself_are_problem_json_and_echo_nothing(
    service, request_bytes, status
):
    raw = raw_exchange(service.port, request_bytes)
    problem = assert_problem(raw, status)
    assert raw.startswith(f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode())
    assert problem["title"] == HTTPStatus(status).phrase
    assert b"aaaaaaaa" not in raw and b"bbbbbbbb" not in raw
    _, headers, _ = parse_response(raw)
    assert problem["request_id"] == headers["x-request-id"]
    wait_until(lambda: problem["request_id"] in service["web"].log(), timeout=5)
