"""Every extension of the shop, created unbound; `create_app` binds them."""

from __future__ import annotations

from flask_caching import Cache
from flask_cors import CORS
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from shop.infra.api import DocumentedResponses, ShopApi
from shop.infra.jwt import OnceJWTManager
from shop.infra.ratelimit import RateLimitedResponses, limiter

# Stable constraint names, so migrations are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate(render_as_batch=True)
# 429 and the rate limit's headers documented where limits apply; response fields documented as always sent.
api = ShopApi(spec_kwargs={"extra_plugins": [DocumentedResponses(), RateLimitedResponses()]})
jwt = OnceJWTManager()  # a request decodes its token once, for the limiter and the view
cache = Cache()
cors = CORS()
# flask-limiter, for RATELIMIT_AUTH on the credential views; the API budget is shop.infra.ratelimit's own.
__all__ = ["api", "cache", "cors", "db", "jwt", "limiter", "migrate"]
