"""`flask db upgrade` from empty gives exactly the schema the models describe."""

from __future__ import annotations

import warnings

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from shop.extensions import db
from shop.users.models import User


def test_migrated_schema_matches_the_models(app):
    # The `app` fixture built the schema with `flask db upgrade` from an empty database.
    with app.app_context(), db.engine.connect() as connection, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLite cannot reflect expression indexes; PostgreSQL does
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)

    assert diff == []


def test_database_refuses_an_email_differing_only_in_case(app, app_ctx):
    db.session.add(User(username="one", email="Same@Example.com", password_hash="x"))
    db.session.commit()
    db.session.add(User(username="two", email="same@example.COM", password_hash="x"))

    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()
