"""The rules of orders: placing one atomically, reading them, and moving them along their lifecycle."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import orjson
from flask import current_app
from sqlalchemy import Connection, Row, Select, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import selectinload

from shop.core.errors import Conflict, NotFound, ShopError, ValidationFailed
from shop.core.metrics import ORDERS_PLACED, STOCK_CONFLICTS
from shop.core.schemas import MAX_ID
from shop.core.time import utcnow
from shop.extensions import db
from shop.orders import catalog, emails, idempotency, statements
from shop.orders.idempotency import Answer
from shop.orders.models import Order, OrderStatus
from shop.products.models import Product
from shop.users.models import Account, User

logger = logging.getLogger(__name__)
T = TypeVar("T")

# PostgreSQL's deadlock_detected and serialization_failure: safe to run the transaction again.
RETRYABLE_SQLSTATES = {"40P01", "40001"}
ATTEMPTS = 5
# The largest total the orders.total column (Numeric(12, 2)) holds; a larger order is a 422, not a 500.
MAX_ORDER_TOTAL = Decimal("9999999999.99")
CENT = Decimal("0.01")
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # as shop.core.schemas.UTCDateTimeField writes a timestamp

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


def place_order(user: Account, lines: list[dict[str, int]], *, idempotency_key: str | None = None) -> Answer:
    """Take stock for every line and write the order, all or nothing; replay a repeated Idempotency-Key.

    One short transaction on the session's connection, in SQLAlchemy Core: claim the key, take
    every line's stock in one UPDATE … RETURNING, INSERT the order, its items and its email's
    outbox row, store the answer on the key, commit. The answer (the 201 body) is rendered from
    what those statements returned. The buyer is the user the token check loaded: its id and
    username are read once here, and nothing in this transaction makes the session reload it.
    """
    buyer = (user.id, user.username)
    request_hash = None if idempotency_key is None else idempotency.fingerprint(lines)
    outcome = _with_retries(lambda: _write_order(buyer, lines, idempotency_key, request_hash))
    if isinstance(outcome, Answer):
        return outcome
    ORDERS_PLACED.inc()
    catalog.stock_changed(outcome.stock_changes)
    emails.order_committed(outcome.order_id)
    return outcome.answer


@dataclass(frozen=True)
class Placed:
    order_id: int
    answer: Answer
    stock_changes: list[tuple[int, int, int, bool]]  # (product id, stock, stock_version, crossed zero)


def _write_order(
    buyer: tuple[int, str], lines: list[dict[str, int]], key: str | None, request_hash: str | None
) -> Placed | Answer:
    user_id, username = buyer
    connection = db.session.connection()
    now = utcnow()
    key_id = None
    if key is not None and request_hash is not None:
        claimed = idempotency.claim(connection, user_id, key, request_hash, now)
        if isinstance(claimed, Answer):
            db.session.rollback()
            return claimed
        key_id = claimed
    params: dict[str, Any] = {"now": now, "buyer": user_id}
    for n, line in enumerate(lines):
        params[f"p{n}"] = line["product_id"]
        params[f"q{n}"] = line["quantity"]
    taken = {
        row.id: row for row in connection.execute(statements.take_stock(connection.dialect.name, len(lines)), params)
    }
    if len(taken) < len(lines):
        _refuse(connection, lines, taken)
    total = sum((taken[line["product_id"]].price * line["quantity"] for line in lines), Decimal("0.00"))
    if total > MAX_ORDER_TOTAL:
        message = f"The order's total would be {total:.2f}; one order holds at most {MAX_ORDER_TOTAL}."
        raise ValidationFailed("The order is too large.", {"items": [message]})
    params["amount"] = total = total.quantize(CENT)
    order_id, item_ids = _insert_order(connection, lines, taken, params)
    body = render_placed(order_id, username, now, total, lines, taken, item_ids)
    if key_id is not None:
        idempotency.record(connection, key_id, 201, body)
    db.session.commit()
    changes = [
        (row.id, row.stock, row.stock_version, row.stock == 0)  # taking q >= 1 crosses zero only by reaching it
        for row in (taken[line["product_id"]] for line in lines)
    ]
    return Placed(order_id, Answer(201, body, replayed=False), changes)


def _insert_order(
    connection: Connection, lines: list[dict[str, int]], taken: dict[int, Row[Any]], params: dict[str, Any]
) -> tuple[int, dict[int, int]]:
    """Write the order, its items and its outbox row; answer the order's id and each product's item id.

    With caps configured the order is written only while the buyer stays within them (conditions of
    the order's INSERT itself); refused, nothing is written and the answer is a 409 or 429."""
    capped = _set_caps(params, lines)
    if connection.dialect.name == "postgresql":
        for n, line in enumerate(lines):
            params[f"u{n}"] = taken[line["product_id"]].price
        rows = connection.execute(statements.write_order(len(lines), capped), params).all()
        if not rows:
            _refuse_over_caps(connection, params)
        return rows[0].order_id, {row.product_id: row.item_id for row in rows}
    insert_order = statements.INSERT_ORDER_WITHIN_CAPS if capped else statements.INSERT_ORDER
    order_id = connection.execute(insert_order, params).scalar_one_or_none()
    if order_id is None:
        _refuse_over_caps(connection, params)
    params["order"] = order_id
    items = [
        {
            "order_id": order_id,
            "product_id": line["product_id"],
            "quantity": line["quantity"],
            "unit_price": taken[line["product_id"]].price,
        }
        for line in lines
    ]
    item_ids = {product_id: item_id for item_id, product_id in connection.execute(statements.INSERT_ITEMS, items)}
    connection.execute(statements.INSERT_OUTBOX, params)
    return order_id, item_ids


def _set_caps(params: dict[str, Any], lines: list[dict[str, int]]) -> bool:
    """Bind the buyer's caps (MAX_PENDING_ORDERS, MAX_PENDING_UNITS, MAX_ORDERS_PER_HOUR); False when none is set."""
    config = current_app.config
    max_pending, max_units = config["MAX_PENDING_ORDERS"], config["MAX_PENDING_UNITS"]
    max_recent = config["MAX_ORDERS_PER_HOUR"]
    if not (max_pending or max_units or max_recent):
        return False
    params["max_pending"] = max_pending or MAX_ID
    params["max_units"] = max_units or MAX_ID
    params["max_recent"] = max_recent or MAX_ID
    params["since"] = params["now"] - timedelta(hours=1)
    params["units"] = sum(line["quantity"] for line in lines)
    return True


class TooManyPending(Conflict):
    """The buyer's unpaid orders already hold as much as one customer may (MAX_PENDING_ORDERS/UNITS)."""


class TooManyOrders(ShopError):
    """The buyer placed MAX_ORDERS_PER_HOUR orders in the last hour."""

    status = 429
    headers = {"Retry-After": "600"}


def _refuse_over_caps(connection: Connection, params: dict[str, Any]) -> NoReturn:
    held = connection.execute(statements.PENDING_OF_BUYER, params).one()
    db.session.rollback()
    if held.recent >= params["max_recent"]:
        # Each order sends an email: placing and cancelling in a loop must not make the shop a mailer.
        raise TooManyOrders(f"You placed {held.recent} orders in the last hour, the most one customer may; try later.")
    if held.orders >= params["max_pending"]:
        message = f"You have {held.orders} unpaid orders, the most one customer may hold; pay or cancel one first."
    else:
        message = (
            f"Your unpaid orders hold {held.units} units; with these {params['units']} that is more than "
            f"the {params['max_units']} one customer may hold. Pay or cancel an order first."
        )
    raise TooManyPending(message, {"pending_orders": held.orders, "pending_units": held.units})


def _refuse(connection: Connection, lines: list[dict[str, int]], taken: dict[int, Row[Any]]) -> NoReturn:
    """Some line was not taken: 422 naming unknown or hidden products, else 409 with each short line's figures."""
    ids = [line["product_id"] for line in lines]
    found = {row.id: row for row in connection.execute(statements.STOCK_OF, {"ids": ids})}
    unknown = {
        index: {"product_id": ["No such product."]}
        for index, product_id in enumerate(ids)
        if product_id not in found or found[product_id].hidden
    }
    if unknown:
        raise ValidationFailed("Some items name products that cannot be ordered.", {"items": unknown})
    STOCK_CONFLICTS.inc()
    short = [
        {"product_id": line["product_id"], "requested": line["quantity"], "available": found[line["product_id"]].stock}
        for line in lines
        if line["product_id"] not in taken
    ]
    raise InsufficientStock("Not enough stock for some items.", {"items": short})


def render_placed(
    order_id: int,
    username: str,
    now: datetime,
    total: Decimal,
    lines: list[dict[str, int]],
    taken: dict[int, Row[Any]],
    item_ids: dict[int, int],
) -> bytes:
    """The 201 body: OrderSchema's shape and field order (a later GET of the order answers the same)."""
    stamp = _stamp(now)
    items = []
    for line in lines:
        row = taken[line["product_id"]]
        price = format(row.price, ".2f")
        product = {
            "id": row.id,
            "name": row.name,
            "description": row.description,
            "price": price,
            "stock": row.stock,
            "image": row.image,
            "category": {"id": row.category_id, "name": row.category_name, "description": row.category_description},
            "created_at": _stamp(row.created_at),
            "updated_at": _stamp(row.updated_at),
        }
        items.append({"id": item_ids[row.id], "product": product, "quantity": line["quantity"], "unit_price": price})
    order = {
        "id": order_id,
        "user": username,
        "items": items,
        "total": format(total, ".2f"),
        "status": OrderStatus.PENDING.value,
        "created_at": stamp,
        "updated_at": stamp,
        "is_completed": False,
    }
    return orjson.dumps(order)


def _stamp(value: datetime) -> str:
    return value.strftime(UTC_FORMAT)


def _lock_products(ids: list[int]) -> None:
    """Lock the rows in ascending id order, so concurrent writes of the same products cannot deadlock."""
    db.session.connection().execute(
        select(Product.id).where(Product.id.in_(ids)).order_by(Product.id).with_for_update(of=Product)
    )


def _lines(quantities: dict[int, int]) -> dict[str, int]:
    """The parameters `p0…`, `q0…` of statements built per number of lines."""
    params: dict[str, int] = {}
    for n, (product_id, quantity) in enumerate(sorted(quantities.items())):
        params[f"p{n}"] = product_id
        params[f"q{n}"] = quantity
    return params


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


def orders_query(viewer: Account, *, username: str | None = None, status: OrderStatus | None = None) -> Select[Any]:
    """Newest first: a customer's own orders; staff see all and may filter by username."""
    query = select(Order).options(selectinload(Order.items)).order_by(Order.created_at.desc(), Order.id.desc())
    if not viewer.is_staff:
        query = query.where(Order.user_id == viewer.id)
    elif username is not None:
        query = query.join(Order.user).where(User.username == username)
    if status is not None:
        query = query.where(Order.status == status)
    return query


def get_order(viewer: Account, order_id: int, *, for_update: bool = False) -> Order:
    """The order if the viewer may see it; another customer's order is not found, not forbidden."""
    query = select(Order).where(Order.id == order_id)
    if for_update:
        # The row as the lock found it, even when this session read the order before (the status
        # change's route does): a stale status would let a cancelled order be paid.
        query = query.with_for_update(of=Order).execution_options(populate_existing=True)
    order = db.session.scalar(query)
    if order is None or (not viewer.is_staff and order.user_id != viewer.id):
        raise NotFound("No such order.")
    return order


def cancel_order(viewer: Account, order_id: int) -> Order:
    """Cancel and return every item's stock, in one transaction."""

    def write() -> Order:
        order = get_order(viewer, order_id, for_update=True)
        allowed = CANCELLABLE_BY_STAFF if viewer.is_staff else CANCELLABLE_BY_OWNER
        if order.status not in allowed:
            raise Conflict(f"An order that is {order.status.value} cannot be cancelled.")
        changes[:] = _cancel_locked(order)
        return order

    changes: list[tuple[int, int, int, bool]] = []
    order = _with_retries(write)
    catalog.stock_changed(changes)
    return order


def _cancel_locked(order: Order) -> list[tuple[int, int, int, bool]]:
    """Cancel an order whose row this transaction locked: every item's stock returns, then commit."""
    quantities = {item.product_id: item.quantity for item in order.items}
    _lock_products(sorted(quantities))
    returned = db.session.connection().execute(statements.return_stock(len(quantities)), _lines(quantities))
    changes = [(row.id, row.stock, row.stock_version, row.stock == quantities[row.id]) for row in returned]
    order.status = OrderStatus.CANCELLED
    db.session.commit()
    return changes


def expire_pending_orders(batch: int = 500) -> int:
    """Cancel unpaid orders older than PENDING_ORDER_MINUTES, returning their stock; how many were cancelled.

    Each order is locked and checked again before it is cancelled, so an order paid or cancelled
    meanwhile (by staff, its owner, or another run of this task) is left as it is: stock returns once.
    """
    cutoff = utcnow() - timedelta(minutes=current_app.config["PENDING_ORDER_MINUTES"])
    due = db.session.scalars(
        select(Order.id)
        .where(Order.status == OrderStatus.PENDING, Order.created_at < cutoff)
        .order_by(Order.id)
        .limit(batch)
    ).all()
    db.session.rollback()
    expired = 0
    for order_id in due:

        def write(order_id: int = order_id) -> list[tuple[int, int, int, bool]] | None:
            locked = select(Order).where(Order.id == order_id).with_for_update(of=Order)
            order = db.session.scalar(locked.execution_options(populate_existing=True))
            if order is None or order.status != OrderStatus.PENDING or order.created_at >= cutoff:
                db.session.rollback()
                return None
            return _cancel_locked(order)

        changes = _with_retries(write)
        if changes is not None:
            catalog.stock_changed(changes)
            expired += 1
    if expired:
        logger.info("cancelled %d unpaid orders past their reservation time", expired)
    return expired


def change_status(viewer: Account, order_id: int, status: OrderStatus) -> Order:
    """Staff move an order one step along pending → paid → shipped → completed."""

    def write() -> Order:
        order = get_order(viewer, order_id, for_update=True)
        if NEXT_STATUS.get(order.status) != status:
            raise Conflict(f"An order that is {order.status.value} cannot become {status.value}.")
        order.status = status
        db.session.commit()
        return order

    return _with_retries(write)
