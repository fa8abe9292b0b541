"""What the orders endpoints accept and answer (the seed's C3 shape, plus status, total and prices)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from shop.core.schemas import Id, ResponseSchema, StrictSchema, Text, TextEnum, UTCDateTimeField
from shop.orders.models import EmailStatus, IdempotencyKey, OrderStatus
from shop.products.schemas import ProductSchema
from shop.users.models import User

MAX_ITEMS = 100
MAX_QUANTITY = 1000
# Money is dumped as a decimal string ("25.99"), and documented so: a Decimal field alone reads "number".
MONEY_DOC = {"type": "string", "format": "decimal", "pattern": r"^[0-9]+\.[0-9]{2}$", "example": "25.99"}


class OrderLineSchema(StrictSchema):
    """One line of a new order: a product and how many."""

    product_id = Id(required=True, metadata={"description": "A product that exists and is not hidden."})
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=MAX_QUANTITY))


class OrderCreateSchema(StrictSchema):
    """A new order: its lines, each product once."""

    items = fields.List(
        fields.Nested(OrderLineSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_ITEMS),
        metadata={"description": "One line per product: a product listed twice is refused."},
    )

    @ma.validates("items")
    def each_product_once(self, items: list[dict[str, Any]], **kwargs: Any) -> None:
        seen: set[int] = set()
        for line in items:
            product_id = line.get("product_id")  # absent when that line failed its own validation
            if product_id in seen:
                raise ma.ValidationError(f"Product {product_id} is listed twice; use one line per product.")
            if product_id is not None:
                seen.add(product_id)


ORDER_EXAMPLE = {"items": [{"product_id": 1, "quantity": 2}, {"product_id": 4, "quantity": 1}]}


class IdempotencyHeaderSchema(ma.Schema):
    idempotency_key = Text(
        data_key="Idempotency-Key",
        min_length=1,
        column=IdempotencyKey.key,
        metadata={"description": "Retry-safe key: a repeat with the same body replays the first answer (24 h)."},
    )


class OrderItemSchema(ResponseSchema):
    """A line of an order: the product as it is now, and its price when ordered."""

    id = fields.Integer()
    product = fields.Nested(ProductSchema)
    quantity = fields.Integer(validate=validate.Range(min=1, max=MAX_QUANTITY))
    unit_price = fields.Decimal(places=2, as_string=True, metadata={**MONEY_DOC, "description": "Price when ordered."})


class OrderSchema(ResponseSchema):
    """An order: its lines, exact total and status."""

    id = fields.Integer()
    user = fields.String(attribute="user.username", metadata={"description": "The buyer's username."})
    items = fields.List(fields.Nested(OrderItemSchema))
    total = fields.Decimal(
        places=2, as_string=True, metadata={**MONEY_DOC, "description": "The exact sum of the lines."}
    )
    status = fields.Enum(OrderStatus, by_value=True)
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()
    is_completed = fields.Boolean(metadata={"description": "True exactly when the status is completed."})


class OrderQuerySchema(ma.Schema):
    user = Text(column=User.username, metadata={"description": "Staff only: orders of this username."})
    status = fields.Enum(OrderStatus, by_value=True, metadata={"description": "Only orders in this status."})


class OrderStatusChangeSchema(StrictSchema):
    """The next status of an order's lifecycle (staff)."""

    status = fields.Enum(OrderStatus, by_value=True, required=True)


ORDER_STATUS_EXAMPLE = {"status": "paid"}


class EmailOutboxSchema(ResponseSchema):
    """An order's confirmation email as staff see it: sent, pending (with its last error), or failed."""

    order_id = fields.Integer()
    status = TextEnum(EmailStatus)
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    created_at = UTCDateTimeField()
    sent_at = UTCDateTimeField(allow_none=True)


class EmailOutboxQuerySchema(ma.Schema):
    status = fields.Enum(EmailStatus, by_value=True, metadata={"description": "Only emails in this state."})
