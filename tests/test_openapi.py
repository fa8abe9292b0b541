"""The OpenAPI document: valid, generator-friendly (names, operationIds), and stating every rule the server enforces."""

from __future__ import annotations

import re
import warnings
from typing import Any

import marshmallow as ma
import pytest
from flask import Flask
from openapi_spec_validator import validate

from shop import create_app
from shop.core.schemas import DescribedRule, Pattern, ResponseSchema
from tests.conftest import app_config
from tests.security.conftest import operations

# The operationIds clients are generated with: a rename breaks every generated client, so it is a
# deliberate change of this table.
OPERATION_IDS = {
    ("post", "/api/users/"): "registerUser",
    ("get", "/api/users/"): "listUsers",
    ("get", "/api/users/me/"): "readMyProfile",
    ("patch", "/api/users/me/"): "updateMyProfile",
    ("post", "/api/users/me/password/"): "changeMyPassword",
    ("post", "/api/users/me/sessions/revoke/"): "logOutEverywhere",
    ("get", "/api/users/{user_id}/"): "readUser",
    ("patch", "/api/users/{user_id}/"): "manageUser",
    ("post", "/api/token/"): "obtainTokens",
    ("post", "/api/token/refresh/"): "refreshTokens",
    ("post", "/api/token/revoke/"): "revokeTokens",
    ("get", "/api/categories/"): "listCategories",
    ("post", "/api/categories/"): "createCategory",
    ("get", "/api/categories/{category_id}/"): "readCategory",
    ("patch", "/api/categories/{category_id}/"): "updateCategory",
    ("delete", "/api/categories/{category_id}/"): "deleteCategory",
    ("get", "/api/products/"): "listProducts",
    ("post", "/api/products/"): "createProduct",
    ("get", "/api/products/{product_id}/"): "readProduct",
    ("put", "/api/products/{product_id}/"): "replaceProduct",
    ("patch", "/api/products/{product_id}/"): "updateProduct",
    ("delete", "/api/products/{product_id}/"): "hideProduct",
    ("post", "/api/products/{product_id}/stock/"): "adjustProductStock",
    ("post", "/api/orders/"): "placeOrder",
    ("get", "/api/orders/"): "listOrders",
    ("get", "/api/orders/{order_id}/"): "readOrder",
    ("patch", "/api/orders/{order_id}/"): "changeOrderStatus",
    ("post", "/api/orders/{order_id}/cancel/"): "cancelOrder",
    ("get", "/api/orders/emails/"): "listOrderEmails",
    ("get", "/healthz"): "checkLiveness",
    ("get", "/readyz"): "checkReadiness",
    ("get", "/metrics"): "readMetrics",
}
# Rules between fields, or against stored data, that no JSON Schema states (the fuzz allows their 422s).
CROSS_FIELD_RULES = {"passwords_match", "each_product_once"}


@pytest.fixture(scope="module")
def document(app: Flask) -> dict[str, Any]:
    return app.test_client().get("/api/openapi.json").get_json()


