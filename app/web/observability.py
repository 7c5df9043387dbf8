"""What every request leaves behind: a request id, one log line, and for webhooks, metrics."""

import json
import logging
import re
import secrets
import time

from flask import Flask, Response, g, request

from app import metrics
from app.store.models import TRANSACTION_ID

log = logging.getLogger("app.requests")

# A request id we accept from a proxy or a sender; anything else is replaced.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
WEBHOOK_ENDPOINT = "webhooks.receive_transaction"


def init_request_observability(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)


def _start() -> None:
    g.started = time.perf_counter()
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if REQUEST_ID.fullmatch(given) else secrets.token_hex(16)


def _finish(response: Response) -> Response:
    # Errors raised before _start (a malformed URL) still get an id and a line.
    request_id = g.get("request_id") or secrets.token_hex(16)
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    response.headers["X-Request-ID"] = request_id
    transaction_id = g.get("transaction_id")
    webhook = request.endpoint == WEBHOOK_ENDPOINT and request.method == "POST"  # not OPTIONS
    if webhook:
        metrics.record_webhook(response.status_code, seconds, g.get("webhook_outcome"))
    # A refused request's line says why, and a refused webhook's the id its body gives, if
    # any: "we sent txn_X, what happened?" is answered by grepping for txn_X.
    problem = g.get("problem") if 400 <= response.status_code < 500 else None
    claimed = None
    if webhook and transaction_id is None and problem is not None:
        claimed = _claimed_transaction_id()
    log.info(
        "%s %s %s %.1fms request_id=%s%s%s%s",
        request.method,
        request.path,
        response.status_code,
        seconds * 1000,
        request_id,
        f" transaction_id={transaction_id}" if transaction_id else "",
        # Quoted: unchecked, it may hold " transaction_id=txn_someone_else".
        f" claimed_transaction_id={json.dumps(claimed)}" if claimed else "",
        f" problem={problem}" if problem else "",
        extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round(seconds * 1000, 2),
            "request_id": request_id,
            "transaction_id": transaction_id,
            "claimed_transaction_id": claimed,
            "problem": problem,
        },
    )
    return response


def _claimed_transaction_id() -> str | None:
    """The transaction_id a refused webhook's body gives, unchecked (it may be unsigned or
    invalid): only from a body already read, and only if it could be a stored id (printable
    ASCII, at most 255 characters), so that nothing invisible or reordering reaches the log."""
    body = request.body_if_read()
    if not body:
        return None
    try:
        claimed = json.loads(body).get("transaction_id")
    except (ValueError, AttributeError, RecursionError):  # not JSON, not an object
        return None
    if isinstance(claimed, str) and len(claimed) <= 255 and TRANSACTION_ID.fullmatch(claimed):
        return claimed
    return None
