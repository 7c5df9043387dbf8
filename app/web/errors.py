"""One JSON error shape for every status: RFC 9457 problem details.

    {"title": "Unprocessable Content", "status": 422,
     "detail": "The webhook failed validation.", "errors": {"amount": ["Must be greater than 0."]}}

A 5xx says what the sender can do about it, never what went wrong inside.
"""

import logging
from typing import Any

from flask import Flask, Response, g, has_request_context
from marshmallow import Schema, fields
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from app.config import MAX_WEBHOOK_BYTES
from app.exact_json import dumps_exact

log = logging.getLogger(__name__)

# How long a sender should wait before retrying when the database is away.
RETRY_AFTER_SECONDS = 5

DETAILS = {
    400: "The request is malformed.",
    404: "Nothing is at this URL.",
    405: "This URL does not accept that method.",
    413: f"The body is larger than {MAX_WEBHOOK_BYTES} bytes.",
    415: "The body must be JSON, sent with Content-Type: application/json.",
    422: "The body failed validation; see errors.",
    500: "Something went wrong on our side. The request may be retried.",
}


class ProblemSchema(Schema):
    """The error body of every non-2xx answer (RFC 9457)."""

    title = fields.String(metadata={"example": "Unprocessable Content"})
    status = fields.Integer(metadata={"example": 422})
    detail = fields.String(metadata={"example": "The body failed validation; see errors."})
    request_id = fields.String(
        metadata={"description": "Also in the X-Request-ID header and the log line of the request."}
    )
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={
            "description": "Messages by field name, where a field is at fault.",
            "example": {"amount": ["Must be greater than 0."]},
        },
    )


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    errors: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {"title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    body.update(extra or {})
    if has_request_context():
        g.problem = _in_one_line(detail, errors)  # for the request's log line
        if g.get("request_id"):
            body["request_id"] = g.request_id  # quote it to us: it finds the log line
    return Response(
        dumps_exact(body),
        status=status,
        headers=headers,
        mimetype="application/problem+json",
    )


def _in_one_line(detail: str, errors: dict[str, Any] | None) -> str:
    """The detail, and what each field was refused for: what a 4xx's log line says."""
    parts = [detail]
    for field, messages in (errors or {}).items():
        listed = messages if isinstance(messages, list) else [messages]
        parts.append(f"{field}: {' '.join(map(str, listed))}")
    return " ".join(parts)[:LOGGED_PROBLEM_CHARACTERS]


# Enough for a detail and a few fields' messages; a hostile body cannot grow the log line.
LOGGED_PROBLEM_CHARACTERS = 300


def http_error(error: HTTPException) -> Response:
    """Every HTTPException, and every unhandled exception (Flask wraps those in a 500)."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    detail = (
        data.get("message")
        or getattr(error, "problem_detail", None)  # ours, more precise than the status's
        or DETAILS.get(status)
        or error.description
        or ""
    )
    headers = dict(data.get("headers") or {})
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    if status >= 500:
        detail = DETAILS[500]  # never leak an exception's text
    if status == 422 and set(data.get("messages") or {}) == {"query"}:
        detail = "The query parameters failed validation; see errors."
    return problem(
        status,
        error.name,
        detail,
        errors=_field_errors(data.get("messages")),
        headers=headers,
    )


def _field_errors(messages: dict[str, Any] | None) -> dict[str, Any] | None:
    # webargs groups messages by location ({"json": {"amount": [...]}}); senders
    # care about the field, not where we looked for it.
    if not messages:
        return None
    merged: dict[str, Any] = {}
    for by_field in messages.values():
        merged.update(by_field if isinstance(by_field, dict) else {"_body": by_field})
    return merged


def database_unavailable(error: Exception) -> Response:
    # An outage is not a bug: one line per request, not a traceback.
    log.warning("database unavailable, answered 503: %s", str(error).splitlines()[0])
    return problem(
        503,
        "Service Unavailable",
        "The database is unavailable; retry later.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def register_error_handlers(app: Flask) -> None:
    for error_class in (OperationalError, InterfaceError, PoolTimeoutError):
        app.register_error_handler(error_class, database_unavailable)
