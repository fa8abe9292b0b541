"""Fixtures of the fault tests: one migrated template database, copied for each test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.reliability.stack import PREFIX, admin, database_url, drop_database, migrate


@pytest.fixture(scope="session")
def template() -> Iterator[str]:
    """A database migrated once (`flask db upgrade`); each test gets a fresh copy of it."""
    name = f"{PREFIX}template_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin(f'CREATE DATABASE "{name}"')
    try:
        migrate(database_url(name))
        yield name
    finally:
        drop_database(name)
