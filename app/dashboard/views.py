"""The page, the JSON it refreshes itself from, and the lookup by id; all behind a read token.

Access is HTTP Basic with a token as the password (challenge "Basic", so a browser asks
once and then sends it with every request the page makes, the re-drive included).
"""

from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, current_app, g, render_template, url_for

from app.dashboard import queries
from app.exact_json import dumps_exact, plain_number
from app.store import backlog
from app.store import transactions as store
from app.store.models import TransactionStatus, utcnow
from app.web.auth import ACTION_HEADER, Role, refuse
from app.web.errors import problem
from app.web.schemas import MINOR_UNITS, to_iso8601

# How often the page asks for fresh data.
REFRESH_SECONDS = 5

# Everything from this host, nothing inline: no CDN can be added by accident, and
# text from a transaction (a last_error) can never run as script.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ]
)

blp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
)


@blp.before_request
def require_read_token() -> Response | None:
    return refuse(Role.READ, challenge="Basic")


@blp.after_request
def page_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")  # the data is not for caches
    return response


def access() -> dict[str, Any]:
    """What this visitor may do: the page shows it and draws buttons only for admins."""
    if not current_app.extensions["api_tokens"].configured:
        return {"open": True, "role": None, "can_act": True}
    role: Role = g.role  # set by refuse() for every request that got this far
    return {"open": False, "role": role.name.lower(), "can_act": role >= Role.ADMIN}


# `path` so that ids containing "/" work; the page puts its own id in place of this.
ID_PLACEHOLDER = "TRANSACTION_ID"


@blp.get("")
def page() -> str:
    return render_template(
        "dashboard/page.html",
        access=access(),
        refresh_seconds=REFRESH_SECONDS,
        data_url=url_for("dashboard.data"),
        find_url=url_for("dashboard.find", transaction_id=ID_PLACEHOLDER),
        retry_url=url_for("transactions.retry_transaction", transaction_id=ID_PLACEHOLDER),
        id_placeholder=ID_PLACEHOLDER,
        action_header=ACTION_HEADER,
    )


@blp.get("/data")
def data() -> Response:
    """Everything the page shows, as of one moment (`generated_at`)."""
    now = utcnow()
    with queries.connect() as connection:
        counts, processed_estimated = queries.status_counts(connection)
        oldest = backlog.oldest_processing(connection)
        due = backlog.count(connection, TransactionStatus.PROCESSING, due_by=now)
        failed = queries.newest_failed(connection)
        minutes = queries.last_hour(connection, now)
    body = {
        "generated_at": to_iso8601(now),
        "access": access(),
        "counts": counts,
        # True when the PROCESSED total is PostgreSQL's estimate (a large table).
        "processed_estimated": processed_estimated,
        "oldest_processing": None
        if oldest is None
        else {
            "transaction_id": oldest.transaction_id,
            "created_at": to_iso8601(oldest.created_at),
            "age_seconds": _seconds(now - oldest.created_at),
        },
        "due_now": due,
        "last_hour": [
            {
                "minute": to_iso8601(minute.start, timespec="seconds"),
                "received": minute.received,
                "processed": minute.processed,
                "failed": minute.failed,
                "p50_seconds": _round(minute.p50_seconds),
                "p99_seconds": _round(minute.p99_seconds),
            }
            for minute in minutes
        ],
        "failed": [_failed(row) for row in failed],
        "failed_shown_at_most": queries.FAILED_SHOWN,
    }
    return _json(body)


@blp.get("/transactions/<transaction_id:transaction_id>")
def find(transaction_id: str) -> Response:
    """One transaction's whole record: what was received and what became of it."""
    g.transaction_id = transaction_id
    row = store.find_transaction(transaction_id)
    if row is None:
        return problem(404, "Not Found", f"No transaction with id {transaction_id!r}.")
    record = {
        column: _plain(getattr(row, column))
        for column in queries.table.c.keys()  # every column, in the table's order
    }
    record["amount"] = money(row.amount, row.currency)
    return _json(record)


def _failed(row) -> dict[str, Any]:
    return {
        "transaction_id": row.transaction_id,
        "amount": money(row.amount, row.currency),
        "currency": row.currency,
        "created_at": to_iso8601(row.created_at),
        "failed_at": _plain(row.failed_at),
        "attempts": row.attempts,
        "last_error": row.last_error,
    }


def money(amount: Decimal, currency: str) -> str:
    """As a person reads it, with the currency's minor units: 1739.7 USD -> "1739.70".
    Exact: a stored amount never has more places than its currency."""
    places = MINOR_UNITS.get(currency)
    if places is None or -plain_number(amount).as_tuple().exponent > places:
        return str(plain_number(amount))
    return str(amount.quantize(Decimal(1).scaleb(-places)))


def _plain(value: Any) -> Any:
    """Times as UTC ISO 8601; amounts as exact decimal strings, which JavaScript keeps
    exact (a JSON number past 2^53 or with many places would become a rounded float)."""
    if isinstance(value, datetime):
        return to_iso8601(value)
    if isinstance(value, Decimal):
        return str(plain_number(value))
    return getattr(value, "value", value)  # an enum's value


def _seconds(delta) -> float:
    return round(delta.total_seconds(), 3)


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _json(body: dict[str, Any]) -> Response:
    return Response(dumps_exact(body), mimetype="application/json")
