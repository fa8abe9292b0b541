"""Text that can never cause a 500: NUL, control characters, lone surrogates and over-long strings, anywhere.

Every string a request carries (body, query, header) is read by one field type (`shop.core.schemas.CleanText`)
and bounded by the column it is stored in. On PostgreSQL a NUL reaching a query is a database error
(a 500 before this field type); a lone surrogate cannot be encoded on any database.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from marshmallow import fields

from shop.core.schemas import CleanText
from shop.extensions import db
from shop.users.models import User
from tests.conftest import PASSWORD
from tests.security.conftest import assert_error, concrete, operations

BAD_TEXT = {"NUL": "ab\x00cd", "bell": "ab\x07cd", "escape": "ab\x1b[31m", "line break": "Ann\nBcc: x@example.com"}
# Conditional-request headers flask-smorest compares with the answer's ETag and never stores or parses.
COMPARED_ONLY = {"If-None-Match", "If-Match"}
LONE_SURROGATE = '"ab\\ud800cd"'  # as JSON text: the standard library's reader lets it through


def _resolve(spec: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        _, _, kind, name = item["$ref"].split("/")
        item = spec["components"][kind][name]
    return item


def _string_inputs(spec: dict[str, Any]) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    """(method, path, location, name, schema) of every string a request of the document may carry."""
    found = []
    for method, path, operation in operations(spec):
        for parameter in (_resolve(spec, item) for item in operation.get("parameters", [])):
            if parameter["in"] in {"query", "header"} and parameter.get("schema", {}).get("type") == "string":
                found.append((method, path, parameter["in"], parameter["name"], parameter["schema"]))
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            for name, schema in _resolve(spec, body["schema"]).get("properties", {}).items():
                if schema.get("type") == "string" and not schema.get("readOnly"):
                    found.append((method, path, "json", name, schema))
    return found


def _send(client: Any, method: str, path: str, location: str, name: str, value: str, headers: dict[str, str]) -> Any:
    if location == "json":
        return client.open(concrete(path), method=method.upper(), json={name: value}, headers=headers)
    if location == "query":
        return client.open(concrete(path), method=method.upper(), query_string={name: value}, headers=headers)
    return client.open(concrete(path), method=method.upper(), json={}, headers={**headers, name: value})


def _refused(response: Any, location: str, name: str) -> None:
    body = assert_error(response, 422)
    assert name in body["errors"][{"header": "headers"}.get(location, location)], body


def test_every_schema_that_reads_a_request_reads_strings_as_clean_text(app: Flask) -> None:
    """No request schema has a plain string field: the one field type is what refuses bad text."""
    plain, schemas = [], 0
    for endpoint, view in app.view_functions.items():
        view_class = getattr(view, "view_class", None)
        handlers = [getattr(view_class, m) for m in ("get", "post", "put", "patch", "delete") if hasattr(view_class, m)]
        for handler in handlers or [view]:
            for argument in getattr(handler, "_apidoc", {}).get("arguments", {}).get("parameters", []):
                schema = argument["schema"]
                schema = schema() if isinstance(schema, type) else schema
                schemas += 1
                plain += [
                    f"{endpoint}: {name}"
                    for name, field in schema.fields.items()
                    if isinstance(field, fields.String) and not field.dump_only and not isinstance(field, CleanText)
                ]
    assert schemas > 10 and plain == []


def test_every_string_of_every_operation_refuses_bad_text(client: Any, spec: dict[str, Any], admin_headers) -> None:
    inputs = _string_inputs(spec)
    assert len(inputs) > 30  # the walk found the document's strings
    for method, path, location, name, _ in inputs:
        for label, value in BAD_TEXT.items():
            if location == "header" and label == "line break":
                continue  # not a header value any client can send
            response = _send(client, method, path, location, name, value, admin_headers)
            if name in COMPARED_ONLY:
                assert response.status_code != 500, (method, path, name)
                continue
            if name in {"description"} and label == "line break":
                assert response.status_code != 500, (method, path, name)
                continue  # descriptions document lines
            assert response.status_code == 422, (method, path, location, name, label, response.get_json())
            _refused(response, location, name)


def test_a_lone_surrogate_in_any_body_string_is_a_422(client: Any, spec: dict[str, Any], admin_headers) -> None:
    for method, path, location, name, _ in _string_inputs(spec):
        if location != "json":
            continue
        response = client.open(
            concrete(path),
            method=method.upper(),
            data=f'{{"{name}": {LONE_SURROGATE}}}',
            content_type="application/json",
            headers=admin_headers,
        )
        _refused(response, location, name)


def test_every_string_one_past_its_documented_maximum_is_a_422(
    client: Any, spec: dict[str, Any], admin_headers
) -> None:
    bounded = [item for item in _string_inputs(spec) if "maxLength" in item[4]]
    assert {name for _, _, _, name, _ in bounded} >= {"username", "first_name", "phone_number", "Idempotency-Key"}
    for method, path, location, name, schema in bounded:
        value = "5" * (schema["maxLength"] + 1)
        _refused(_send(client, method, path, location, name, value, admin_headers), location, name)


# The cases found on PostgreSQL, each with an otherwise valid request.


def test_a_nul_in_the_login_username_is_a_422(client: Any, user) -> None:
    _refused(client.post("/api/token/", json={"username": "ali\x00ce", "password": PASSWORD}), "json", "username")


def test_a_lone_surrogate_password_at_login_is_a_422(client: Any, user) -> None:
    response = client.post(
        "/api/token/", data='{"username": "alice", "password": "pass\\ud800word"}', content_type="application/json"
    )
    _refused(response, "json", "password")


def test_a_nul_in_a_name_at_registration_is_a_422_and_registers_nobody(app: Flask, client: Any) -> None:
    body = {"username": "newbie", "email": "newbie@example.com", "password": PASSWORD, "password2": PASSWORD}
    for field in ("first_name", "last_name"):
        _refused(client.post("/api/users/", json={**body, field: "Ann\x00"}), "json", field)
    with app.app_context():
        assert db.session.scalar(db.select(User).where(User.username == "newbie")) is None


def test_a_nul_in_a_profile_change_is_a_422_and_changes_nothing(app: Flask, client: Any, user, user_headers) -> None:
    for field in ("first_name", "last_name"):
        _refused(client.patch("/api/users/me/", json={field: "Ann\x00"}, headers=user_headers), "json", field)
    with app.app_context():
        assert db.session.get(User, user.id).first_name == ""


def test_a_sixteen_character_phone_number_is_a_422_not_a_database_error(app: Flask, client: Any, user_headers) -> None:
    sixteen = "+" + "1" * 15
    _refused(
        client.patch("/api/users/me/", json={"phone_number": sixteen}, headers=user_headers), "json", "phone_number"
    )
    assert client.patch("/api/users/me/", json={"phone_number": sixteen[:15]}, headers=user_headers).status_code == 200


def test_a_nul_in_the_staff_user_filter_is_a_422(client: Any, staff_headers) -> None:
    _refused(client.get("/api/orders/", query_string={"user": "ali\x00ce"}, headers=staff_headers), "query", "user")


def test_a_nul_in_an_idempotency_key_is_a_422(client: Any, user_headers) -> None:
    response = client.post("/api/orders/", json={"items": []}, headers={**user_headers, "Idempotency-Key": "k\x00y"})
    _refused(response, "header", "Idempotency-Key")


@pytest.mark.parametrize("name", ["Anne-Marie", "O'Brien", "J. R.", "José", "Zoë", "Łucja", "Пётр", "李", "अनु"])
def test_real_names_are_accepted(client: Any, user_headers, name: str) -> None:
    response = client.patch("/api/users/me/", json={"first_name": name}, headers=user_headers)
    assert response.status_code == 200 and response.get_json()["first_name"] == name


@pytest.mark.parametrize("name", ["Visit https://evil.example", "Ann <b>", "R2D2", "a@b", "Ann\u202e"])
def test_names_hold_only_what_names_contain(client: Any, user_headers, name: str) -> None:
    _refused(client.patch("/api/users/me/", json={"first_name": name}, headers=user_headers), "json", "first_name")


def test_the_document_states_the_text_rule(spec: dict[str, Any]) -> None:
    schema = _resolve(spec, {"$ref": "#/components/schemas/Registration"})
    assert "\\x00" in schema["properties"]["first_name"]["pattern"]
    assert json.dumps(spec)  # the document itself is valid JSON text (no raw surrogates in patterns)
