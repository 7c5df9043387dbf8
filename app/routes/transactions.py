from flask_smorest import abort

from app.api import Blueprint
from app.schemas import TransactionSchema
from app.services import find_transaction

blp = Blueprint(
    "transactions",
    __name__,
    url_prefix="/v1/transactions",
    description="What became of a transaction.",
)


# `path` so that ids containing "/" (sent URL-encoded) are found too.
@blp.get("/<path:transaction_id>")
@blp.response(200, TransactionSchema)
@blp.alt_response(404, description="No transaction with this id.")
def get_transaction(transaction_id: str):
    transaction = find_transaction(transaction_id)
    if transaction is None:
        abort(404, message=f"No transaction with id {transaction_id!r}.")
    return transaction
