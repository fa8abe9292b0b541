"""What orders tell the catalog cache, after an order or a cancel commits and from the outbox relay.

The one place orders reach the catalog cache: `stock_changed({product_id: (before, after)})` after
a commit; `products_touched(ids)` from the relay, for a process that died between its commit and
its cache update.
"""

from __future__ import annotations

from shop.products.cache import products_touched, stock_changed

__all__ = ["products_touched", "stock_changed"]
