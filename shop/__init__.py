"""The shop: a high-load e-commerce REST API."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from shop.config import INSTANCE_DIR, load_config
from shop.infra.app import ShopFlask


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the application: configuration, extensions, blueprints, tasks, errors, commands, logging."""
    app = ShopFlask(__name__, instance_relative_config=True, static_folder=None)
    app.config.update(load_config())
    if config:
        app.config.update(config)
    configure_logger(app)
    register_extensions(app)
    register_blueprints(app)
    register_tasks(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def register_extensions(app: Flask) -> None:
    """Bind every extension of `shop.extensions` to the app."""
    from shop import models  # noqa: F401 - every table known before migrate and create_all
    from shop.core.devtools import init_devtools
    from shop.core.jsonprovider import OrjsonProvider
    from shop.core.metrics import connect_celery_metrics
    from shop.core.metrics import init_app as init_shop_metrics
    from shop.core.security import init_security
    from shop.extensions import api, cache, db, jwt, migrate
    from shop.infra.ratelimit import init_rate_limits
    from shop.tasks import celery_init_app

    app.json = OrjsonProvider(app)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        INSTANCE_DIR.mkdir(exist_ok=True)
    db.init_app(app)
    migrate.init_app(app, db)
    api.init_app(app)
    jwt.init_app(app)
    cache.init_app(app)
    init_rate_limits(app)  # the API budget per client, and flask-limiter for the credential views
    init_security(app)  # security headers on every response, CORS for CORS_ORIGINS only
    init_shop_metrics(app)  # HTTP metrics by route rule and status, 429s, process gauges
    connect_celery_metrics()
    celery_init_app(app)
    init_devtools(app)  # development only: Server-Timing and the SQL statement budget


def register_blueprints(app: Flask) -> None:
    """Mount every blueprint on the Api, so each is in the OpenAPI document."""
    from shop.core import apidocs, health
    from shop.extensions import api
    from shop.orders.routes import blp as orders_blp
    from shop.products.routes import categories_blp, products_blp
    from shop.users.routes import blp as users_blp
    from shop.users.routes import token_blp

    for blueprint in (users_blp, token_blp, categories_blp, products_blp, orders_blp, health.blp):
        api.register_blueprint(blueprint)
    app.register_blueprint(apidocs.blp)  # the documentation pages' own files, not part of the API


def register_tasks(app: Flask) -> None:
    """Every feature's Celery tasks, known to the app's Celery app (`celery -A celery_worker` included)."""
    import shop.orders.tasks  # noqa: F401 - its @shared_task functions register with every Celery app


def register_errorhandlers(app: Flask) -> None:
    """The common error body for the shop's own errors, token faults and malformed bodies."""
    from shop.core.errors import check_json_body, register_error_handlers
    from shop.users.tokens import register_token_handlers

    register_error_handlers(app)
    register_token_handlers(app)
    app.before_request(check_json_body)


def register_commands(app: Flask) -> None:
    """`flask create-admin`, `flask set-role` and `flask seed`."""
    from shop.products.cli import seed
    from shop.users.cli import create_admin, set_role_command

    app.cli.add_command(create_admin)
    app.cli.add_command(set_role_command)
    app.cli.add_command(seed)


def configure_logger(app: Flask) -> None:
    """JSON lines on stdout at LOG_LEVEL, each request with its id and one access line."""
    from shop.core.logging import configure_json_logging, init_request_logging

    configure_json_logging(os.environ.get("LOG_LEVEL", "INFO").upper())
    init_request_logging(app)
