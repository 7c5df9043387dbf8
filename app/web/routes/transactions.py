import logging

from flask import Response, g
from flask_smorest import abort

from app.exact_json import dumps_exact
from app.store import transactions as store
from app.web.api import Blueprint, problem_responses
from app.web.auth import Role, requires
from app.web.errors import problem
from app.web.schemas import (
    MAX_PAGE_SIZE,
    TransactionPageSchema,
    TransactionQuerySchema,
    TransactionSchema,
)

log = logging.getLogger("app.redrive")

blp = Blueprint(
    "transactions",
    __name__,
    url_prefix="/v1/transactions",
    description="What became of a transaction.",
)


@blp.get("")
@requires(Role.READ)  # before the arguments: without a token, nothing is parsed
@blp.arguments(TransactionQuerySchema, location="query")
@blp.response(200, TransactionPageSchema)
@blp.doc(responses=problem_responses({503: "The database is unavailable."}))
def list_transactions(query: dict):
    """Transactions, newest first, optionally only those in one status (keyset pagination)."""
    limit = min(query["limit"], MAX_PAGE_SIZE)
    rows = store.list_transactions(status=query["status"], limit=limit + 1, after=query["cursor"])
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "transactions": page,
        "next_cursor": (page[-1].created_at, page[-1].transaction_id) if more else None,
    }


# `path` so that ids containing "/" (sent URL-encoded) are found too.
@blp.get("/<transaction_id:transaction_id>")
@requires(Role.READ)
@blp.response(200, TransactionSchema)
@blp.doc(
    responses=problem_responses(
        {404: "No transaction with this id.", 503: "The database is unavailable."}
    )
)
def get_transaction(transaction_id: str):
    g.transaction_id = transaction_id  # for the request's log line
    transaction = store.find_transaction(transaction_id)
    if transaction is None:
        abort(404, message=f"No transaction with id {transaction_id!r}.")
    return transaction


@blp.post("/<transaction_id:transaction_id>/retry")
@requires(Role.ADMIN)
@blp.doc(
    responses={"202": {"description": "Moved back to PROCESSING, due now."}}
    | problem_responses(
        {
            404: "No transaction with this id.",
            409: "The transaction is not FAILED.",
            503: "The database is unavailable.",
        }
    )
)
def retry_transaction(transaction_id: str):
    """Re-drive a FAILED transaction: PROCESSING again, due now, its attempts counted afresh."""
    g.transaction_id = transaction_id
    if store.redrive_failed(transaction_ids=[transaction_id]):
        # An operator's action on money in flight: who did it, in the log (never the token).
        log.info(
            "transaction %s re-driven: PROCESSING again, due now, by %s",
            transaction_id,
            g.get("token_name") or "anyone (no API tokens are configured)",
            extra={"transaction_id": transaction_id, "token_name": g.get("token_name")},
        )
        body = {"transaction_id": transaction_id, "status": "PROCESSING"}
        return Response(dumps_exact(body), status=202, mimetype="application/json")
    transaction = store.find_transaction(transaction_id)
    if transaction is None:
        abort(404, message=f"No transaction with id {transaction_id!r}.")
    return problem(
        409,
        "Conflict",
        f"Transaction {transaction_id!r} is {transaction.status}; only FAILED ones are re-driven.",
    )
