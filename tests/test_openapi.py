"""The API as described: /openapi.json comes from the code, and the running app keeps to it.

Schemathesis reads the app's own spec, generates requests for every operation
(valid and invalid), sends them, and checks each answer against the spec:
no 5xx, documented status codes, content types and response schemas.
"""

import re

import pytest
import schemathesis
from conftest import make_app
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from app.extensions import db

# Every check Schemathesis has, but one: "a request the spec allows is accepted". Our
# validation is deliberately stricter than JSON Schema can say (an amount may have no
# more decimal places than its currency: 0.002 is fine for KWD, refused for USD; a
# cursor must be one we gave out). Requests the spec forbids must still be refused.


# With tokens configured, Schemathesis sends this one; its own auth check also tries
# guarded operations without it and with a wrong one, and expects 401.
ADMIN_TOKEN = "spec-admin-token"


def test_the_app_keeps_to_its_own_spec(database_url):
    app = make_app(database_url, PROPAGATE_EXCEPTIONS=False, API_ADMIN_TOKENS=[ADMIN_TOKEN])
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def keeps_to_the_spec(case):
            case.call_and_validate(
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                excluded_checks=[positive_data_acceptance],
            )

        keeps_to_the_spec()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) == 8, checked
    with app.app_context():
        db.engine.dispose()


def test_the_spec_documents_every_route_and_its_answers(client):
    spec = client.get("/openapi.json").get_json()
    operations = {
        (method.upper(), path): sorted(operation["responses"])
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        if method != "parameters"
    }
    assert operations == {
        ("GET", "/"): ["200", "default"],
        ("GET", "/health/ready"): ["200", "503", "default"],
        ("GET", "/metrics"): ["200", "401", "default"],
        ("GET", "/metrics/pipeline"): ["200", "401", "default"],
        ("POST", "/v1/webhooks/transactions"): sorted(
            ["202", "400", "401", "408", "409", "413", "415", "422", "503", "default"]
        ),
        ("GET", "/v1/transactions"): ["200", "401", "422", "503", "default"],
        ("GET", "/v1/transactions/{transaction_id}"): ["200", "401", "404", "503", "default"],
        ("POST", "/v1/transactions/{transaction_id}/retry"): sorted(
            ["202", "401", "403", "404", "409", "503", "default"]
        ),
    }
    webhook = spec["paths"]["/v1/webhooks/transactions"]["post"]
    assert [p["name"] for p in webhook["parameters"]] == [
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ]
    conflict = webhook["responses"]["409"]["content"]
    assert conflict == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }


def test_the_spec_declares_the_bearer_scheme_on_exactly_the_guarded_operations(client):
    spec = client.get("/openapi.json").get_json()
    scheme = spec["components"]["securitySchemes"]["bearerToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    guarded = {
        (method.upper(), path): operation["responses"]
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        if method != "parameters" and operation.get("security") == [{"bearerToken": []}]
    }
    assert sorted(guarded) == [
        ("GET", "/metrics"),
        ("GET", "/metrics/pipeline"),
        ("GET", "/v1/transactions"),
        ("GET", "/v1/transactions/{transaction_id}"),
        ("POST", "/v1/transactions/{transaction_id}/retry"),
    ]
    assert all("401" in responses for responses in guarded.values())
    assert "403" in guarded[("POST", "/v1/transactions/{transaction_id}/retry")]
    assert "security" not in spec  # no global requirement: the rest stays open


def test_the_interactive_docs_load_the_spec(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert b"swagger-ui" in page.data
    assert b"/openapi.json" in page.data


@pytest.mark.parametrize("path", ["/docs", "/docs/assets/swagger-ui-bundle.js"])
def test_the_docs_cannot_be_framed(client, path):
    with client.get(path) as response:
        assert response.status_code == 200
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_docs_load_swagger_ui_from_the_service_itself(client):
    """No CDN: /docs renders with no internet (the browser test checks every request)."""
    html = client.get("/docs").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(assets) == [
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui-standalone-preset.js",
        "/docs/assets/swagger-ui.css",
    ]
    assert "http" not in html
    assert '{"validatorUrl":null}' in html  # no badge fetched from validator.swagger.io
    for asset in assets:
        with client.get(asset) as response:  # a file: closed with the response
            assert response.status_code == 200 and len(response.data) > 10_000, asset
    assert client.get("/docs/assets/../../app/config.py").status_code == 404
