"""The shop's own Prometheus metrics, and the /metrics page across every gunicorn worker."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest, multiprocess

ORDERS_PLACED = Counter("shop_orders_placed_total", "Orders created")
STOCK_CONFLICTS = Counter("shop_stock_conflicts_total", "Orders refused for lack of stock")
IDEMPOTENT_REPLAYS = Counter("shop_idempotent_replays_total", "Requests answered from a stored Idempotency-Key")
CACHE_REQUESTS = Counter("shop_cache_requests_total", "Response cache lookups", ["result"])
CACHE_ERRORS = Counter("shop_cache_errors_total", "Response cache operations that failed (Redis unavailable)")
EMAILS = Counter("shop_emails_total", "Order confirmation emails", ["outcome"])
OUTBOX_BACKLOG = Gauge("shop_outbox_backlog", "Emails owed but not yet sent", multiprocess_mode="livemax")


def render_metrics() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
