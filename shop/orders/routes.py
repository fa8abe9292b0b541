"""Orders endpoints: parse, call the service, return what the schema dumps (or, placing an order, its bytes)."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView
from flask_jwt_extended import current_user
from flask_smorest import abort

from shop.core.auth import auth
from shop.core.pagination import PAGINATE, page_of
from shop.infra.api import Blueprint, links_from_created
from shop.orders import emails, services
from shop.orders.models import Order
from shop.orders.schemas import (
    ORDER_EXAMPLE,
    ORDER_STATUS_EXAMPLE,
    EmailOutboxQuerySchema,
    EmailOutboxSchema,
    IdempotencyHeaderSchema,
    OrderCreateSchema,
    OrderQuerySchema,
    OrderSchema,
    OrderStatusChangeSchema,
)

blp = Blueprint(
    "orders",
    __name__,
    url_prefix="/api/orders",
    description="Place an order (every item's stock taken, or none; retry safely with an Idempotency-Key), read and "
    "cancel your orders; staff see every order, move it along pending → paid → shipped → completed, and follow "
    "the confirmation emails.",
)
REPLAYED = {"Idempotent-Replayed": "true"}


@blp.route("/")
class Orders(MethodView):
    @blp.doc(
        operationId="placeOrder", **links_from_created("order_id", "readOrder", "cancelOrder", "changeOrderStatus")
    )
    @auth(blp)
    @blp.arguments(IdempotencyHeaderSchema, location="headers", as_kwargs=True)
    @blp.arguments(OrderCreateSchema, example=ORDER_EXAMPLE)
    @blp.response(201, OrderSchema, headers={"Idempotent-Replayed": "IDEMPOTENT_REPLAYED"})
    @blp.alt_response(
        409,
        response="CONFLICT",
        description="Not enough stock, the Idempotency-Key is in use, or unpaid orders hold the most one customer may",
    )
    def post(self, data: dict[str, Any], idempotency_key: str | None = None) -> Any:
        """Place an order: every item's stock is taken, or none"""
        # The service answers the body's bytes in OrderSchema's shape (documented above; tests hold them to it).
        answer = services.place_order(current_user, data["items"], idempotency_key=idempotency_key)
        headers = REPLAYED if answer.replayed else {}
        return Response(answer.body, status=answer.status_code, headers=headers, mimetype="application/json")

    @blp.doc(operationId="listOrders")
    @auth(blp)
    @blp.arguments(OrderQuerySchema, location="query", as_kwargs=True)
    @blp.response(200, OrderSchema(many=True))
    @blp.paginate(**PAGINATE)
    def get(self, pagination_parameters: Any, **filters: Any) -> Any:
        """List my orders, newest first (staff: every order, filtered by user and status)"""
        return page_of(
            services.orders_query(current_user, username=filters.get("user"), status=filters.get("status")),
            pagination_parameters,
        )


@blp.route("/<int(max=2147483647):order_id>/")
class OrderDetail(MethodView):
    @blp.doc(operationId="readOrder")
    @auth(blp)
    @blp.response(200, OrderSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, order_id: int) -> Order:
        """Read one of my orders (staff: any order)"""
        return services.get_order(current_user, order_id)

    @blp.doc(operationId="changeOrderStatus")
    @auth(blp)
    @blp.arguments(OrderStatusChangeSchema, example=ORDER_STATUS_EXAMPLE)
    @blp.response(200, OrderSchema)
    @blp.alt_response(403, response="FORBIDDEN")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="Not the next status of the lifecycle")
    def patch(self, data: dict[str, Any], order_id: int) -> Order:
        """Move an order to its next status (staff): pending → paid → shipped → completed"""
        order = services.get_order(current_user, order_id)
        if not current_user.is_staff:
            abort(403, message="Staff only.")
        return services.change_status(current_user, order.id, data["status"])


@blp.route("/<int(max=2147483647):order_id>/cancel/")
class OrderCancel(MethodView):
    @blp.doc(operationId="cancelOrder")
    @auth(blp)
    @blp.response(200, OrderSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="The order can no longer be cancelled")
    def post(self, order_id: int) -> Order:
        """Cancel an order and return its stock (owner while pending; staff while pending or paid)"""
        return services.cancel_order(current_user, order_id)


@blp.route("/emails/")
class Emails(MethodView):
    @blp.doc(operationId="listOrderEmails")
    @auth(blp, staff=True)
    @blp.arguments(EmailOutboxQuerySchema, location="query", as_kwargs=True)
    @blp.response(200, EmailOutboxSchema(many=True))
    @blp.paginate(**PAGINATE)
    def get(self, pagination_parameters: Any, status: str | None = None) -> Any:
        """List order confirmation emails and their delivery state (staff), oldest first"""
        return page_of(emails.outbox_query(status), pagination_parameters)
