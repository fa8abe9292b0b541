"""The flask-smorest Api with the shop's one error body, and the Blueprint every part of the shop uses.

Overrides of the libraries' private names, each for a reason that has no public hook:
- `ShopApi._register_pagination_header` (flask-smorest): X-Pagination carries JSON, documented as
  `content`; flask-smorest documents it as an object `schema`, which in a header means `k,v,k,v`
  (a correctness fix of the OpenAPI document, tested by tests/test_errors_and_docs.py).
- `OneSchemaParser._get_schema` (webargs): one instance per argument schema class instead of one
  per request (webargs deep-copies every field of a class it is given): a tenth of a cold catalog
  page's worker CPU (`make profile`, docs/performance.md).
- `Blueprint._make_pagination_metadata` (flask-smorest): X-Pagination dumped by one schema
  instance instead of one per request (part of the same tenth).
Upgrade risk: a renamed private method makes the documentation or pagination tests fail; the
speed ones only slow down (measured by `make bench`).
"""

from __future__ import annotations

from typing import Any

import flask_smorest
import marshmallow as ma
from flask import Request
from flask_smorest import Api
from flask_smorest.pagination import PaginationMetadataSchema
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException


class ShopApi(Api):
    """Every error answers `{code, status, message, errors?}`, with a message always set."""

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


_PAGINATION_METADATA = PaginationMetadataSchema()


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint with schema instances made once (arguments, pagination, X-Pagination)."""

    ARGUMENTS_PARSER = OneSchemaParser()
    PAGINATION_ARGUMENTS_PARSER = OneSchemaParser()

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
