"""Small helpers shared by the test modules."""

import re
import socket
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import requests

from app.exact_json import dumps_exact

# What GET /v1/transactions/<id> and the listing show of each transaction.
TRANSACTION_FIELDS = {
    "transaction_id",
    "source_account",
    "destination_account",
    "amount",
    "currency",
    "status",
    "created_at",
    "processed_at",
    "next_attempt_at",
    "failed_at",
    "redriven_at",
    "attempts",
    "last_error",
    "processor_reference",
}


def webhook(**overrides: Any) -> dict[str, Any]:
    """A valid webhook body with a fresh transaction_id; keyword arguments replace fields."""
    body: dict[str, Any] = {
        "transaction_id": f"txn_{uuid.uuid4().hex}",
        "source_account": "acc_user_789",
        "destination_account": "acc_merchant_456",
        "amount": Decimal("1500"),
        "currency": "INR",
    }
    body.update(overrides)
    return body


def as_json(body: Any) -> str:
    """JSON text with Decimals written exactly, as a careful sender would."""
    return dumps_exact(body)


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll until condition() is truthy and return it; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


JSON_HEADERS = {"Content-Type": "application/json"}


def post_webhook(
    base_url: str, body: Any, timeout: float = 10, session=requests
) -> requests.Response:
    """POST a webhook body to a running service over HTTP."""
    return session.post(
        f"{base_url}/v1/webhooks/transactions",
        data=as_json(body),
        headers=JSON_HEADERS,
        timeout=timeout,
    )


def get_transaction(base_url: str, transaction_id: str, timeout: float = 10) -> requests.Response:
    return requests.get(
        f"{base_url}/v1/transactions/{quote(transaction_id, safe='')}", timeout=timeout
    )


def times_processed(worker_log: str, transaction_id: str) -> int:
    """How often the worker logged a done answer for this transaction (one line per attempt)."""
    return len(
        re.findall(rf"transaction {re.escape(transaction_id)} attempt \d+: done", worker_log)
    )


def raw_exchange(port: int, data: bytes, half_close: bool = False, timeout: float = 15) -> bytes:
    """Send bytes as they are over a fresh socket; what came back before the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received:
                head, _, body = received.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
        return received


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body
