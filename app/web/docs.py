"""`/docs` without internet: Swagger UI's files come from an installed package, not a CDN.

flask-smorest renders the page and loads `swagger-ui.css`, `swagger-ui-bundle.js` and
`swagger-ui-standalone-preset.js` from OPENAPI_SWAGGER_UI_URL; here they are served
from the `flask-swagger-ui` package's copy of Swagger UI's dist folder (its version is
the package's).
"""

from importlib.resources import files
from pathlib import Path

from flask import Blueprint, Flask, Response, request, send_from_directory

ASSETS_URL = "/docs/assets/"
SWAGGER_UI_DIST = Path(str(files("flask_swagger_ui") / "dist"))

blp = Blueprint("docs_assets", __name__, url_prefix=ASSETS_URL.rstrip("/"))

# Swagger UI starts itself with an inline script, so scripts are not confined as on
# the dashboard; the page still cannot be framed (clickjacking its "Try it out" with
# an operator's token) nor given another base URL or plugin.
DOCS_SECURITY_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@blp.get("/<path:filename>")
def asset(filename: str) -> Response:
    # send_from_directory refuses paths that climb out of the folder (404).
    return send_from_directory(SWAGGER_UI_DIST, filename, max_age=24 * 3600)


def init_docs(app: Flask) -> None:
    app.register_blueprint(blp)

    @app.after_request
    def docs_headers(response: Response) -> Response:
        if request.path.startswith("/docs"):  # the page (flask-smorest's) and its assets
            response.headers.update(DOCS_SECURITY_HEADERS)
        return response
