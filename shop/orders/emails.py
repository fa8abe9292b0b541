"""The confirmation email each order owes.

The order's transaction writes an outbox row. After commit the email task is published;
if the broker is down, or the process dies between commit and publish, the periodic relay
publishes it later. The task sends while holding the row's lock and marks it sent in the
same transaction, so a redelivered or duplicated task finds it sent and sends nothing.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from flask import current_app
from sqlalchemy import Select, func, select

from shop.core.metrics import EMAILS, OUTBOX_BACKLOG
from shop.core.time import utcnow
from shop.extensions import db
from shop.orders.models import EmailOutbox, Order
from shop.tasks import task

logger = logging.getLogger(__name__)

PENDING, SENT, FAILED = "pending", "sent", "failed"
SEND_TASK = "shop.orders.tasks.send_order_confirmation"


@dataclass(frozen=True)
class Delivery:
    """What happened to one attempt at an order's email."""

    outcome: str  # "sent", "skipped" (sent already or in hand elsewhere), "retry", "failed"
    attempts: int = 0


def order_committed(order_id: int) -> None:
    """Publish the email task for a committed order; a broker fault leaves the row to the relay."""
    try:
        task(SEND_TASK).delay(order_id)
    except Exception:  # noqa: BLE001 - the order is committed; the outbox relay retries the publish
        logger.warning("could not publish the confirmation email of order %s; the relay will", order_id)


def build_message(order: Order) -> EmailMessage:
    """The seed's confirmation: subject with the order number, one line per product and quantity."""
    lines = [
        f"Dear {order.user.first_name or order.user.username},",
        "",
        "Your order has been placed successfully.",
        "",
    ]
    lines.append("Order Details:")
    lines += [f"- {item.product.name} (Quantity: {item.quantity})" for item in order.items]
    lines += ["", f"Total: {order.total}", "", "Thank you for shopping with us!"]
    message = EmailMessage()
    message["Subject"] = f"Order Confirmation - Order #{order.id}"
    message["From"] = current_app.config["MAIL_DEFAULT_SENDER"]
    message["To"] = order.user.email
    # One Message-ID per order: a receiving server can tell a duplicate from a second email.
    message["Message-ID"] = make_msgid(idstring=f"order-{order.id}", domain="shop.local")
    message.set_content("\n".join(lines) + "\n")
    return message


def deliver(order_id: int, *, final_attempt: bool) -> Delivery:
    """Send the order's email once: lock its outbox row, send, mark it sent, commit."""
    row = db.session.scalar(
        select(EmailOutbox).where(EmailOutbox.order_id == order_id).with_for_update(skip_locked=True)
    )
    if row is None or row.status != PENDING:
        db.session.rollback()
        return Delivery("skipped")
    row.attempts += 1
    order = db.session.get(Order, order_id)
    try:
        _send(build_message(order))
    except (smtplib.SMTPException, OSError) as exc:
        row.last_error = f"{type(exc).__name__}: {exc}"[:1000]
        if final_attempt:
            row.status = FAILED
            EMAILS.labels(outcome="failed").inc()
            logger.error("confirmation email of order %s failed for good: %s", order_id, row.last_error)
        else:
            row.next_attempt_at = utcnow() + timedelta(seconds=backoff_seconds(row.attempts))
            EMAILS.labels(outcome="retry").inc()
        attempts = row.attempts
        db.session.commit()
        return Delivery(FAILED if final_attempt else "retry", attempts)
    row.status = SENT
    row.sent_at = utcnow()
    attempts = row.attempts
    db.session.commit()
    EMAILS.labels(outcome="sent").inc()
    return Delivery(SENT, attempts)


def backoff_seconds(attempts: int) -> int:
    """Exponential backoff: 2, 4, 8 … seconds, capped by EMAIL_RETRY_BACKOFF_MAX."""
    return min(2**attempts, current_app.config["EMAIL_RETRY_BACKOFF_MAX"])


def owed_order_ids(limit: int = 500) -> list[int]:
    """Claim the rows the relay should publish again: pending, due, and past the grace period.

    `SKIP LOCKED` lets several relays (or a relay and a sending worker) run side by side.
    Each row taken is pushed back by the grace period, so it is published once per period.
    """
    now = utcnow()
    grace = timedelta(seconds=current_app.config["OUTBOX_GRACE_SECONDS"])
    rows = db.session.scalars(
        select(EmailOutbox)
        .where(EmailOutbox.status == PENDING, EmailOutbox.next_attempt_at <= now - grace)
        .order_by(EmailOutbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        row.next_attempt_at = now
    order_ids = [row.order_id for row in rows]
    db.session.commit()
    OUTBOX_BACKLOG.set(backlog())
    return order_ids


def outbox_query(status: str | None = None) -> Select[Any]:
    query = select(EmailOutbox).order_by(EmailOutbox.id)
    return query if status is None else query.where(EmailOutbox.status == status)


def backlog() -> int:
    return db.session.scalar(select(func.count()).select_from(EmailOutbox).where(EmailOutbox.status == PENDING)) or 0


def _send(message: EmailMessage) -> None:
    config = current_app.config
    if not config["MAIL_SERVER"]:
        logger.info(
            "email (no MAIL_SERVER set) to %s: %s\n%s", message["To"], message["Subject"], message.get_content()
        )
        return
    with smtplib.SMTP(config["MAIL_SERVER"], config["MAIL_PORT"], timeout=10) as smtp:
        if config["MAIL_USE_TLS"]:
            smtp.starttls()
        if config["MAIL_USERNAME"]:
            smtp.login(config["MAIL_USERNAME"], config["MAIL_PASSWORD"] or "")
        smtp.send_message(message)
