"""What the orders endpoints accept and answer (the seed's C3 shape, plus status, total and prices)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from shop.core.schemas import Id, StrictSchema, UTCDateTimeField
from shop.orders.models import OrderStatus
from shop.products.schemas import ProductSchema

MAX_ITEMS = 100
MAX_QUANTITY = 1000
# Money is dumped as a decimal string ("25.99"), and documented so: a Decimal field alone reads "number".
MONEY_DOC = {"type": "string", "pattern": r"^[0-9]+\.[0-9]{2}$", "example": "25.99"}


class OrderLineSchema(StrictSchema):
    product_id = Id(required=True)
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=MAX_QUANTITY))


class OrderCreateSchema(StrictSchema):
    items = fields.List(fields.Nested(OrderLineSchema), required=True, validate=validate.Length(min=1, max=MAX_ITEMS))

    @ma.validates("items")
    def each_product_once(self, items: list[dict[str, Any]], **kwargs: Any) -> None:
        seen: set[int] = set()
        for line in items:
            product_id = line.get("product_id")  # absent when that line failed its own validation
            if product_id in seen:
                raise ma.ValidationError(f"Product {product_id} is listed twice; use one line per product.")
            if product_id is not None:
                seen.add(product_id)


class IdempotencyHeaderSchema(ma.Schema):
    idempotency_key = fields.String(
        data_key="Idempotency-Key",
        validate=validate.Length(min=1, max=255),
        metadata={"description": "Retry-safe key: a repeat with the same body replays the first answer (24 h)."},
    )


class OrderItemSchema(ma.Schema):
    id = fields.Integer()
    product = fields.Nested(ProductSchema)
    quantity = fields.Integer()
    unit_price = fields.Decimal(places=2, as_string=True, metadata=MONEY_DOC)


class OrderSchema(ma.Schema):
    id = fields.Integer()
    user = fields.Function(lambda order: order.user.username)
    items = fields.List(fields.Nested(OrderItemSchema))
    total = fields.Decimal(places=2, as_string=True, metadata=MONEY_DOC)
    status = fields.Enum(OrderStatus, by_value=True)
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()
    is_completed = fields.Boolean()


class OrderQuerySchema(ma.Schema):
    user = fields.String(metadata={"description": "Staff only: orders of this username."})
    status = fields.Enum(OrderStatus, by_value=True)


class OrderStatusSchema(StrictSchema):
    status = fields.Enum(OrderStatus, by_value=True, required=True)


class EmailOutboxSchema(ma.Schema):
    """An order's confirmation email as staff see it: sent, pending (with its last error), or failed."""

    order_id = fields.Integer()
    status = fields.String()
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    created_at = UTCDateTimeField()
    sent_at = UTCDateTimeField(allow_none=True)


class EmailOutboxQuerySchema(ma.Schema):
    status = fields.String(validate=validate.OneOf(["pending", "sent", "failed"]))
