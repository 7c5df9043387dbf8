"""flask-smorest, reading bodies with our exact JSON and answering errors in our shape;
the URL converter for transaction ids."""

import http
from typing import Any

import flask
import flask_smorest
from webargs.flaskparser import FlaskParser, abort, is_json_request
from werkzeug.routing import PathConverter

from app.exact_json import InvalidJSON, loads_exact
from app.web.errors import ProblemSchema, http_error


class JSONBodyParser(FlaskParser):
    """Bodies are JSON objects, parsed without floats; anything else is a 4xx, in order:
    413 too large, 415 not JSON, 400 not a JSON object, then the schema's 422."""

    def _raw_load_json(self, req: flask.Request) -> Any:
        if not is_json_request(req):
            abort(415)
        try:
            body = loads_exact(req.get_data(cache=True))  # 413 past MAX_CONTENT_LENGTH
        except InvalidJSON as exc:
            abort(400, message=str(exc))
        if not isinstance(body, dict):
            abort(400, message="The body must be a JSON object.")
        return body


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = JSONBodyParser()


ERROR_CONTENT_TYPE = "application/problem+json"


def problem_responses(descriptions: dict[int, str]) -> dict[str, dict]:
    """Error answers for `@blp.doc(responses=...)`, in the problem+json shape.

    One @blp.doc for them all: each flask-smorest decorator wraps the view in one
    more function on every request, and documentation should cost no request time.
    """
    content = {ERROR_CONTENT_TYPE: {"schema": ProblemSchema}}
    return {
        str(status): {"description": description, "content": content}
        for status, description in descriptions.items()
    }


class Api(flask_smorest.Api):
    ERROR_SCHEMA = ProblemSchema

    def handle_http_exception(self, error):
        return http_error(error)

    def _register_responses(self):
        """flask-smorest's standard error responses, documented as the problem+json they are."""
        for status in http.HTTPStatus:
            response = {"description": status.phrase}
            if status >= 400:
                response["content"] = {ERROR_CONTENT_TYPE: {"schema": self.ERROR_SCHEMA}}
            self.spec.components.response(status.name, response, lazy=True)
        self.spec.components.response(
            self.DEFAULT_ERROR_RESPONSE_NAME,
            {
                "description": "Any other error, in the same shape.",
                "content": {ERROR_CONTENT_TYPE: {"schema": self.ERROR_SCHEMA}},
            },
            lazy=True,
        )


class TransactionIdConverter(PathConverter):
    """`<transaction_id:...>`: an id in a URL, percent-encoded. Any characters but NUL,
    slashes included, a leading one too ("/lead" as %2Flead), which Werkzeug's path
    converter refuses; with slashes left unmerged (create_app) "a//b" is itself. No
    stored id holds a NUL (PostgreSQL refuses it in a string): such a URL is a 404
    before any query."""

    regex = "[^\x00]+?"
    part_isolating = False  # it spans slashes (Werkzeug guesses from "/" in the regex)
