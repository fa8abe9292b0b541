"""The SQL of placing an order, in SQLAlchemy Core: built once per number of lines, run with parameters.

Each statement is a module-level object (or one cached per line count), so SQLAlchemy compiles
it once and every order only binds its values. Parameters of an order of n lines: `p0…p(n-1)`
the product ids, `q0…` their quantities, `now`, `buyer` (the user's id), `amount` (the total)
and `order` (the new order's id).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import (
    Insert,
    Integer,
    Numeric,
    Select,
    Update,
    bindparam,
    case,
    func,
    insert,
    literal,
    select,
    true,
    union_all,
    update,
)

from shop.orders.models import EmailOutbox, Order, OrderItem, OrderStatus
from shop.products.models import Category, Product

PRODUCTS = Product.__table__
CATEGORIES = Category.__table__
ORDERS = Order.__table__
ITEMS = OrderItem.__table__
OUTBOX = EmailOutbox.__table__


def _category(column: Any) -> Any:
    # A scalar subquery rather than a join: SQLite's RETURNING may name only the updated table.
    return select(column).where(CATEGORIES.c.id == PRODUCTS.c.category_id).scalar_subquery()


# What `take_stock` answers for each product it took from, in the order the answer shows them.
PRODUCT_VIEW = (
    PRODUCTS.c.id,
    PRODUCTS.c.name,
    PRODUCTS.c.description,
    PRODUCTS.c.price,
    PRODUCTS.c.stock,
    PRODUCTS.c.stock_version,
    PRODUCTS.c.image,
    PRODUCTS.c.category_id,
    _category(CATEGORIES.c.name).label("category_name"),
    _category(CATEGORIES.c.description).label("category_description"),
    PRODUCTS.c.created_at,
    PRODUCTS.c.updated_at,
)


@cache
def take_stock(dialect: str, lines: int) -> Update:
    """Take every line's quantity from its product, when visible and in stock, in one UPDATE … RETURNING.

    A product missing from the answer is unknown, hidden or short; the caller rolls back. On
    PostgreSQL the rows are first locked in ascending id order (a materialized locking CTE), so
    two orders of the same products queue up instead of deadlocking; SQLite has one writer at a
    time. The CTE locks only rows that can be taken: a sold-out product's row is never waited
    for, so the orders refused for it answer at once, side by side.
    """
    ids = [bindparam(f"p{n}") for n in range(lines)]
    quantity = case({ids[n]: bindparam(f"q{n}") for n in range(lines)}, value=PRODUCTS.c.id)
    can_take = (PRODUCTS.c.hidden.is_(False), PRODUCTS.c.stock >= quantity)
    wanted: Any = PRODUCTS.c.id.in_(ids)
    if dialect == "postgresql":
        locked = (
            select(PRODUCTS.c.id)
            .where(PRODUCTS.c.id.in_(ids), *can_take)
            .order_by(PRODUCTS.c.id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE: the lock the UPDATE itself takes
            .cte("locked")
            .prefix_with("MATERIALIZED")
        )
        wanted = PRODUCTS.c.id.in_(select(locked.c.id))
    return (
        update(PRODUCTS)
        .where(wanted, *can_take)
        .values(
            stock=PRODUCTS.c.stock - quantity,
            stock_version=PRODUCTS.c.stock_version + 1,
            updated_at=bindparam("now"),
        )
        .returning(*PRODUCT_VIEW)
    )


# Why products were missing from `take_stock`'s answer: the figures of the 409 (or the 422).
STOCK_OF: Select[Any] = select(PRODUCTS.c.id, PRODUCTS.c.stock, PRODUCTS.c.hidden).where(
    PRODUCTS.c.id.in_(bindparam("ids", expanding=True))
)

INSERT_ORDER: Insert = (
    insert(ORDERS)
    .values(
        user_id=bindparam("buyer"),
        status=literal(OrderStatus.PENDING.value),
        total=bindparam("amount"),
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .returning(ORDERS.c.id)
)


def _pending_of_buyer() -> tuple[Any, Any]:
    """The buyer's pending orders and the units they hold, as scalar subqueries."""
    pending = (ORDERS.c.user_id == bindparam("buyer"), ORDERS.c.status == literal(OrderStatus.PENDING.value))
    orders = select(func.count()).select_from(ORDERS).where(*pending).scalar_subquery()
    held = ITEMS.join(ORDERS, ORDERS.c.id == ITEMS.c.order_id)
    units = select(func.coalesce(func.sum(ITEMS.c.quantity), 0)).select_from(held).where(*pending).scalar_subquery()
    return orders, units


def _orders_of_buyer_since() -> Any:
    """How many orders the buyer placed since `since` (read on the index of a user's orders by time)."""
    recent = (ORDERS.c.user_id == bindparam("buyer"), ORDERS.c.created_at >= bindparam("since"))
    return select(func.count()).select_from(ORDERS).where(*recent).scalar_subquery()