def _schemas(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return document["components"]["schemas"]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema or len(schema.get("allOf", [])) == 1:
        schema = schema["allOf"][0] if "allOf" in schema else schema
        if "$ref" in schema:
            schema = _schemas(document)[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every object in the document with where it is."""
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _walk(value, f"{path}/{index}")
    return found


def test_the_document_is_valid_openapi(document):
    validate(document)


def test_no_two_components_share_a_name_and_no_enum_is_left_for_a_generator_to_name(app):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh = create_app(app_config())
        document = fresh.test_client().get("/api/openapi.json").get_json()
    # apispec renames a second schema of one name ("Order1") and warns: none may.
    assert not [str(w.message) for w in caught if "resolved to the name" in str(w.message)]
    names = list(_schemas(document))
    # Generated classes are named after components: no two may differ only by case or punctuation.
    normalized = [re.sub(r"[^a-z0-9]", "", name.lower()) for name in names]
    assert len(set(normalized)) == len(normalized), names
    assert not [name for name in names if re.search(r"\d+$", name)], names
    # An enum inline in a property gets a name made up by each generator (two OrderStatus classes):
    # every enum is a component of its own, referenced.
    inline = [
        path
        for path, node in _walk(document)
        if "enum" in node and not path.startswith(("/components/schemas/", "/components/headers/"))
    ]
    assert inline == []
    for name, schema in _schemas(document).items():
        if "enum" in schema:
            varnames = schema["x-enum-varnames"]
            assert len(varnames) == len(schema["enum"]) and all(re.fullmatch(r"[A-Z][A-Z0-9_]*", v) for v in varnames)
            assert not [v for v in varnames if v.startswith("VALUE_")], name


def test_every_operation_has_its_stable_unique_operation_id(document):
    found = {(method, path): operation.get("operationId") for method, path, operation in operations(document)}

    assert found == OPERATION_IDS
    assert len(set(found.values())) == len(found)


def test_ordering_is_a_named_enum_with_member_names(document):
    ordering = next(p for p in document["paths"]["/api/products/"]["get"]["parameters"] if p.get("name") == "ordering")
    enum = _resolve(document, ordering["schema"])

    assert ordering["schema"]["default"] == "id"
    assert dict(zip(enum["enum"], enum["x-enum-varnames"], strict=True)) == {
        "id": "ID",
        "name": "NAME",
        "price": "PRICE",
        "created_at": "CREATED_AT",
        "-id": "ID_DESC",
        "-name": "NAME_DESC",
        "-price": "PRICE_DESC",
        "-created_at": "CREATED_AT_DESC",
    }
    assert _schemas(document)["OrderStatusChange"]["properties"]["status"] == {
        "$ref": "#/components/schemas/OrderStatus"
    }


def _request_schemas(app: Flask) -> list[tuple[str, ma.Schema]]:
    """Every schema the server parses a request with (bodies, query strings, headers)."""
    found = []
    for endpoint, view in app.view_functions.items():
        view_class = getattr(view, "view_class", None)
        handlers = [
            getattr(view_class, m)
            for m in ("get", "post", "put", "patch", "delete")
            if view_class and hasattr(view_class, m)
        ]
        for handler in handlers or [view]:
            for argument in getattr(handler, "_apidoc", {}).get("arguments", {}).get("parameters", []):
                schema = argument["schema"]
                found.append((endpoint, schema() if isinstance(schema, type) else schema))
    return found


def _fields(schema: ma.Schema) -> list[tuple[str, ma.fields.Field]]:
    found = []
    for name, field in schema.fields.items():
        if field.dump_only:
            continue
        found.append((f"{type(schema).__name__}.{name}", field))
        inner = field.inner if isinstance(field, ma.fields.List) else field
        if isinstance(inner, ma.fields.Nested):
            found += _fields(inner.schema)
    return found


def _stated(field: ma.fields.Field, validator: Any, prop: dict[str, Any]) -> bool:
    """Whether the document's property states this validator's rule."""
    if isinstance(validator, ma.validate.Length):
        many = isinstance(field, ma.fields.List)
        low, high = ("minItems", "maxItems") if many else ("minLength", "maxLength")
        return (validator.min is None or prop.get(low) == validator.min) and (
            validator.max is None or prop.get(high) == validator.max
        )
    if isinstance(validator, ma.validate.Range):
        return (validator.min is None or prop.get("minimum") == validator.min) and (
            validator.max is None or prop.get("maximum") == validator.max
        )
    if isinstance(validator, Pattern):
        return validator.regex.pattern in {prop.get("pattern"), *[p.get("pattern") for p in prop.get("allOf", [])]}
    if isinstance(validator, ma.validate.Email):
        return prop.get("format") == "email"
    if isinstance(validator, DescribedRule):  # a rule no JSON Schema keyword states: said in words
        return validator.description in prop.get("description", "")
    return False


def test_the_document_states_every_rule_of_every_request_field(app, document):
    """Each validator a request field has (length, range, pattern, email) is in the document; nothing else checks a
    single field (marshmallow's Regexp would not match as the document's pattern does)."""
    from apispec.ext.marshmallow.openapi import OpenAPIConverter

    converter = OpenAPIConverter(openapi_version="3.0.3", schema_name_resolver=lambda schema: None, spec=None)
    checked = 0
    for endpoint, schema in _request_schemas(app):
        for name, field in _fields(schema):
            prop = converter.field2property(field)
            for validator in field.validators:
                assert _stated(field, validator, prop), (endpoint, name, validator, prop)
                checked += 1
        hooks = {attr for attr in dir(type(schema)) if hasattr(getattr(type(schema), attr), "__marshmallow_hook__")}
        assert hooks <= CROSS_FIELD_RULES | {"money"}, (endpoint, hooks)
    assert checked > 40


def test_registration_username_password_and_phone_rules_are_in_the_document(document):
    registration = _schemas(document)["Registration"]["properties"]

    assert registration["username"] | {"minLength": 3, "maxLength": 150} == registration["username"]
    assert registration["username"]["pattern"] == r"^[\w.@+-]+$"
    assert registration["password"]["minLength"] == 8 and registration["password"]["writeOnly"] is True
    assert re.fullmatch(registration["password"]["pattern"], "12345678") is None
    assert registration["phone_number"]["maxLength"] == 15 and registration["phone_number"]["nullable"] is True


def test_money_is_a_decimal_string_with_its_pattern_everywhere(document):
    schemas = _schemas(document)
    for prop in (
        schemas["Product"]["properties"]["price"],
        schemas["ProductCreate"]["properties"]["price"],
        schemas["Order"]["properties"]["total"],
        schemas["OrderItem"]["properties"]["unit_price"],
    ):
        assert prop["type"] == "string" and prop["format"] == "decimal" and prop["pattern"], prop
        assert re.fullmatch(prop["pattern"], "25.99") and not re.fullmatch(prop["pattern"], "25.999")


def test_every_response_field_is_required_read_only_and_nullable_where_null_is_sent(app, document):
    schemas = _schemas(document)
    answers = {cls.__name__.removesuffix("Schema") for cls in _subclasses(ResponseSchema)}
    assert {"User", "StaffUser", "Product", "Category", "Order", "OrderItem", "EmailOutbox", "TokenPair"} <= answers
    for name in answers:
        schema = schemas[name]
        assert sorted(schema["required"]) == sorted(schema["properties"]), name
        assert all(prop.get("readOnly") for prop in schema["properties"].values()), name
    nullable = {
        (name, field) for name in answers for field, prop in schemas[name]["properties"].items() if prop.get("nullable")
    }
    assert nullable == {
        ("User", "phone_number"),
        ("AdminUser", "phone_number"),
        ("Product", "image"),
        ("EmailOutbox", "last_error"),
        ("EmailOutbox", "sent_at"),
    }
    assert schemas["Order"]["properties"]["user"]["type"] == "string"


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


def test_every_error_response_is_the_one_error_component(document):
    responses = document["components"]["responses"]
    for method, path, operation in operations(document):
        for code, response in operation["responses"].items():
            if code != "default" and int(code) < 400:
                continue
            response = responses[response["$ref"].rsplit("/", 1)[1]] if "$ref" in response else response
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, code)
    error = _schemas(document)["Error"]
    assert sorted(error["required"]) == ["code", "message", "status"]


def test_every_header_the_server_sends_is_documented_where_it_is_sent(document):
    headers = document["components"]["headers"]
    responses = document["components"]["responses"]
    assert responses["TOO_MANY_REQUESTS"]["headers"]["Retry-After"] == {"$ref": "#/components/headers/RETRY_AFTER"}
    assert responses["SERVICE_UNAVAILABLE"]["headers"]["Retry-After"]
    assert responses["UNAUTHORIZED"]["headers"]["WWW-Authenticate"]
    assert headers["RETRY_AFTER"]["required"] is True
    for method, path, operation in operations(document):
        for code, response in operation["responses"].items():
            if "$ref" in response:
                continue
            sent = set(response.get("headers", {}))
            assert "Retry-After" not in sent, (method, path, code)  # only 429 and 503 say when to come back
            if path not in {"/healthz", "/readyz", "/metrics"}:
                assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= sent, (method, path)
            if "X-Pagination" in sent:
                assert "Link" in sent, (method, path)
    placed = document["paths"]["/api/orders/"]["post"]["responses"]["201"]["headers"]
    assert placed["Idempotent-Replayed"] == {"$ref": "#/components/headers/IDEMPOTENT_REPLAYED"}
    paginated = [
        path
        for method, path, op in operations(document)
        if "X-Pagination" in op["responses"].get("200", {}).get("headers", {})
    ]
    assert sorted(paginated) == [
        "/api/categories/",
        "/api/orders/",
        "/api/orders/emails/",
        "/api/products/",
        "/api/users/",
    ]


def test_every_request_body_has_an_example_the_schema_accepts(document):
    from openapi_schema_validator import OAS30Validator

    bodies = 0
    for _, _, operation in operations(document):
        if "requestBody" not in operation:
            continue
        content = operation["requestBody"]["content"]["application/json"]
        example = content["example"]
        schema = {**_resolve(document, content["schema"]), "components": document["components"]}
        OAS30Validator(schema).validate(example)
        bodies += 1
    assert bodies == 15


def test_every_operation_has_a_summary_and_a_described_tag(document):
    tags = {tag["name"]: tag.get("description") for tag in document["tags"]}
    assert all(tags.values()), tags
    for method, path, operation in operations(document):
        assert operation.get("summary"), (method, path)
        assert operation["tags"] and set(operation["tags"]) <= set(tags), (method, path)


def test_creations_link_to_the_operations_on_what_they_created(document):
    by_id = {operation["operationId"]: (path, operation) for _, path, operation in operations(document)}
    linked = {}
    for _, _, operation in operations(document):
        for link in operation["responses"].get("201", {}).get("links", {}).values():
            path, _ = by_id[link["operationId"]]
            assert {"{" + name + "}" for name in link["parameters"]} <= set(re.findall(r"\{[^}]+\}", path))
            linked.setdefault(operation["operationId"], set()).add(link["operationId"])

    assert linked["placeOrder"] == {"readOrder", "cancelOrder", "changeOrderStatus"}
    assert {"readProduct", "hideProduct", "adjustProductStock"} <= linked["createProduct"]
    assert {"readCategory", "deleteCategory"} <= linked["createCategory"]
