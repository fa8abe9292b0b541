"""The confirmation email each order owes.

The order's transaction writes an outbox row, due at once; the request never talks to the
broker. The relay (`relay_outbox`, run by beat every OUTBOX_RELAY_SECONDS) takes the due rows
with `FOR UPDATE SKIP LOCKED`, marks them published (due again only after OUTBOX_GRACE_SECONDS,
in case the task is lost), commits, and publishes their tasks; a publish that fails (the broker
is down) makes its rows due again at once, so they are published when the broker returns.
The task sends while holding the row's lock and marks it sent in the same transaction, so a
redelivered or duplicated task finds it sent and sends nothing: one email per order.

Without a broker (the embedded default) there is no relay: the email is sent in-process right
after the order commits.
"""

from __future__ import annotations

import logging
import re
import smtplib
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from flask import current_app
from sqlalchemy import Select, func, select, update

from shop.core.metrics import EMAILS, OUTBOX_BACKLOG
from shop.core.time import utcnow
from shop.extensions import db
from shop.orders.models import EmailOutbox, EmailStatus, Order, OrderItem
from shop.tasks import task

logger = logging.getLogger(__name__)

PENDING, SENT, FAILED = EmailStatus.PENDING.value, EmailStatus.SENT.value, EmailStatus.FAILED.value
SEND_TASK = "shop.orders.tasks.send_order_confirmation"


@dataclass(frozen=True)
class Delivery:
    """What happened to one attempt at an order's email."""

    outcome: str  # "sent", "skipped" (sent already or in hand elsewhere), "retry", "failed"
    attempts: int = 0


@dataclass(frozen=True)
class Owed:
    """Outbox rows the relay has taken to publish: their orders, and the products of those orders."""

    order_ids: list[int]
    product_ids: list[int]


def order_committed(order_id: int) -> None:
    """After an order commits: without a broker, send its email now, in-process; else the relay publishes it."""
    if current_app.extensions["celery"].conf.task_always_eager:
        task(SEND_TASK).delay(order_id)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(value: str, limit: int = 200) -> str:
    """A value someone typed, as one line of a text email: every line break, tab or control character a
    space (however old the row that holds it), at most `limit` characters."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def build_message(order: Order) -> EmailMessage:
    """The seed's confirmation: subject with the order number, one line per product and quantity.

    Every value a person typed (the customer's name, a product's name) is kept to its line."""
    lines = [
        f"Dear {one_line(order.user.first_name or order.user.username)},",
        "",
        "Your order has been placed successfully.",
        "",
    ]
    lines.append("Order Details:")
    lines += [f"- {one_line(item.product.name)} (Quantity: {item.quantity})" for item in order.items]
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
            # The task retries itself after the backoff; the relay republishes only if that is lost.
            grace = current_app.config["OUTBOX_GRACE_SECONDS"]
            row.next_attempt_at = utcnow() + timedelta(seconds=backoff_seconds(row.attempts) + grace)
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


def take_owed(limit: int = 500) -> Owed:
    """Take the rows the relay should publish now and mark them published, in one short transaction.

    Due rows: never published (due from their commit), or published OUTBOX_GRACE_SECONDS ago and
    still pending (the task was lost). `SKIP LOCKED` lets several relays run side by side; each row
    is published by one of them. The mark commits before the publish, so a sending worker never
    finds the row locked by the relay.
    """
    now = utcnow()
    rows = db.session.execute(
        select(EmailOutbox.id, EmailOutbox.order_id)
        .where(EmailOutbox.status == PENDING, EmailOutbox.next_attempt_at <= now)
        .order_by(EmailOutbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    order_ids = [row.order_id for row in rows]
    product_ids: list[int] = []
    if rows:
        again = now + timedelta(seconds=current_app.config["OUTBOX_GRACE_SECONDS"])
        db.session.execute(
            update(EmailOutbox).where(EmailOutbox.id.in_([row.id for row in rows])).values(next_attempt_at=again)
        )
        product_ids = list(
            db.session.scalars(
                select(OrderItem.product_id)
                .where(OrderItem.order_id.in_(order_ids))
                .distinct()
                .order_by(OrderItem.product_id)
            )
        )
    db.session.commit()
    return Owed(order_ids, product_ids)


def after_relay(unpublished: list[int]) -> None:
    """End of a relay run: the orders whose task could not be published are due again at once."""
    if unpublished:
        db.session.execute(
            update(EmailOutbox)
            .where(EmailOutbox.order_id.in_(unpublished), EmailOutbox.status == PENDING)
            .values(next_attempt_at=utcnow())
        )
        db.session.commit()
    OUTBOX_BACKLOG.set(backlog())


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
