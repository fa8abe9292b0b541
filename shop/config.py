"""The shop's configuration: read once from the environment, with embedded defaults."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from kombu import Queue

INSTANCE_DIR = Path(__file__).resolve().parent.parent / "instance"

# Values that must never reach production as they are here.
DEV_SECRET = "dev-only-secret-change-me-0123456789abcdef"  # noqa: S105 - refused in production
# The environments that may run on DEV_SECRET; any other APP_ENV name gets production's rules.
RELAXED_ENVS = frozenset({"development", "testing"})
MIN_SECRET_BYTES = 32
# Secrets published in this repository's examples (deploy/k8s/secret.example.yaml, docs): never real.
KNOWN_SECRETS = frozenset(
    {
        DEV_SECRET,
        "change-me-to-a-long-random-string",
        "change-me-to-another-long-random-string",
        "change-me",
    }
)


OUTBOX_QUEUE = "outbox-relay"
# Where the shop serves Swagger UI's and ReDoc's own files (shop/core/apidocs.py): no page loads from another host.
DOCS_ASSETS_PATH = "/api/docs/assets/"


class ConfigError(RuntimeError):
    """The environment does not describe a runnable shop."""


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not value > 0:
        raise ConfigError(f"{name} must be more than 0 seconds, got {raw!r}")
    return value


def normalize_database_url(url: str) -> str:
    """`postgres://` and `postgresql://` mean PostgreSQL through psycopg2, the driver the shop ships."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def _database_url(env: dict[str, str]) -> str:
    url = env.get("DATABASE_URL", "")
    return normalize_database_url(url) if url else f"sqlite:///{INSTANCE_DIR / 'shop.sqlite3'}"