# With caps (MAX_PENDING_ORDERS, MAX_PENDING_UNITS, MAX_ORDERS_PER_HOUR): the order, written only while
# the buyer placed fewer than `max_recent` orders since `since` and holds fewer than `max_pending`
# pending orders and at most `max_units` units with this one (`units`): the caps cost no statement of
# their own. Two orders of
# one buyer at the same instant may both pass (READ COMMITTED); the per-user rate limit bounds that.
_PENDING_ORDERS, _PENDING_UNITS = _pending_of_buyer()
_RECENT_ORDERS = _orders_of_buyer_since()
INSERT_ORDER_WITHIN_CAPS: Insert = (
    insert(ORDERS)
    .from_select(
        ["user_id", "status", "total", "created_at", "updated_at"],
        select(
            bindparam("buyer", type_=ORDERS.c.user_id.type),
            literal(OrderStatus.PENDING.value),
            bindparam("amount", type_=ORDERS.c.total.type),
            bindparam("now", type_=ORDERS.c.created_at.type),
            bindparam("now", type_=ORDERS.c.updated_at.type),
        ).where(
            bindparam("max_pending") > _PENDING_ORDERS,
            _PENDING_UNITS + bindparam("units") <= bindparam("max_units"),
            bindparam("max_recent") > _RECENT_ORDERS,
        ),
    )
    .returning(ORDERS.c.id)
)
# What the buyer holds, for the message of an order the caps refused.
PENDING_OF_BUYER: Select[Any] = select(
    _PENDING_ORDERS.label("orders"), _PENDING_UNITS.label("units"), _RECENT_ORDERS.label("recent")
)


# All of an order's items, answering each item's id with its product. Run with one parameter set
# per item: SQLAlchemy sends them as one multi-row INSERT … VALUES … RETURNING ("insertmanyvalues").
INSERT_ITEMS: Insert = insert(ITEMS).returning(ITEMS.c.id, ITEMS.c.product_id)


# The confirmation email the order owes, due at once: the outbox relay publishes it. Inline: no
# RETURNING of its id, which nothing needs.
INSERT_OUTBOX: Insert = (
    insert(OUTBOX)
    .values(
        order_id=bindparam("order"),
        status=literal("pending"),
        attempts=literal(0),
        next_attempt_at=bindparam("now"),
        created_at=bindparam("now"),
    )
    .inline()
)


@cache
def write_order(lines: int, capped: bool = False) -> Select[Any]:
    """PostgreSQL: the order, its items and its outbox row in one statement (data-modifying CTEs).

    Answers `(order_id, item_id, product_id)` for each item. One round trip instead of three, which
    matters most while the transaction holds the stock rows it took: a hot product's row is locked
    from `take_stock` to the commit, and every buyer of it queues for that time. Parameters as
    above, plus `u0…` the lines' unit prices. (SQLite has no INSERT in a WITH: it runs INSERT_ORDER,
    INSERT_ITEMS and INSERT_OUTBOX, the same rows.) `capped`: the order is INSERT_ORDER_WITHIN_CAPS,
    and a refused one inserts nothing at all (no rows answered).
    """
    order = (INSERT_ORDER_WITHIN_CAPS if capped else INSERT_ORDER).cte("placed")
    # The lines as rows: a UNION ALL of one-row SELECTs (a VALUES list is not cacheable, so SQLAlchemy
    # would compile the whole statement again for every order).
    wanted = union_all(
        *(
            select(
                bindparam(f"p{n}", type_=Integer).label("product_id"),
                bindparam(f"q{n}", type_=Integer).label("quantity"),
                bindparam(f"u{n}", type_=Numeric(10, 2)).label("unit_price"),
            )
            for n in range(lines)
        )
    ).subquery("line")
    item_columns = ["order_id", "product_id", "quantity", "unit_price"]
    item_rows = select(order.c.id, wanted.c.product_id, wanted.c.quantity, wanted.c.unit_price).select_from(
        order.join(wanted, true())
    )
    items = insert(ITEMS).from_select(item_columns, item_rows).returning(ITEMS.c.id, ITEMS.c.product_id).cte("item")
    outbox_columns = ["order_id", "status", "attempts", "next_attempt_at", "created_at"]
    outbox_row = select(order.c.id, literal("pending"), literal(0), bindparam("now"), bindparam("now"))
    outbox = insert(OUTBOX).from_select(outbox_columns, outbox_row).cte("owed")
    return (
        select(order.c.id.label("order_id"), items.c.id.label("item_id"), items.c.product_id)
        .select_from(order.join(items, true()))
        .add_cte(outbox)
    )


@cache
def return_stock(lines: int) -> Update:
    """A cancel: give every line's quantity back to its product (rows already locked), in one UPDATE … RETURNING."""
    ids = [bindparam(f"p{n}") for n in range(lines)]
    quantity = case({ids[n]: bindparam(f"q{n}") for n in range(lines)}, value=PRODUCTS.c.id)
    return (
        update(PRODUCTS)
        .where(PRODUCTS.c.id.in_(ids))
        .values(stock=PRODUCTS.c.stock + quantity, stock_version=PRODUCTS.c.stock_version + 1)
        .returning(PRODUCTS.c.id, PRODUCTS.c.stock, PRODUCTS.c.stock_version)
    )
