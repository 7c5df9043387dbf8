"""What every request leaves behind: a request id, one log line, and for webhooks, metrics."""

import logging
import re
import secrets
import time

from flask import Flask, Response, g, request

from app import metrics

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
    if request.endpoint == WEBHOOK_ENDPOINT and request.method == "POST":  # not OPTIONS
        metrics.record_webhook(response.status_code, seconds, g.get("webhook_outcome"))
    log.info(
        "%s %s %s %.1fms request_id=%s%s",
        request.method,
        request.path,
        response.status_code,
        seconds * 1000,
        request_id,
        f" transaction_id={transaction_id}" if transaction_id else "",
        extra={
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round(seconds * 1000, 2),
            "request_id": request_id,
            "transaction_id": transaction_id,
        },
    )
    return response
