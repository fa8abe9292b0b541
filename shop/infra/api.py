"""The flask-smorest Api with the shop's one error body and OpenAPI document, and the shop's Blueprint.

The document states what the server enforces and sends (tests/test_openapi.py holds it to that):
every enum is one named component (`x-enum-varnames` gives generated clients its member names);
a `ResponseSchema`'s fields are all `required` and `readOnly`; every error response is the one
`Error` component; the headers (pagination, `Link`, rate limits, `Retry-After`, `WWW-Authenticate`)
are documented where they are sent.

Overrides of the libraries' private names, each for a reason that has no public hook:
- `ShopApi._register_pagination_header` (flask-smorest): X-Pagination carries JSON, documented as
  `content`; flask-smorest documents it as an object `schema`, which in a header means `k,v,k,v`
  (a correctness fix of the OpenAPI document, tested by tests/test_errors_and_docs.py).
- `ShopApi._register_responses` (flask-smorest): its error responses, with the headers each one
  carries (flask-smorest registers them without any).
- `Blueprint._set_pagination_metadata`, `Blueprint._document_pagination_metadata` (flask-smorest):
  a paginated list also answers an RFC 8288 `Link` header (first, prev, next, last), built from
  the page figures X-Pagination already holds, and documents it.
- `OneSchemaParser._get_schema` (webargs): one instance per argument schema class instead of one
  per request (webargs deep-copies every field of a class it is given): a tenth of a cold catalog
  page's worker CPU (`make profile`, docs/performance.md).
- `Blueprint._make_pagination_metadata` (flask-smorest): X-Pagination dumped by one schema
  instance instead of one per request (part of the same tenth).
Upgrade risk: a renamed private method makes the documentation or pagination tests fail; the
speed ones only slow down (measured by `make bench`).
"""

from __future__ import annotations

import http
import json
from typing import Any
from urllib.parse import urlencode

import flask_smorest
import marshmallow as ma
from apispec import APISpec, BasePlugin
from flask import Flask, Request, current_app, request
from flask_smorest import Api
from flask_smorest.pagination import PaginationMetadataSchema
from flask_smorest.utils import prepare_response
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

