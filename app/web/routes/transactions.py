from flask import g
from flask_smorest import abort

from app.store import transactions as store
from app.web.api import Blueprint, problem_responses
from app.web.schemas import (
    MAX_PAGE_SIZE,
    TransactionPageSchema,
    TransactionQuerySchema,
    TransactionSchema,
)

blp = Blueprint(
    "transactions",
    __name__,
    url_prefix="/v1/transactions",
    description="What became of a transaction.",
)


@blp.get("")
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
@blp.get("/<path:transaction_id>")
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
