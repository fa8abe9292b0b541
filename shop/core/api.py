"""The flask-smorest Api with the shop's one error body."""

from __future__ import annotations

from typing import Any

from flask_smorest import Api
from flask_smorest.pagination import PaginationMetadataSchema
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
