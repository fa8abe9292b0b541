"""Background work of orders: the confirmation email, the outbox relay, and housekeeping."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from flask import current_app

from shop.core import idempotency
from shop.orders import emails
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
    """Publish the emails still owed (broker was down, or a process died between commit and publish)."""
    order_ids = emails.owed_order_ids()
    send = task(emails.SEND_TASK)
    for order_id in order_ids:
        send.delay(order_id)
    if order_ids:
        logger.info("relayed %d owed confirmation emails", len(order_ids))
    return len(order_ids)


@shared_task(name="shop.orders.tasks.purge_expired")
def purge_expired() -> dict[str, int]:
    """Drop Idempotency-Keys older than 24 hours and revocations of tokens that have expired."""
    return {"idempotency_keys": idempotency.purge_expired(), "revoked_tokens": tokens.purge_expired()}
