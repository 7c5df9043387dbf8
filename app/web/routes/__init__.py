"""HTTP only: each module parses a request, calls a service, shapes the answer."""

from app.web.routes.operations import blp as operations_blp
from app.web.routes.transactions import blp as transactions_blp
from app.web.routes.webhooks import blp as webhooks_blp

blueprints = (operations_blp, webhooks_blp, transactions_blp)
