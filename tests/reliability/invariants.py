"""What must hold in the database after any fault: nothing confirmed lost, nothing duplicated."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from tests.reliability.load import Load
from tests.reliability.stack import query


def check_orders(url: str, load: Load, initial_stock: dict[int, int]) -> dict[str, Any]:
    """Assert the invariants of the fault tests; returns what was counted, for the report.

    - every 201 the client saw is an order in the database, of that buyer, with exactly its lines,
      and exactly one email owed or sent;
    - every order in the database belongs to exactly one Idempotency-Key whose stored answer names
      it, so no retry made a second order; every order has exactly one outbox row;
    - stock + ordered quantity (orders not cancelled) = initial stock, for every product.
    """
    orders = dict(query(url, "SELECT id, user_id FROM orders WHERE status <> 'cancelled'"))
    items: dict[int, set[tuple[int, int]]] = {}
    for order_id, product_id, quantity in query(url, "SELECT order_id, product_id, quantity FROM order_items"):
        items.setdefault(order_id, set()).add((product_id, quantity))
    emails = Counter(order_id for (order_id,) in query(url, "SELECT order_id FROM email_outbox"))
    email_states = Counter(status for (status,) in query(url, "SELECT status FROM email_outbox"))
    keys = {
        (user_id, key): (status, bytes(body) if body is not None else None)
        for user_id, key, status, body in query(
            url, "SELECT user_id, key, status_code, response_body FROM idempotency_keys"
        )
    }

    # Every answer the client saw as 201 is a committed order with its lines and its email.
    for placed in load.orders:
        if placed.final != "created":
            continue
        assert placed.order_id in orders, f"order {placed.order_id} was answered 201 but is not in the database"
        assert orders[placed.order_id] == placed.buyer
        assert items[placed.order_id] == {(line["product_id"], line["quantity"]) for line in placed.lines}
        assert emails[placed.order_id] == 1, f"order {placed.order_id} owes {emails[placed.order_id]} emails"
        stored = keys.get((placed.buyer, placed.key))
        assert stored is not None and stored[0] == 201
        assert json.loads(stored[1])["id"] == placed.order_id, "a replay answered another order than the first"

    # Each order in the database is the stored answer of exactly one key: no retry made another.
    answered = Counter(json.loads(body)["id"] for status, body in keys.values() if status == 201)
    assert set(answered) == set(orders), (
        f"orders without their key's answer: {sorted(set(orders) - set(answered))[:10]}; "
        f"answers naming no order: {sorted(set(answered) - set(orders))[:10]}"
    )
    assert max(answered.values(), default=1) == 1
    assert all(emails[order_id] == 1 for order_id in orders), "an order without exactly one email row"
    # An order the client never saw answered (it gave up) may exist, but once only.
    per_key = Counter((placed.buyer, placed.key) for placed in load.orders)
    assert max(per_key.values(), default=1) == 1

    # Stock is conserved.
    ordered = dict(
        query(
            url,
            "SELECT i.product_id, COALESCE(SUM(i.quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id "
            "WHERE o.status <> 'cancelled' GROUP BY i.product_id",
        )
    )
    stock = dict(query(url, "SELECT id, stock FROM products"))
    for product_id, initial in initial_stock.items():
        assert stock[product_id] + ordered.get(product_id, 0) == initial, f"stock of product {product_id} drifted"

    unanswered = sum(1 for status, _ in keys.values() if status is None)
    return {
        "orders_in_db": len(orders),
        "emails": dict(email_states),
        "claims_unanswered": unanswered,
    }
