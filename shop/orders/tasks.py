"""Background work of orders: the confirmation email, the outbox relay, and housekeeping."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from flask import current_app

from shop.orders import catalog, emails, idempotency, services
from shop.tasks import task
from shop.users import tokens

logger = logging.getLogger(__name__)


@shared_task(bind=True, name=emails.SEND_TASK, max_retries=None)
def send_order_confirmation(self: Task, order_id: int) -> str:
    """Send an order's confirmation email exactly once; SMTP faults retry with backoff, then fail."""
    max_retries = current_app.config["EMAIL_MAX_RETRIES"]
    final = self.request.retries >= max_retries or bool(self.request.is_eager)
    delivery = emails.deliver(order_id, final_attempt=final)
    if delivery.outcome == "retry":
        raise self.retry(countdown=emails.backoff_seconds(delivery.attempts), max_retries=max_retries)
    return delivery.outcome


@shared_task(name="shop.orders.tasks.relay_outbox")
def relay_outbox() -> int:
    """Publish the emails owed; returns how many were published (the rest stay owed for the next run).

    It also sets those orders' products' stocks in the catalog cache again, read from the database:
    a process that died between an order's commit and its cache update leaves a stale stock until then.
    """
    owed = emails.take_owed()
    send = task(emails.SEND_TASK)
    published = 0
    try:
        for order_id in owed.order_ids:
            send.delay(order_id)
            published += 1
    except Exception:  # noqa: BLE001 - the broker is down: these rows stay owed
        logger.warning(
            "could not publish %d owed confirmation emails; the relay will retry", len(owed.order_ids) - published
        )
    emails.after_relay(owed.order_ids[published:])
    if owed.product_ids:
        catalog.products_touched(owed.product_ids)
    if published:
        logger.info("relayed %d confirmation emails", published)
    return published


@shared_task(name="shop.orders.tasks.purge_expired")
def purge_expired() -> dict[str, int]:
    """Drop Idempotency-Keys older than 24 hours and revocations of tokens that have expired."""
    return {"idempotency_keys": idempotency.purge_expired(), "sessions": tokens.purge_expired()}


@shared_task(name="shop.orders.tasks.expire_pending_orders")
def expire_pending_orders() -> int:
    """Cancel the unpaid orders past their reservation time (PENDING_ORDER_MINUTES); their stock returns."""
    return services.expire_pending_orders()
