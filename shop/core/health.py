"""Liveness, readiness and metrics for the operators."""

from __future__ import annotations

import ipaddress
from typing import Any

from flask import Response, current_app
from flask_smorest import abort
from marshmallow import fields
from sqlalchemy import text

from shop.core.schemas import ResponseSchema
from shop.extensions import db
from shop.infra.api import Blueprint

blp = Blueprint(
    "health",
    __name__,
    description="Operations: liveness, readiness and Prometheus metrics (never rate limited).",
)


class HealthSchema(ResponseSchema):
    status = fields.String(metadata={"example": "ok"})


class ReadinessSchema(ResponseSchema):
    status = fields.String(metadata={"example": "ready"})
    checks = fields.List(fields.String(), metadata={"description": "The dependencies checked, all answering."})


@blp.route("/healthz")
@blp.doc(operationId="checkLiveness")
@blp.response(200, HealthSchema)
def healthz() -> dict[str, str]:
    """Liveness: 200 while the process serves"""
    return {"status": "ok"}


@blp.route("/readyz")
@blp.doc(operationId="checkReadiness")
@blp.response(200, ReadinessSchema)
@blp.alt_response(503, response="SERVICE_UNAVAILABLE")
def readyz() -> Any:
    """Readiness: 200 when the database, Redis and the broker (where configured) answer"""
    checks = {"database": _check_database}
    config = current_app.config
    if config["REDIS_URL"]:
        checks["redis"] = _check_redis
    if config["CELERY"].get("broker_url"):
        checks["broker"] = _check_broker
    failed = {}
    details = _from_private_network()
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            # What failed is named to anyone; why (hosts, ports, driver messages) only to operators.
            failed[name] = [f"{type(exc).__name__}: {exc}"[:200] if details else "unavailable"]
    if failed:
        # Raised, not returned: a returned body would be dumped through ReadinessSchema (and lose all but `status`).
        abort(503, message="Not ready: " + ", ".join(failed), errors=failed, headers={"Retry-After": "5"})
    return {"status": "ready", "checks": list(checks)}


def _from_private_network() -> bool:
    """Whether the caller is on a loopback or private network (the client address behind TRUSTED_PROXIES)."""
    from shop.infra.ratelimit import client_ip

    try:
        address = ipaddress.ip_address(client_ip())
    except ValueError:
        return False
    return address.is_loopback or address.is_private


def _check_database() -> None:
    db.session.execute(text("SELECT 1"))


def _check_redis() -> None:
    import redis

    redis.Redis.from_url(current_app.config["REDIS_URL"], socket_timeout=1, socket_connect_timeout=1).ping()


def _check_broker() -> None:
    from kombu import Connection

    with Connection(current_app.config["CELERY"]["broker_url"], connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1)


@blp.route("/metrics")
@blp.doc(operationId="readMetrics")
@blp.response(200, {"type": "string"}, content_type="text/plain")
def metrics() -> Response:
    """Prometheus metrics, counted across every worker process"""
    from shop.core.metrics import render_metrics

    body, content_type = render_metrics()
    return Response(body, content_type=content_type)
