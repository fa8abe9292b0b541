"""The rules of orders: placing one atomically, reading them, and moving them along their lifecycle."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import selectinload

from shop.core import idempotency
from shop.core.cache import invalidate_catalog
from shop.core.errors import Conflict, NotFound, ValidationFailed
from shop.core.metrics import ORDERS_PLACED, STOCK_CONFLICTS
from shop.extensions import db
from shop.orders import emails
from shop.orders.models import EmailOutbox, Order, OrderItem, OrderStatus
from shop.products.models import Product
from shop.users.models import User

logger = logging.getLogger(__name__)
T = TypeVar("T")

# PostgreSQL's deadlock_detected and serialization_failure: safe to run the transaction again.
RETRYABLE_SQLSTATES = {"40P01", "40001"}
ATTEMPTS = 5
# The largest total the orders.total column (Numeric(12, 2)) holds; a larger order is a 422, not a 500.
MAX_ORDER_TOTAL = Decimal("9999999999.99")

# Where staff may move an order with PATCH; cancelling has its own rule and returns stock.
NEXT_STATUS = {
    OrderStatus.PENDING: OrderStatus.PAID,
    OrderStatus.PAID: OrderStatus.SHIPPED,
    OrderStatus.SHIPPED: OrderStatus.COMPLETED,
}
CANCELLABLE_BY_OWNER = {OrderStatus.PENDING}
CANCELLABLE_BY_STAFF = {OrderStatus.PENDING, OrderStatus.PAID}


class InsufficientStock(Conflict):
    pass


def place_order(
    user: User,
    lines: list[dict[str, int]],
    *,
    idempotency_key: str | None = None,
    render: Callable[[Order], bytes],
) -> idempotency.Answer:
    """Take stock for every line and write the order, all or nothing; replay a repeated Idempotency-Key.

    The answer is rendered inside the order's transaction, so a replay gets exactly the first answer.
    """
    claimed = None
    if idempotency_key is not None:
        outcome = idempotency.claim(user.id, idempotency_key, idempotency.fingerprint(lines))
        if isinstance(outcome, idempotency.Answer):
            return outcome
        claimed = outcome
    try:
        order_id, body = _with_retries(lambda: _write_order(user, lines, claimed, render))
    except BaseException:
        if claimed is not None:
            idempotency.release(claimed)
        raise
    ORDERS_PLACED.inc()
    invalidate_catalog()
    emails.order_committed(order_id)
    return idempotency.Answer(201, body, replayed=False)


def _write_order(
    user: User, lines: list[dict[str, int]], claimed: idempotency.Claim | None, render: Callable[[Order], bytes]
) -> tuple[int, bytes]:
    if claimed is not None:
        idempotency.hold(claimed)
    wanted = {line["product_id"]: line["quantity"] for line in lines}
    products = _lock_products(sorted(wanted))
    _check_lines(lines, products)
    short = [
        {"product_id": pid, "requested": qty, "available": products[pid].stock}
        for pid, qty in wanted.items()
        if products[pid].stock < qty
    ]
    if short:
        STOCK_CONFLICTS.inc()
        raise InsufficientStock("Not enough stock for some items.", {"items": short})
    total = sum((products[pid].price * qty for pid, qty in wanted.items()), Decimal("0.00"))
    if total > MAX_ORDER_TOTAL:
        message = f"The order's total would be {total:.2f}; one order holds at most {MAX_ORDER_TOTAL}."
        raise ValidationFailed("The order is too large.", {"json": {"items": [message]}})

    order = Order(user=user, status=OrderStatus.PENDING, total=Decimal("0.00"))
    for line in lines:
        product = products[line["product_id"]]
        product.stock -= line["quantity"]
        order.items.append(OrderItem(product=product, quantity=line["quantity"], unit_price=product.price))
    order.total = sum((item.unit_price * item.quantity for item in order.items), Decimal("0.00")).quantize(
        Decimal("0.01")
    )
    db.session.add(order)
    db.session.flush()
    db.session.add(EmailOutbox(order_id=order.id))
    order_id, body = order.id, render(order)
    if claimed is not None:
        idempotency.record(claimed, 201, body)
    db.session.commit()
    return order_id, body


def _lock_products(ids: list[int]) -> dict[int, Product]:
    """Lock the rows in ascending id order, so concurrent orders of the same products cannot deadlock."""
    query = select(Product).where(Product.id.in_(ids)).order_by(Product.id).with_for_update(of=Product)
    return {product.id: product for product in db.session.scalars(query)}


def _check_lines(lines: list[dict[str, int]], products: dict[int, Product]) -> None:
    errors = {
        index: {"product_id": ["No such product."]}
        for index, line in enumerate(lines)
        if line["product_id"] not in products or products[line["product_id"]].hidden
    }
    if errors:
        raise ValidationFailed("Some items name products that cannot be ordered.", {"json": {"items": errors}})


def _with_retries(write: Callable[[], T]) -> T:
    """Run a write transaction again after a deadlock or serialization failure, never surfacing it."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return write()
        except DBAPIError as exc:
            db.session.rollback()
            if getattr(exc.orig, "pgcode", None) not in RETRYABLE_SQLSTATES or attempt == ATTEMPTS:
                raise
            logger.info("retrying a write after %s (attempt %d)", exc.orig.pgcode, attempt)
        except BaseException:
            db.session.rollback()
            raise
    raise AssertionError("unreachable")


def orders_query(viewer: User, *, username: str | None = None, status: OrderStatus | None = None) -> Select[Any]:
    """Newest first: a customer's own orders; staff see all and may filter by username."""
    query = select(Order).options(selectinload(Order.items)).order_by(Order.created_at.desc(), Order.id.desc())
    if not viewer.is_staff:
        query = query.where(Order.user_id == viewer.id)
    elif username is not None:
        query = query.join(Order.user).where(User.username == username)
    if status is not None:
        query = query.where(Order.status == status)
    return query


def get_order(viewer: User, order_id: int, *, for_update: bool = False) -> Order:
    """The order if the viewer may see it; another customer's order is not found, not forbidden."""
    query = select(Order).where(Order.id == order_id)
    if for_update:
        query = query.with_for_update(of=Order)
    order = db.session.scalar(query)
    if order is None or (not viewer.is_staff and order.user_id != viewer.id):
        raise NotFound("No such order.")
    return order


def cancel_order(viewer: User, order_id: int) -> Order:
    """Cancel and return every item's stock, in one transaction."""

    def write() -> Order:
        order = get_order(viewer, order_id, for_update=True)
        allowed = CANCELLABLE_BY_STAFF if viewer.is_staff else CANCELLABLE_BY_OWNER
        if order.status not in allowed:
            raise Conflict(f"An order that is {order.status.value} cannot be cancelled.")
        quantities = {item.product_id: item.quantity for item in order.items}
        for product in _lock_products(sorted(quantities)).values():
            product.stock += quantities[product.id]
        order.status = OrderStatus.CANCELLED
        db.session.commit()
        return order

    order = _with_retries(write)
    invalidate_catalog()
    return order


def change_status(viewer: User, order_id: int, status: OrderStatus) -> Order:
    """Staff move an order one step along pending → paid → shipped → completed."""

    def write() -> Order:
        order = get_order(viewer, order_id, for_update=True)
        if NEXT_STATUS.get(order.status) != status:
            raise Conflict(f"An order that is {order.status.value} cannot become {status.value}.")
        order.status = status
        db.session.commit()
        return order

    return _with_retries(write)
