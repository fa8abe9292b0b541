"""What the catalog endpoints accept and answer.

Each rule a request body or query must keep is written as a validator the OpenAPI document can
state (length, range, pattern, enum), so what the document promises is exactly what is accepted.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from shop.core.schemas import MAX_ID, Id, Pattern, ResponseSchema, StrictSchema, Text, UTCDateTimeField
from shop.products.models import CATEGORY_DESCRIPTION_LENGTH, PRODUCT_DESCRIPTION_LENGTH, Category, Product

MAX_STOCK = 2**31 - 1
CENT = Decimal("0.01")
# Money travels as a decimal string with at most two places that fits Numeric(10, 2).
MONEY = Pattern(r"^(0|[1-9][0-9]{0,7})(\.[0-9]{1,2})?$", error='A price is a string such as "25.99".')
# An http(s) URL the server stores and never fetches.
IMAGE_URL = Pattern(
    r"^https?://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?(?:/[!-~]*)?$",
    error="An image is an http:// or https:// URL.",
)


SEARCH_LENGTH = 100


class ProductOrdering(StrEnum):
    """The order of a product list: by a key, ascending, or descending with a leading `-`; ties by id."""

    ID = "id"
    NAME = "name"
    PRICE = "price"
    CREATED_AT = "created_at"
    ID_DESC = "-id"
    NAME_DESC = "-name"
    PRICE_DESC = "-price"
    CREATED_AT_DESC = "-created_at"


class Money(Text):
    """A price: `"25.99"` in and out (a decimal string, at most 8 digits and 2 places), a two-place Decimal inside."""

    def __init__(self, *, metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(
            validate=MONEY, metadata={"format": "decimal", "example": "25.99", **(metadata or {})}, **kwargs
        )

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else format(value, ".2f")


def _to_decimal(data: dict[str, Any], *names: str) -> dict[str, Any]:
    """Turn validated money strings into two-place Decimals (after the validators, which see the text)."""
    for name in names:
        if data.get(name) is not None:
            data[name] = Decimal(data[name].strip()).quantize(CENT)
    return data


class CategorySchema(ResponseSchema):
    """A category of products."""

    id = fields.Integer()
    name = fields.String()
    description = fields.String()


class CategoryCreateSchema(StrictSchema):
    """A new category: its name is unique."""

    name = Text(required=True, min_length=1, column=Category.name)
    description = Text(load_default="", max_length=CATEGORY_DESCRIPTION_LENGTH, lines=True)


CATEGORY_EXAMPLE = {"name": "Peripherals", "description": "Mice, keyboards and the like."}


class CategoryUpdateSchema(StrictSchema):
    """The category fields to change; what is absent stays as it is."""

    name = Text(min_length=1, column=Category.name)
    description = Text(max_length=CATEGORY_DESCRIPTION_LENGTH, lines=True)


class ProductSchema(ResponseSchema):
    """A product as clients see it, with its category nested."""

    id = fields.Integer()
    name = fields.String()
    description = fields.String()
    price = Money()
    stock = fields.Integer(validate=validate.Range(min=0, max=MAX_STOCK))
    image = fields.String(allow_none=True, metadata={"description": "An http(s) URL, never fetched by the shop."})
    category = fields.Nested(CategorySchema)
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()


class ProductCreateSchema(StrictSchema):
    """A new product: name, price and category are required."""

    name = Text(required=True, min_length=1, column=Product.name)
    description = Text(load_default="", max_length=PRODUCT_DESCRIPTION_LENGTH, lines=True)
    price = Money(required=True)
    stock = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0, max=MAX_STOCK))
    image = Text(load_default=None, allow_none=True, column=Product.image, validate=IMAGE_URL)
    category_id = Id(required=True, metadata={"description": "The id of an existing category."})

    @ma.post_load
    def money(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return _to_decimal(data, "price")


PRODUCT_EXAMPLE = {
    "name": "Wireless mouse",
    "description": "Two buttons and a wheel.",
    "price": "25.99",
    "stock": 150,
    "image": "https://img.example.com/mouse.png",
    "category_id": 1,
}


class ProductReplaceSchema(ProductCreateSchema):
    """PUT: every writable field, so nothing is reset by omission."""

    description = Text(required=True, max_length=PRODUCT_DESCRIPTION_LENGTH, lines=True)
    stock = fields.Integer(strict=True, required=True, validate=validate.Range(min=0, max=MAX_STOCK))
    image = Text(required=True, allow_none=True, column=Product.image, validate=IMAGE_URL)


class ProductUpdateSchema(StrictSchema):
    """PATCH: any writable field; what is absent stays as it is."""

    name = Text(min_length=1, column=Product.name)
    description = Text(max_length=PRODUCT_DESCRIPTION_LENGTH, lines=True)
    price = Money()
    stock = fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_STOCK))
    image = Text(allow_none=True, column=Product.image, validate=IMAGE_URL)
    category_id = Id(metadata={"description": "The id of an existing category."})

    @ma.post_load
    def money(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return _to_decimal(data, "price")


PRODUCT_UPDATE_EXAMPLE = {"price": "23.50", "stock": 140}


class StockAdjustmentSchema(StrictSchema):
    delta = fields.Integer(
        strict=True,
        required=True,
        validate=validate.Range(min=-MAX_STOCK, max=MAX_STOCK),
        metadata={"description": "Units to add (goods received) or, when negative, to remove."},
    )


STOCK_EXAMPLE = {"delta": -3}


class ProductQuerySchema(ma.Schema):
    """Filters and order of the product list (page and page_size come from the pagination)."""

    category = fields.Integer(validate=validate.Range(min=1, max=MAX_ID), metadata={"description": "Category id."})
    search = Text(
        max_length=SEARCH_LENGTH,
        metadata={"description": "Case-insensitive text in the name or description."},
    )
    min_price = Money(metadata={"description": "Lowest price, inclusive."})
    max_price = Money(metadata={"description": "Highest price, inclusive."})
    in_stock = fields.Boolean(
        truthy={"true"},
        falsy={"false"},
        metadata={"description": "true: only products in stock; false: only sold out."},
    )
    ordering = fields.Enum(
        ProductOrdering,
        by_value=True,
        load_default=ProductOrdering.ID,
        metadata={"description": "Sort key, descending with a leading '-'; ties are broken by id."},
    )

    @ma.post_load
    def money(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return _to_decimal(data, "min_price", "max_price")


# Query parameters that select a product list page: the response cache keys on these alone.
PRODUCT_LIST_PARAMS = ("page", "page_size", *ProductQuerySchema().fields)
PAGE_PARAMS = ("page", "page_size")
