"""Catalog endpoints."""

from __future__ import annotations

from flask_smorest import Blueprint

categories_blp = Blueprint("categories", __name__, url_prefix="/api/categories", description="Product categories")
products_blp = Blueprint("products", __name__, url_prefix="/api/products", description="Products and stock")
