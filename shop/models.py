"""Import every model so that Alembic and `db.create_all` see the whole schema."""

from shop.orders.models import EmailOutbox, IdempotencyKey, Order, OrderItem, OrderStatus
from shop.products.models import Category, Product
from shop.users.models import RevokedToken, User

__all__ = [
    "Category",
    "EmailOutbox",
    "IdempotencyKey",
    "Order",
    "OrderItem",
    "OrderStatus",
    "Product",
    "RevokedToken",
    "User",
]
