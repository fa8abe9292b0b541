"""Errors the shop raises on purpose, and how the app answers the ones it does not."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request
from flask_smorest import abort
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import default_exceptions

logger = logging.getLogger(__name__)


class ShopError(Exception):
    """A rule of the shop was broken; carries the HTTP status and error body parts."""

    status = 400
    headers: dict[str, str] = {}

    def __init__(self, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class Unauthenticated(ShopError):
    status = 401
    headers = {"WWW-Authenticate": "Bearer"}


class ValidationFailed(ShopError):
    """A request value breaks a rule no schema can state (taken, unknown, mismatched): 422.

    Its field errors go under the location of the request they were found in, as the schema's own
    (webargs') are: `{"json": {"email": ["…"]}}`, `{"headers": {"Idempotency-Key": ["…"]}}`.
    """

    status = 422

    def __init__(self, message: str, errors: dict[str, Any] | None = None, location: str = "json") -> None:
        super().__init__(message, {location: errors} if errors else None)


class NotFound(ShopError):
    status = 404


class Conflict(ShopError):
    status = 409


def check_json_body() -> None:
    """Refuse a body that is not a JSON object with 400 before any view reads it."""
    if request.method not in {"POST", "PUT", "PATCH"}:
        return
    if request.content_length is None and request.environ.get("wsgi.input_terminated"):
        # Chunked (gunicorn marks every body so): no length to refuse up front, werkzeug stops at the limit.
        data = request.get_data(cache=True)
        if len(data) >= (request.max_content_length or float("inf")):
            abort(413, message="The body is larger than the server accepts.")
        if not data:
            return
    elif not request.content_length:
        return
    if not request.is_json:
        abort(400, message="Send the body as application/json.")
    body = request.get_json(silent=True)
    if body is None:
        abort(400, message="The body is not valid JSON.")
    if not isinstance(body, dict):
        abort(400, message="The body must be a JSON object.")


def error_response(
    status: int, message: str, errors: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The common error body for `status`, for handlers that must return rather than raise."""
    from shop.extensions import api

    error = default_exceptions[status]()
    error.data = {"message": message, "headers": headers or {}}
    if errors is not None:
        error.data["errors"] = errors
    return api.handle_http_exception(error)


def register_error_handlers(app: Flask) -> None:
    """Map the shop's own errors and database outages onto the common error body."""

    @app.errorhandler(ShopError)
    def _shop_error(error: ShopError) -> tuple[dict[str, Any], int, dict[str, str]]:
        return error_response(error.status, error.message, error.errors, headers=dict(error.headers))

    @app.errorhandler(OperationalError)
    def _database_down(error: DBAPIError) -> tuple[dict[str, Any], int, dict[str, str]]:
        if not _is_outage(error):
            raise error
        logger.warning("database unavailable: %s", error.orig)
        return error_response(503, "The database is unavailable; try again shortly.", headers={"Retry-After": "5"})

    @app.teardown_appcontext
    def _close_session(error: BaseException | None) -> None:
        # Runs before Flask-SQLAlchemy's own teardown. Closing rolls back the request's transaction;
        # when the database went away meanwhile that rollback fails, after the answer was decided,
        # and must not turn it into a 500: drop the dead connection instead.
        from shop.extensions import db

        try:
            db.session.remove()
        except DBAPIError as exc:
            logger.warning("closing a database session failed, its connection is dropped: %s", exc.orig)
            db.session().invalidate()
            db.session.remove()

    @app.errorhandler(PoolTimeout)
    def _pool_exhausted(error: PoolTimeout) -> tuple[dict[str, Any], int, dict[str, str]]:
        # Every pooled connection stayed busy for DB_POOL_TIMEOUT seconds.
        logger.warning("database pool exhausted: %s", error)
        return error_response(503, "The database is unavailable; try again shortly.", headers={"Retry-After": "5"})


# SQLSTATE classes of a database that cannot serve now: connection exception, insufficient
# resources (too many clients), operator intervention (shutting down, starting up, statement timeout).
OUTAGE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})


def _is_outage(error: DBAPIError) -> bool:
    """The database is down, restarting, overloaded or too slow, as opposed to a fault of the query.

    psycopg2 sets `pgcode` only on errors the server sent; a failure to connect or a connection
    lost (refused, "the database system is shutting down / starting up", "server closed the
    connection") has none.
    """
    if error.connection_invalidated:
        return True
    if hasattr(error.orig, "pgcode"):
        code = error.orig.pgcode
        return code is None or code[:2] in OUTAGE_SQLSTATE_CLASSES
    return "database is locked" in str(error.orig).lower()  # SQLite: another writer held it too long
