from flask import Response, current_app, g, request
from flask_smorest import abort

from app.exact_json import dumps_exact
from app.store.transactions import ConflictingDuplicate, Receipt, ingest_webhook
from app.web.api import Blueprint, problem_responses
from app.web.bodies import BODY_READ_SECONDS
from app.web.errors import problem
from app.web.schemas import AcknowledgementSchema, WebhookTransactionSchema
from app.web.signatures import InvalidSignature, UnverifiableBody

blp = Blueprint(
    "webhooks", __name__, url_prefix="/v1/webhooks", description="Webhooks from payment providers."
)

ACCEPTED = {"message": "Webhook received and queued for processing"}
# The hot path's answer never changes: serialise it once, not per request.
ACCEPTED_JSON = dumps_exact(ACCEPTED)
# An identical duplicate gets the first answer again, marked as a replay (as Stripe
# does, and as the IETF idempotency-key draft asks): a sender's retry sees what the
# first attempt would have shown it.
REPLAYED_HEADER = "Idempotent-Replayed"


@blp.before_request
def require_signature():
    """With WEBHOOK_SECRET set, only correctly signed webhooks get past this (401)."""
    verifier = current_app.extensions["signature_verifier"]
    if verifier is None or request.method == "OPTIONS":  # OPTIONS reads no body, stores nothing
        return None
    try:
        verifier.verify(request.get_data(cache=True), request.headers)  # 413 past the limit
    except UnverifiableBody as exc:
        abort(400, message=str(exc))
    except InvalidSignature as exc:
        return problem(
            401,
            "Unauthorized",
            str(exc),
            headers={"WWW-Authenticate": 'StandardWebhooks realm="webhooks"'},
        )
    return None


SIGNATURE_HEADERS_DOC = [
    {
        "in": "header",
        "name": name,
        "required": False,
        "schema": {"type": "string"},
        "description": f"Standard Webhooks: {meaning}. Required when WEBHOOK_SECRET is set; "
        f"Svix's {name.replace('webhook-', 'svix-')} is accepted in its place.",
        "example": example,
    }
    for name, meaning, example in (
        ("webhook-id", "the message id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
        ("webhook-timestamp", "Unix seconds; refused more than 5 minutes off", "1714000000"),
        (
            "webhook-signature",
            "v1,<base64 HMAC-SHA256 of id.timestamp.body>, space-separated if several",
            "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
        ),
    )
]


@blp.post("/transactions")
# An instance, so webargs does not build a new schema for every request.
@blp.arguments(WebhookTransactionSchema())
@blp.response(
    202,
    AcknowledgementSchema,
    description="Stored and scheduled; or an identical duplicate, answered as the first was "
    "(nothing changed) with Idempotent-Replayed: true.",
    headers={
        REPLAYED_HEADER: {
            "description": "`true` when this is an identical duplicate; absent otherwise.",
            "schema": {"type": "string", "enum": ["true"]},
        }
    },
)
@blp.doc(
    parameters=SIGNATURE_HEADERS_DOC,
    responses=problem_responses(
        {
            409: "Same transaction_id with other business fields; refused.",
            400: "Not JSON, not an object, NaN/Infinity, or a key twice; or the body was "
            "shorter than its Content-Length.",
            401: "WEBHOOK_SECRET is set and the signature is missing or wrong.",
            408: f"The body took more than {BODY_READ_SECONDS} s to arrive.",
            413: "Body over 64 KiB, however it is framed (Content-Length or chunked).",
            415: "Content-Type is not JSON, or the body is compressed (Content-Encoding, or a "
            "Transfer-Encoding other than chunked).",
            503: "The database is unavailable; retry after Retry-After.",
        }
    ),
)
def receive_transaction(payload: dict):
    """Receive a transaction. A 2xx means it is committed and will be processed."""
    g.transaction_id = payload["transaction_id"]  # for the request's log line
    try:
        receipt = ingest_webhook(payload)
    except ConflictingDuplicate as conflict:
        return problem(
            409,
            "Conflict",
            f"Transaction {payload['transaction_id']!r} was already received with other values.",
            errors={field: ["Differs from the stored transaction."] for field in conflict.fields},
        )
    response = Response(ACCEPTED_JSON, status=202, mimetype="application/json")
    if receipt is Receipt.DUPLICATE:
        g.webhook_outcome = "duplicate"  # the status no longer tells it apart (metrics)
        response.headers[REPLAYED_HEADER] = "true"
    return response
