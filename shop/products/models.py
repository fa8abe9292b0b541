"""Categories and products, with the catalog's rules held by the database too."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shop.core.time import utcnow
from shop.core.types import UTCDateTime
from shop.extensions import db

# Descriptions are TEXT columns; these bound what a request may store in them (the schemas read them).
CATEGORY_DESCRIPTION_LENGTH = 2000
PRODUCT_DESCRIPTION_LENGTH = 5000


class Category(db.Model):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class Product(db.Model):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("price >= 0", name="price_not_negative"),
        Index("ix_products_visible_price", "hidden", "price"),
        Index("ix_products_visible_created", "hidden", "created_at"),
        Index("ix_products_visible_name", "hidden", "name"),
        # `search` is ILIKE '%text%' on name or description: trigram GIN indexes on PostgreSQL
        # (migration 0002); elsewhere the options are ignored and these are plain indexes.
        Index("ix_products_name_trgm", "name", postgresql_using="gin", postgresql_ops={"name": "gin_trgm_ops"}),
        Index(
            "ix_products_description_trgm",
            "description",
            postgresql_using="gin",
            postgresql_ops={"description": "gin_trgm_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    stock: Mapped[int] = mapped_column(Integer, default=0)
    # +1 by every statement that changes `stock` (row locks order them): the catalog cache keeps the
    # stock of the highest version it was told, so a late, older write never overwrites a newer one.
    stock_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    image: Mapped[str | None] = mapped_column(String(500))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), index=True)
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    category: Mapped[Category] = relationship(lazy="joined", innerjoin=True)
