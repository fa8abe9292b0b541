"""OWASP API9:2023 Improper Inventory Management: the OpenAPI document is the whole API, and the
API is the whole document: no route it does not list, no operation it lists that is not served."""

from __future__ import annotations

from typing import Any

from tests.security.conftest import concrete, operations, spec_path

DOCS_ENDPOINTS = {
    "api-docs.openapi_json",
    "api-docs.openapi_swagger_ui",
    "api-docs.openapi_redoc",
    "api-docs-assets.asset",  # the pages' own scripts and styles (shop/core/apidocs.py)
}
OPERATIONS_ROUTES = {"/healthz", "/readyz", "/metrics"}


def _served(app: Any) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route the app answers, documentation pages aside."""
    return {
        (method.lower(), spec_path(rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in DOCS_ENDPOINTS
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def test_every_route_is_documented_and_every_documented_operation_is_served(app, spec):
    documented = {(method, path) for method, path, _ in operations(spec)}
    served = _served(app)

    assert served - documented == set(), "routes missing from the OpenAPI document"
    assert documented - served == set(), "documented operations the app does not serve"
    assert len(served) >= 29


def test_the_only_undocumented_routes_are_the_documentation_itself(app, client):
    undocumented = {rule.endpoint for rule in app.url_map.iter_rules() if rule.endpoint in DOCS_ENDPOINTS}

    assert undocumented == DOCS_ENDPOINTS
    assert client.get("/api/openapi.json").status_code == 200
    assert app.static_folder is None  # no file tree served beside the API


def test_every_operation_is_described_completely(spec):
    for method, path, operation in operations(spec):
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        assert operation.get("summary") and operation.get("tags"), where
        assert any(code.startswith("2") for code in responses), where
        assert "default" in responses, where
        if path not in OPERATIONS_ROUTES:
            assert "429" in responses, where  # every route but the probes is rate limited
        if "{" in path:
            assert "404" in responses, where
        if operation.get("security") == [{"bearerAuth": []}]:
            assert "401" in responses, where
        if "requestBody" in operation or any(p.get("in") == "query" for p in operation.get("parameters", [])):
            assert "422" in responses, where


def test_every_operation_documented_as_public_answers_without_a_token(client, spec):
    for method, path, operation in operations(spec):
        if operation.get("security") == [{"bearerAuth": []}]:
            continue
        response = client.open(concrete(path), method=method.upper(), json={} if method != "get" else None)
        assert response.status_code != 401, (method, path, response.get_json())


def test_the_document_names_its_version_and_security_scheme(app, spec):
    assert spec["info"]["version"] == app.config["API_VERSION"]
    assert spec["info"]["title"] == app.config["API_TITLE"]
    assert spec["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }


def test_paths_without_the_trailing_slash_lead_to_the_documented_ones(client):
    response = client.get("/api/products")

    assert response.status_code == 308 and response.headers["Location"].endswith("/api/products/")
