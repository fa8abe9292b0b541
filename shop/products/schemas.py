"""What the catalog endpoints accept and answer."""

from __future__ import annotations

from marshmallow import fields, validate

from shop.core.schemas import StrictSchema, UTCDateTimeField


class CategorySchema(StrictSchema):
    id = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    description = fields.String(load_default="", validate=validate.Length(max=2000))


class ProductSchema(StrictSchema):
    """A product as clients see it: the seed's C2 shape, with its category nested."""

    id = fields.Integer(dump_only=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="", validate=validate.Length(max=5000))
    price = fields.Decimal(required=True, places=2, as_string=True, validate=validate.Range(min=0, max=99_999_999.99))
    stock = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0, max=2**31 - 1))
    image = fields.Url(load_default=None, allow_none=True, schemes={"http", "https"}, validate=validate.Length(max=500))
    category = fields.Nested(CategorySchema, dump_only=True)
    created_at = UTCDateTimeField(dump_only=True)
    updated_at = UTCDateTimeField(dump_only=True)
