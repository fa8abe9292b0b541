"""Idempotency-Key: the first answer to a request is stored per user and replayed to its repeats.

The key is claimed inside the transaction of the write it guards, by its first statement, and
the answer is stored on the claim by its last one: a key is held exactly while its write runs
and is answered exactly when the write commits. Nothing outlives a request that dies: its
transaction rolls back, claim included, so its client's retry simply runs again.

Concurrent requests with one key are decided by the unique constraint on user and key. A
repeat's INSERT waits for the transaction holding the key (PostgreSQL waits on the uncommitted
index entry, SQLite on its write lock): when that one commits, the repeat replays its answer;
when it rolls back (not enough stock, a fault), the repeat claims the key and runs the write.
A repeat that waits longer than the statement timeout answers 409, still in flight.

A claim with no answer can only be left by the shop's earlier versions, which committed claims
on their own: the claim statement takes such a row over, and one older than 24 hours is reused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Connection, Insert, Select, Update, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from shop.core.errors import Conflict, ValidationFailed
from shop.core.metrics import IDEMPOTENT_REPLAYS
from shop.core.time import utcnow
from shop.extensions import db
from shop.orders.models import IdempotencyKey

KEY_LIFETIME = timedelta(hours=24)
# query_canceled (statement_timeout) and lock_not_available (lock_timeout): a repeat stopped waiting.
GAVE_UP_WAITING = {"57014", "55P03"}
IN_FLIGHT = "A request with this Idempotency-Key is still being processed; retry shortly."
KEYS = IdempotencyKey.__table__


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as bytes: a stored one replayed to a repeat, or the first one."""

    status_code: int
    body: bytes
    replayed: bool = True


def fingerprint(payload: Any) -> str:
    """The same JSON content gives the same fingerprint, whatever its key order or spacing."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def claim(connection: Connection, user_id: int, key: str, request_hash: str, now: datetime) -> int | Answer:
    """In the caller's open transaction: the claimed key's row id, or the stored answer to replay.

    The caller rolls back after an answer; a repeat with another body is a 422.
    """
    params = {"buyer": user_id, "idem_key": key, "fingerprint": request_hash, "now": now, "expired": now - KEY_LIFETIME}
    try:
        claimed = connection.execute(_claim_statement(connection.dialect.name), params).scalar()
    except OperationalError as exc:
        if getattr(exc.orig, "pgcode", None) in GAVE_UP_WAITING:
            raise Conflict(IN_FLIGHT) from exc  # the first request held the key past the statement timeout
        raise
    if claimed is not None:
        return claimed
    existing = connection.execute(_STORED, params).one()
    if existing.request_hash != request_hash:
        raise ValidationFailed(
            "This Idempotency-Key was used with another request body.",
            {"headers": {"Idempotency-Key": ["Already used with another body."]}},
        )
    IDEMPOTENT_REPLAYS.inc()
    return Answer(existing.status_code, existing.response_body or b"")


def record(connection: Connection, key_id: int, status_code: int, body: bytes) -> None:
    """Store the answer on the claim, in the transaction that claimed it."""
    connection.execute(_RECORD, {"key_row": key_id, "code": status_code, "body": body})


def purge_expired() -> int:
    result = db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - KEY_LIFETIME))
    db.session.commit()
    return result.rowcount or 0


@cache
def _claim_statement(dialect: str) -> Insert:
    """INSERT the claim; on a key already stored, take it over only when expired or never answered."""
    insert = (postgresql if dialect == "postgresql" else sqlite).insert
    statement = insert(KEYS).values(
        user_id=bindparam("buyer"),
        key=bindparam("idem_key"),
        request_hash=bindparam("fingerprint"),
        created_at=bindparam("now"),
    )
    return statement.on_conflict_do_update(
        index_elements=[KEYS.c.user_id, KEYS.c.key],
        set_={
            "request_hash": statement.excluded.request_hash,
            "status_code": None,
            "response_body": None,
            "created_at": statement.excluded.created_at,
        },
        where=(KEYS.c.created_at < bindparam("expired")) | KEYS.c.status_code.is_(None),
    ).returning(KEYS.c.id)


_STORED: Select[Any] = select(KEYS.c.request_hash, KEYS.c.status_code, KEYS.c.response_body).where(
    KEYS.c.user_id == bindparam("buyer"), KEYS.c.key == bindparam("idem_key")
)
_RECORD: Update = (
    update(KEYS)
    .where(KEYS.c.id == bindparam("key_row"))
    .values(status_code=bindparam("code"), response_body=bindparam("body"))
)