SCHEMAS = "#/components/schemas/"
HEADERS = "#/components/headers/"
# The rate limit's headers, on every answer the limit counted (none while RATELIMIT_ENABLED is off).
RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": "RATE_LIMIT_LIMIT",
    "X-RateLimit-Remaining": "RATE_LIMIT_REMAINING",
    "X-RateLimit-Reset": "RATE_LIMIT_RESET",
}
HEADER_COMPONENTS: dict[str, dict[str, Any]] = {
    "RATE_LIMIT_LIMIT": {
        "description": "Requests allowed in the current window (sent while rate limiting is on).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "RATE_LIMIT_REMAINING": {
        "description": "Requests left in the current window (sent while rate limiting is on).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RATE_LIMIT_RESET": {
        "description": "When the current window ends, in seconds since the Unix epoch (while rate limiting is on).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RETRY_AFTER": {
        "description": "Seconds to wait before trying again; sent on 429 and 503 only.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW_AUTHENTICATE": {
        "description": "The authentication scheme to use: `Bearer`.",
        "required": True,
        "schema": {"type": "string", "pattern": "^Bearer"},
    },
    "LINK": {
        "description": "RFC 8288 links to the first, previous, next and last pages (those that exist), "
        "with the request's page size and filters.",
        "schema": {"type": "string"},
        "example": '</api/products/?page_size=20&page=2>; rel="next", </api/products/?page_size=20&page=9>; rel="last"',
    },
    "IDEMPOTENT_REPLAYED": {
        "description": "`true` when this is the stored answer to an earlier request with the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
# Extra headers of the error responses, by status (besides the rate limit's, on every one).
ERROR_HEADERS = {401: {"WWW-Authenticate": "WWW_AUTHENTICATE"}, 429: {"Retry-After": "RETRY_AFTER"}}
ERROR_HEADERS[503] = ERROR_HEADERS[429]

# Field errors: by location (json, query, headers, path), then by field; a nested object or a list's
# item (keyed by its index) nests the same way; a list of messages at the end.
FIELD_ERRORS = {
    "type": "object",
    "description": "Messages by field name; a nested object or a list item (keyed by its index) nests the same way.",
    "additionalProperties": {
        "anyOf": [{"type": "array", "items": {"type": "string"}}, {"$ref": SCHEMAS + "FieldErrors"}],
    },
}
STOCK_SHORTAGE = {
    "type": "object",
    "description": "An order line the stock cannot cover.",
    "properties": {
        "product_id": {"type": "integer"},
        "requested": {"type": "integer"},
        "available": {"type": "integer"},
    },
    "required": ["product_id", "requested", "available"],
}
ERROR_DETAILS = {
    "type": "object",
    "description": "422: the field errors under the location of the request they were found in "
    "(`json`, `query`, `headers`, `path`). 409 for stock: `items`, each short line. 409 for the "
    "per-customer caps: `pending_orders` and `pending_units`, what the customer holds unpaid. Other "
    "answers name what failed (a conflict's subject, a dependency that is down) with its messages.",
    "properties": {
        **{location: {"$ref": SCHEMAS + "FieldErrors"} for location in ("json", "query", "headers", "path")},
        "items": {
            "anyOf": [
                {"type": "array", "items": {"$ref": SCHEMAS + "StockShortage"}},
                {"$ref": SCHEMAS + "FieldErrors"},
            ]
        },
        "pending_orders": {"type": "integer", "minimum": 0, "description": "Unpaid orders the customer holds."},
        "pending_units": {"type": "integer", "minimum": 0, "description": "Units those unpaid orders hold."},
    },
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}


class ErrorSchema(ma.Schema):
    """The one body of every error the shop (and Nginx in front of it) answers."""

    code = ma.fields.Integer(required=True, metadata={"description": "The HTTP status code.", "example": 404})
    status = ma.fields.String(required=True, metadata={"description": "The status' name.", "example": "Not Found"})
    message = ma.fields.String(required=True, metadata={"description": "What went wrong, for a person."})
    errors = ma.fields.Raw(metadata={"allOf": [{"$ref": SCHEMAS + "ErrorDetails"}]})


class ShopApi(Api):
    """Every error answers `{code, status, message, errors?}`, with a message always set."""

    ERROR_SCHEMA = ErrorSchema

    def init_app(self, app: Flask, *args: Any, **kwargs: Any) -> None:
        super().init_app(app, *args, **kwargs)
        self.ma_plugin.converter.add_attribute_function(enum_as_component)
        for name, component in {"FieldErrors": FIELD_ERRORS, "StockShortage": STOCK_SHORTAGE}.items():
            self.spec.components.schema(name, component)
        self.spec.components.schema("ErrorDetails", ERROR_DETAILS)
        for name, header in HEADER_COMPONENTS.items():
            self.spec.components.header(name, header)

    def _register_responses(self) -> None:
        """flask-smorest's error responses (the Error body), each with the headers it is sent with."""
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
                headers = {**RATE_LIMIT_HEADERS, **ERROR_HEADERS.get(status, {})}
                response["headers"] = {name: {"$ref": HEADERS + component} for name, component in headers.items()}
            prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Any other error, in the one error body", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, self.DEFAULT_RESPONSE_CONTENT_TYPE)
        self.spec.components.response(self.DEFAULT_ERROR_RESPONSE_NAME, response, lazy=True)

    def handle_http_exception(self, error: HTTPException) -> tuple[dict[str, Any], int, dict[str, str]]:
        payload, code, headers = super().handle_http_exception(error)
        payload.setdefault("message", error.description or error.name)
        if code == 405 and not headers:
            headers = dict(error.get_response().headers.items())
            headers.pop("Content-Type", None)
            headers.pop("Content-Length", None)
        return payload, code, headers

    def _register_pagination_header(self) -> None:
        """X-Pagination carries JSON: documented as `content`, since an object `schema` means `k,v,k,v` in a header."""
        self.spec.components.header(
            "PAGINATION",
            {
                "description": "Pagination metadata, as JSON",
                "content": {"application/json": {"schema": PaginationMetadataSchema}},
            },
            lazy=True,
        )


class OneSchemaParser(FlaskParser):
    """webargs' Flask parser, keeping one instance of each schema class instead of making one per request.

    Given a schema class (as `paginate` always gives it), webargs instantiates it on every request,
    deep-copying each of its fields: a tenth of a cold catalog page's CPU (`make profile`). A
    schema keeps nothing between loads, so one instance serves every request.
    """

    def __init__(self) -> None:
        super().__init__()
        self._schemas: dict[type[ma.Schema], ma.Schema] = {}

    def _get_schema(self, argmap: Any, req: Request) -> ma.Schema:
        if isinstance(argmap, type) and issubclass(argmap, ma.Schema):
            schema = self._schemas.get(argmap)
            if schema is None:
                schema = self._schemas.setdefault(argmap, argmap())
            return schema
        return super()._get_schema(argmap, req)


def enum_as_component(converter: Any, field: ma.fields.Field, ret: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A marshmallow Enum field as a reference to one component named after its enum class.

    An apispec attribute function (public: `add_attribute_function`), run after the built-in ones:
    the enum's values and member names (`x-enum-varnames`) live in the component, and whatever else
    the field says (a default, a description, readOnly) stays beside the reference, in an `allOf`.
    """
    if not isinstance(field, ma.fields.Enum):
        return {}
    enum = field.enum
    spec: APISpec = converter.spec
    known = spec.components.schemas.get(enum.__name__)
    component = {
        "type": "string",
        "enum": [member.value if field.by_value else member.name for member in enum],
        "x-enum-varnames": [member.name for member in enum],
    }
    if enum.__doc__:
        component["description"] = enum.__doc__
    if known is None:
        spec.components.schema(enum.__name__, component)
    elif known != component:
        raise ValueError(f"two different enums are both named {enum.__name__} in the OpenAPI document")
    besides = {key: value for key, value in ret.items() if key not in ("type", "enum", "format")}
    ret.clear()
    reference = {"$ref": SCHEMAS + enum.__name__}
    return {"allOf": [reference], **besides} if besides else reference


def links_from_created(parameter: str, *operation_ids: str) -> dict[str, Any]:
    """OpenAPI links from a 201 to the operations on what it created, by its `id` (for `blp.doc`).

    A client (and the fuzz's stateful phase) learns from them which calls follow a creation.
    """
    links = {
        operation_id: {"operationId": operation_id, "parameters": {parameter: "$response.body#/id"}}
        for operation_id in operation_ids
    }
    return {"responses": {201: {"links": links}}}  # the status as flask-smorest keys it, to merge


class DocumentedResponses(BasePlugin):
    """A `ResponseSchema`'s fields all `required` and `readOnly`: the server always sends them."""

    def schema_helper(self, name: str, definition: dict[str, Any], **kwargs: Any) -> None:
        schema = kwargs.get("schema")
        schema_class = schema if isinstance(schema, type) else type(schema)
        if not getattr(getattr(schema_class, "Meta", None), "always_present", False):
            return
        properties: dict[str, dict[str, Any]] = definition.get("properties", {})
        definition["required"] = list(properties)
        for key, prop in properties.items():
            if "$ref" in prop:  # a reference ignores its siblings (OpenAPI 3.0): the flag goes beside it
                properties[key] = {"allOf": [prop], "readOnly": True}
            else:
                prop["readOnly"] = True


_PAGINATION_METADATA = PaginationMetadataSchema()
# Relations of the Link header, and the X-Pagination figure each one points to.
LINK_RELATIONS = (("first", "first_page"), ("prev", "previous_page"), ("next", "next_page"), ("last", "last_page"))


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint with schema instances made once (arguments, pagination, X-Pagination), and Link."""

    ARGUMENTS_PARSER = OneSchemaParser()
    PAGINATION_ARGUMENTS_PARSER = OneSchemaParser()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._query_names: dict[tuple[str, str], tuple[str, ...]] = {}

    def _set_pagination_metadata(self, page_params: Any, result: Any, headers: Any) -> tuple[Any, Any]:
        """X-Pagination, and Link built from the same figures (no other work, no round trip)."""
        metadata = self._make_pagination_metadata(page_params.page, page_params.page_size, page_params.item_count)
        headers = {} if headers is None else headers
        headers[self.PAGINATION_HEADER_NAME] = json.dumps(metadata)
        link = self._link(metadata, page_params.page_size)
        if link:
            headers["Link"] = link
        return result, headers

    def _link(self, metadata: dict[str, int], page_size: int) -> str:
        """RFC 8288 links to the pages X-Pagination names, keeping the query parameters the operation knows."""
        names = self._link_parameters()
        args = request.args
        query = urlencode(
            [("page_size", page_size), *((name, value) for name in names for value in args.getlist(name))]
        )
        return ", ".join(
            f'<{request.path}?{query}&page={metadata[figure]}>; rel="{relation}"'
            for relation, figure in LINK_RELATIONS
            if figure in metadata
        )

    def _link_parameters(self) -> tuple[str, ...]:
        """The query parameters this operation declares (its filters, in their order), page and page_size aside.

        Parameters it does not know are left out, so the links of one page are the same whoever asks
        (the catalog cache keys on the declared parameters alone, and stores the Link it was built with).
        """
        key = (request.endpoint or "", request.method)
        names = self._query_names.get(key)
        if names is None:
            view: Any = current_app.view_functions.get(key[0])
            handler = getattr(getattr(view, "view_class", None), request.method.lower(), view)
            found: list[str] = []
            for argument in getattr(handler, "_apidoc", {}).get("arguments", {}).get("parameters", []):
                if argument.get("in") == "query":
                    schema = argument["schema"]
                    schema = schema() if isinstance(schema, type) else schema
                    found += [field.data_key or name for name, field in schema.fields.items() if not field.dump_only]
            names = self._query_names[key] = tuple(name for name in found if name not in ("page", "page_size"))
        return names

    def _document_pagination_metadata(self, spec: APISpec, resp_doc: dict[str, Any]) -> None:
        super()._document_pagination_metadata(spec, resp_doc)
        resp_doc["headers"]["Link"] = "LINK"

    @staticmethod
    def _make_pagination_metadata(page: int, page_size: int, item_count: int) -> dict[str, int]:
        """flask-smorest's X-Pagination content, dumped by one schema instance."""
        metadata = {"total": item_count, "total_pages": 0}
        if item_count:
            last_page = (item_count - 1) // page_size + 1
            metadata.update(total_pages=last_page, first_page=1, last_page=last_page)
            if page <= last_page:
                metadata["page"] = page
                if page > 1:
                    metadata["previous_page"] = page - 1
                if page < last_page:
                    metadata["next_page"] = page + 1
        return _PAGINATION_METADATA.dump(metadata)
