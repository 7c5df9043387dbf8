"""The webhook transaction service: `create_app()` builds it; nothing connects at import."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response

from app.cli import retry_failed, send_webhook
from app.config import VAR_DIR, load_config
from app.dashboard import blp as dashboard_blp
from app.exact_json import ExactJSONProvider
from app.extensions import (
    api,
    cooperative_database_driver,
    engine_options,
    init_celery,
    init_db,
)
from app.logs import configure_logging
from app.metrics import check_multiprocess_mode
from app.processing.processor import processor_from_config
from app.web.api import TransactionIdConverter
from app.web.auth import SECURITY_SCHEME, Tokens
from app.web.bodies import Request
from app.web.docs import ASSETS_URL as DOCS_ASSETS_URL
from app.web.docs import init_docs
from app.web.errors import register_error_handlers
from app.web.observability import init_request_observability
from app.web.routes import blueprints
from app.web.signatures import SignatureVerifier

# The OpenAPI document is generated from the routes and Marshmallow schemas themselves.
OPENAPI_SETTINGS = {
    "API_TITLE": "Webhook transaction service",
    "API_VERSION": "1.0.0",
    "OPENAPI_VERSION": "3.1.0",
    "OPENAPI_URL_PREFIX": "/",
    "OPENAPI_JSON_PATH": "openapi.json",
    "OPENAPI_SWAGGER_UI_PATH": "docs",
    # Served by the service itself (app/web/docs.py): /docs works with no internet.
    "OPENAPI_SWAGGER_UI_URL": DOCS_ASSETS_URL,
    # Swagger UI would otherwise send the spec to validator.swagger.io for a badge.
    "OPENAPI_SWAGGER_UI_CONFIG": {"validatorUrl": None},
    "API_SPEC_OPTIONS": {
        "components": {
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from API_READ_TOKENS (reads) or API_ADMIN_TOKENS "
                    "(reads and actions). Needed only when either is set.",
                }
            }
        },
        "info": {
            "description": (
                "Receives payment webhooks, stores each transaction once, and has each one "
                "processed by a slow, fallible processor, retried with backoff until it is "
                "PROCESSED or FAILED. Every error is RFC 9457 problem details "
                "(application/problem+json)."
            )
        },
    },
}


class Service(Flask):
    request_class = Request  # bodies read whole, their framing checked (app/web/bodies.py)

    def make_default_options_response(self) -> Response:
        """OPTIONS: 204 with Allow, instead of Flask's empty 200 labelled text/html."""
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    cooperative_database_driver()
    app = Service(__name__, static_folder=None)
    # A transaction id is opaque: "/lead" (%2Flead) or "a//b" is the id, not a path that
    # Werkzeug would merge and redirect to another transaction's URL (its default).
    app.url_map.merge_slashes = False
    app.url_map.converters["transaction_id"] = TransactionIdConverter
    app.json = ExactJSONProvider(app)
    app.config.update(load_config())
    app.config.update(OPENAPI_SETTINGS)
    if test_config:
        app.config.update(test_config)

    database_uri = app.config["SQLALCHEMY_DATABASE_URI"]
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options(database_uri))
    VAR_DIR.mkdir(exist_ok=True)  # beat's schedule, and the SQLite files by default
    if database_uri.startswith("sqlite:///"):
        Path(database_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])

    init_db(app)
    api.init_app(app)
    for blueprint in blueprints:
        api.register_blueprint(blueprint)
    init_docs(app)
    app.register_blueprint(dashboard_blp)  # a page, not part of the API's description
    register_error_handlers(app)
    init_request_observability(app)
    check_multiprocess_mode()
    app.cli.add_command(send_webhook)
    app.cli.add_command(retry_failed)
    init_celery(app)
    secrets = app.config["WEBHOOK_SECRETS"]
    app.extensions["signature_verifier"] = SignatureVerifier(secrets) if secrets else None
    app.extensions["processor"] = processor_from_config(app.config)
    app.extensions["api_tokens"] = Tokens(
        app.config["API_READ_TOKENS"], app.config["API_ADMIN_TOKENS"]
    )
    return app
