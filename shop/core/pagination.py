"""One way to paginate: a count and a page of a SQLAlchemy 2.0 select, for `@blp.paginate`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask_smorest import Page
from sqlalchemy import Select, func, select

from shop.extensions import db

PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
PAGINATE = {"page_size": PAGE_SIZE, "max_page_size": MAX_PAGE_SIZE}


def page_of(query: Select[Any], pagination: Any) -> Sequence[Any]:
    """Set the total on `pagination` (for X-Pagination) and return the page's rows."""
    pagination.item_count = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    if pagination.first_item >= pagination.item_count:
        return []  # past the end: no page query, and no OFFSET larger than the database's integers
    return db.session.scalars(query.limit(pagination.page_size).offset(pagination.first_item)).all()


__all__ = ["PAGINATE", "Page", "page_of"]
