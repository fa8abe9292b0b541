"""What orders tell the catalog cache, after an order or a cancel commits and from the outbox relay.

The one place orders reach the catalog cache: `stock_changed([(product_id, stock, stock_version,
crossed_zero), ...])` after a commit, from what the stock UPDATE returned; `products_touched(ids)`
from the relay, which reads those products' stock and version again from the database, for a
process that died between its commit and its cache update.
"""

from __future__ import annotations

from shop.products.cache import products_touched, stock_changed

__all__ = ["products_touched", "stock_changed"]
