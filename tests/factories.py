"""Small factories that write straight to the database, for arranging a test."""

from __future__ import annotations

from decimal import Decimal
from itertools import count
from typing import Any

from shop.extensions import db
from shop.products.models import Category, Product
from shop.users.models import User

_seq = count(1)


def make_user(
    *, username: str | None = None, email: str | None = None, password: str = "pass-word-1", **fields: Any
) -> User:
    n = next(_seq)
    user = User(username=username or f"user{n}", email=email or f"user{n}@example.com", **fields)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    db.session.refresh(user)
    return user


def make_category(**fields: Any) -> Category:
    n = next(_seq)
    category = Category(name=fields.pop("name", f"Category {n}"), description=fields.pop("description", ""), **fields)
    db.session.add(category)
    db.session.commit()
    db.session.refresh(category)
    return category


def make_product(category: Category | None = None, **fields: Any) -> Product:
    n = next(_seq)
    product = Product(
        name=fields.pop("name", f"Product {n}"),
        description=fields.pop("description", f"Description of product {n}"),
        price=Decimal(str(fields.pop("price", "10.00"))),
        stock=fields.pop("stock", 100),
        category=category or make_category(),
        **fields,
    )
    db.session.add(product)
    db.session.commit()
    db.session.refresh(product)
    return product
