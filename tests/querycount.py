"""Count the SQL statements a block of code sends, to prove a page costs a bounded number."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from shop.extensions import db


@contextmanager
def count_statements(app: Any) -> Iterator[list[str]]:
    """The statements this thread sends (the test client's requests), not a background thread of the app's."""
    statements: list[str] = []
    caller = threading.get_ident()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == caller:
            statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