def load_config(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from environment variables (docs/api.md's table)."""
    env = dict(os.environ if env is None else env)
    app_env = env.get("APP_ENV", "development")
    secret_key = env.get("SECRET_KEY", "")
    jwt_secret = env.get("JWT_SECRET_KEY", "")
    if app_env not in RELAXED_ENVS:
        check_secrets(app_env, {"SECRET_KEY": secret_key, "JWT_SECRET_KEY": jwt_secret})
    database_url = _database_url(env)
    redis_url = env.get("REDIS_URL") or None
    broker_url = env.get("CELERY_BROKER_URL") or None

    config: dict[str, Any] = {
        "APP_ENV": app_env,
        "DEBUG": False,
        "SECRET_KEY": secret_key or DEV_SECRET,
        # werkzeug's scrypt: slow and salted. Tests may choose a cheaper method.
        "PASSWORD_HASH_METHOD": env.get("PASSWORD_HASH_METHOD", "scrypt"),
        "MAX_CONTENT_LENGTH": _int(env, "MAX_CONTENT_LENGTH", 1024 * 1024),
        # Database
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(database_url, env),
        "SQLALCHEMY_RECORD_QUERIES": False,
        # OpenAPI
        "API_TITLE": "Shop API",
        "API_VERSION": "1.0.0",
        "OPENAPI_VERSION": "3.0.3",
        # API_DOCS=false: no OpenAPI document, Swagger UI or ReDoc (a production that does not publish them).
        "OPENAPI_URL_PREFIX": "/api" if _bool(env.get("API_DOCS"), True) else None,
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "/docs/",
        "OPENAPI_SWAGGER_UI_URL": DOCS_ASSETS_PATH,
        # The token given in "Authorize" is kept across reloads; no online validator is asked.
        "OPENAPI_SWAGGER_UI_CONFIG": {"persistAuthorization": True, "validatorUrl": None},
        "OPENAPI_REDOC_PATH": "/redoc/",
        "OPENAPI_REDOC_URL": DOCS_ASSETS_PATH + "redoc.standalone.js",
        "API_SPEC_OPTIONS": {
            "info": {
                "description": "A high-load e-commerce API: users, catalog and orders.\n\n"
                "Authenticate with `POST /api/token/` and send `Authorization: Bearer <access>`. JSON in "
                'and out; money is a decimal string (`"25.99"`). Lists are paginated with `page` and '
                "`page_size` and say where they are in `X-Pagination` and `Link`. Every error has the one "
                "`Error` body; a `422` lists field errors under `json`, `query` or `headers`. A `429` or "
                "`503` says in `Retry-After` when to try again. The shop's reference is its docs/api.md."
            },
            "components": {
                "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
            },
        },
        # Tokens
        "JWT_SECRET_KEY": jwt_secret or DEV_SECRET,
        "JWT_ALGORITHM": "HS256",
        "JWT_DECODE_ALGORITHMS": ["HS256"],
        "JWT_TOKEN_LOCATION": ["headers"],
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(minutes=_int(env, "JWT_ACCESS_MINUTES", 15)),
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(days=_int(env, "JWT_REFRESH_DAYS", 7)),
        # A session's absolute lifetime: refreshing never carries a sign-in past it (RFC 9700 4.14.2).
        "SESSION_MAX_AGE": timedelta(days=_int(env, "SESSION_MAX_DAYS", 30)),
        "JWT_ERROR_MESSAGE_KEY": "message",
        "JWT_REFRESH_JSON_KEY": "refresh",
        # Cache, rate limits, token blocklist
        "REDIS_URL": redis_url,
        "CACHE_TYPE": "RedisCache" if redis_url else "SimpleCache",
        "CACHE_REDIS_URL": redis_url,
        "CACHE_DEFAULT_TIMEOUT": _int(env, "CACHE_TIMEOUT", 300),
        "CACHE_KEY_PREFIX": env.get("CACHE_KEY_PREFIX", "shop:"),
        "CACHE_OPTIONS": {"socket_timeout": 0.25, "socket_connect_timeout": 0.25} if redis_url else {},
        # The catalog's response cache (shop/products/cache.py); off to measure the database path alone.
        "CATALOG_CACHE": _bool(env.get("CATALOG_CACHE"), True),
        "RATELIMIT_ENABLED": _bool(env.get("RATELIMIT_ENABLED"), True),
        "RATELIMIT_ANON": env.get("RATELIMIT_ANON", "300/minute"),
        "RATELIMIT_USER": env.get("RATELIMIT_USER", "1200/minute"),
        "RATELIMIT_AUTH": env.get("RATELIMIT_AUTH", "10/minute"),
        # Per account named on sign-in, per email address given on registration, wherever the tries come from.
        "RATELIMIT_ACCOUNT": env.get("RATELIMIT_ACCOUNT", "10/minute"),
        "RATELIMIT_STORAGE_URI": redis_url or "memory://",
        "RATELIMIT_STORAGE_OPTIONS": {"socket_timeout": 0.25, "socket_connect_timeout": 0.25} if redis_url else {},
        "RATELIMIT_HEADERS_ENABLED": True,
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "TRUSTED_PROXIES": _int(env, "TRUSTED_PROXIES", 0),
        # CORS
        "CORS_ORIGINS": [o.strip() for o in env.get("CORS_ORIGINS", "").split(",") if o.strip()],
        # Background work
        "CELERY": celery_config(broker_url, env),
        "EMAIL_MAX_RETRIES": _int(env, "EMAIL_MAX_RETRIES", 5),
        "EMAIL_RETRY_BACKOFF_MAX": _int(env, "EMAIL_RETRY_BACKOFF_MAX", 300),
        "OUTBOX_GRACE_SECONDS": _int(env, "OUTBOX_GRACE_SECONDS", 30),
        # Stock reservations: an unpaid order holds its stock this long, then beat cancels it; what one
        # customer's unpaid orders may hold at once (0: no cap).
        "PENDING_ORDER_MINUTES": _int(env, "PENDING_ORDER_MINUTES", 15),
        "MAX_PENDING_ORDERS": _int(env, "MAX_PENDING_ORDERS", 5),
        "MAX_PENDING_UNITS": _int(env, "MAX_PENDING_UNITS", 2000),
        # Orders (and so confirmation emails) one customer may place in an hour (0: no cap).
        "MAX_ORDERS_PER_HOUR": _int(env, "MAX_ORDERS_PER_HOUR", 30),
        # Mail
        "MAIL_SERVER": env.get("MAIL_SERVER") or None,
        "MAIL_PORT": _int(env, "MAIL_PORT", 25),
        "MAIL_USE_TLS": _bool(env.get("MAIL_USE_TLS"), False),
        "MAIL_USERNAME": env.get("MAIL_USERNAME") or None,
        "MAIL_PASSWORD": env.get("MAIL_PASSWORD") or None,
        "MAIL_DEFAULT_SENDER": env.get("MAIL_DEFAULT_SENDER", "shop@localhost"),
        # Development: Server-Timing on every response, a warning over this many SQL statements a request
        "DEV_QUERY_BUDGET": _int(env, "DEV_QUERY_BUDGET", 20),
    }
    return config


def check_secrets(app_env: str, secrets: dict[str, str]) -> None:
    """Production rules (any APP_ENV but development/testing): every secret set, long, unpublished, its own."""
    missing = [name for name, value in secrets.items() if not value]
    if missing:
        raise ConfigError(f"APP_ENV={app_env} needs " + " and ".join(missing) + " to be set (see .env.example).")
    for name, value in secrets.items():
        if value.strip() in KNOWN_SECRETS or "change-me" in value:
            raise ConfigError(f"{name} is a published example value; set a random one (see .env.example).")
        if len(value.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"{name} is shorter than {MIN_SECRET_BYTES} bytes; use a long random value.")
    if len(set(secrets.values())) < len(secrets):
        raise ConfigError(" and ".join(secrets) + " are the same value; each needs its own.")


def celery_config(broker_url: str | None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Celery settings: at-least-once delivery that never hangs a request when the broker is down."""
    env = dict(os.environ if env is None else env)
    relay_seconds = _seconds(env, "OUTBOX_RELAY_SECONDS", 1.0)  # fractions allowed: 0.2 for fresher emails
    return {
        "broker_url": broker_url,
        # With no broker, tasks run in-process right after the order commits.
        "task_always_eager": broker_url is None,
        "task_ignore_result": True,
        # A task is acknowledged when it finishes; a worker that dies leaves it to be redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"confirm_publish": True},
        "broker_connection_timeout": 2,
        "broker_connection_retry_on_startup": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        "worker_hijack_root_logger": False,
        # The outbox relay has its own queue, which every worker also consumes: a backlog of emails
        # to send does not hold up the run that publishes the next ones.
        "task_queues": [Queue("celery", routing_key="celery"), Queue(OUTBOX_QUEUE, routing_key=OUTBOX_QUEUE)],
        "task_routes": {"shop.orders.tasks.relay_outbox": {"queue": OUTBOX_QUEUE, "routing_key": OUTBOX_QUEUE}},
        "beat_schedule": {
            # The outbox relay publishes every order's email (the request never waits on the broker).
            # A run not started within its interval is dropped: a stopped worker does not come back
            # to a queue of relay runs.
            "relay-email-outbox": {
                "task": "shop.orders.tasks.relay_outbox",
                "schedule": relay_seconds,
                "options": {"expires": max(relay_seconds, 1.0)},
            },
            "purge-expired-keys-and-tokens": {"task": "shop.orders.tasks.purge_expired", "schedule": 3600.0},
            # Unpaid orders past PENDING_ORDER_MINUTES give their stock back (checked each minute).
            "expire-pending-orders": {
                "task": "shop.orders.tasks.expire_pending_orders",
                "schedule": 60.0,
                "options": {"expires": 60.0},
            },
        },
    }


def _engine_options(database_url: str, env: dict[str, str]) -> dict[str, Any]:
    if not database_url.startswith("postgresql"):
        return {}
    statement_timeout_ms = _int(env, "DB_STATEMENT_TIMEOUT_MS", 5000)
    return {
        # Off by default: a ping is one more round trip on every request that uses the database. A
        # connection found dead answers that one request 503 (safe to retry) and SQLAlchemy drops
        # every pooled connection older than the failure, so a restart costs a worker one request.
        "pool_pre_ping": _bool(env.get("DB_POOL_PRE_PING"), False),
        "pool_recycle": _int(env, "DB_POOL_RECYCLE_SECONDS", 1800),
        "pool_size": _int(env, "DB_POOL_SIZE", 5),
        "max_overflow": _int(env, "DB_MAX_OVERFLOW", 5),
        "pool_timeout": _int(env, "DB_POOL_TIMEOUT", 5),
        "connect_args": {
            "connect_timeout": 3,
            "options": f"-c statement_timeout={statement_timeout_ms}",
        },
    }
