"""HTTP only: each module parses a request, calls a service, shapes the answer."""

from app.routes.health import blp as health_blp
from app.routes.transactions import blp as transactions_blp
from app.routes.webhooks import blp as webhooks_blp

blueprints = (health_blp, webhooks_blp, transactions_blp)
