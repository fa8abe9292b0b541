"""Moved: the catalog's response cache is `shop.products.cache`. This name stays only until orders call it there."""

from __future__ import annotations

from shop.products.cache import catalog_changed as invalidate_catalog

__all__ = ["invalidate_catalog"]
