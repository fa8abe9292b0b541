"""Import every model so that Alembic and `db.create_all` see the whole schema."""

from shop.orders.models import EmailOutbox, IdempotencyKey, Order, OrderItem, OrderStatus
from shop.products.models import Category, Product
from shop.users.models import User, UserSession

__all__ = [
    "Category",
    "EmailOutbox",
    "IdempotencyKey",
    "Order",
    "OrderItem",
    "OrderStatus",
    "Product",
    "User",
    "UserSession",
]
