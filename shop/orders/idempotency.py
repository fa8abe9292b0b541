"""Idempotency-Key: the first answer to a request is stored per user and replayed to its repeats.

The key is claimed inside the transaction of the write it guards, by its first statement, and
the answer is stored on the claim by its last one: a key is held exactly while its write runs
and is answered exactly when the write commits. Nothing outlives a request that dies: its
transaction rolls back, claim included, so its client's retry simply runs again.

A repeat sent while the first request runs answers 409 at once, never waiting for it. On
PostgreSQL the claim statement itself takes a transaction-scoped advisory lock on the user and
key (`pg_try_advisory_xact_lock`, which never waits) and inserts only when it got it: the
request holding the key holds the lock until it commits or rolls back, so a repeat that finds
the lock taken inserts nothing, and so never waits on the first one's uncommitted row. Only when
the claim inserts nothing (the key is held, or already answered) does a second statement read
the stored answer: none yet is 409, still in flight; an answer is replayed, or a 422 for
another body. SQLite has one writer at a time: a repeat's claim runs after the first has
committed or rolled back, and either replays its answer or claims the key.

A claim with no answer can only be left by the shop's earlier versions, which committed claims
on their own: the claim statement takes such a row over, and one older than 24 hours is reused.
A claim an earlier version holds uncommitted (during a deploy) takes no advisory lock: a repeat
waits on its row, and answers 409 if that outlasts the statement timeout.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import orjson
from sqlalchemy import BigInteger, Connection, Insert, Select, Update, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from shop.core.errors import Conflict, ValidationFailed
from shop.core.metrics import IDEMPOTENT_REPLAYS
from shop.core.time import utcnow
from shop.extensions import db
from shop.orders.models import IdempotencyKey

KEY_LIFETIME = timedelta(hours=24)
# query_canceled (statement_timeout) and lock_not_available (lock_timeout): a claim stopped waiting on a row.
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

    Conflict (409) while another request holds the key; the caller rolls back after an answer or
    an error. A repeat with another body is a 422.
    """
    params = {"buyer": user_id, "idem_key": key, "fingerprint": request_hash, "now": now, "expired": now - KEY_LIFETIME}
    dialect = connection.dialect.name
    if dialect == "postgresql":
        params["lock_key"] = lock_key(user_id, key)
    try:
        claimed = connection.execute(_claim_statement(dialect), params).scalar()
    except OperationalError as exc:
        if getattr(exc.orig, "pgcode", None) in GAVE_UP_WAITING:
            raise Conflict(IN_FLIGHT) from exc  # a claim taken without the lock held its row past the timeout
        raise
    if claimed is not None:
        return claimed
    # Nothing inserted: the key is held by a running request, or answered (reading it waits on nothing).
    existing = connection.execute(_STORED, params).one_or_none()
    if existing is None or existing.status_code is None or existing.created_at < params["expired"]:
        raise Conflict(IN_FLIGHT)
    if existing.request_hash != request_hash:
        raise ValidationFailed(
            "This Idempotency-Key was used with another request body.",
            {"Idempotency-Key": ["Already used with another body."]},
            location="headers",
        )
    IDEMPOTENT_REPLAYS.inc()
    return Answer(existing.status_code, existing.response_body or b"")


def lock_key(user_id: int, key: str) -> int:
    """The advisory lock of a user's key: a signed 64-bit number, as PostgreSQL's advisory locks take."""
    digest = hashlib.blake2b(f"{user_id}:{key}".encode(), digest_size=8, person=b"idem-key").digest()
    return int.from_bytes(digest, "big", signed=True)


def record(connection: Connection, key_id: int, status_code: int, body: bytes) -> None:
    """Store the answer on the claim, in the transaction that claimed it."""
    connection.execute(_RECORD, {"key_row": key_id, "code": status_code, "body": body})


def purge_expired() -> int:
    result = db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - KEY_LIFETIME))
    db.session.commit()
    return result.rowcount or 0


@cache
def _claim_statement(dialect: str) -> Insert:
    """INSERT the claim; on a key already stored, take it over only when expired or never answered.

    On PostgreSQL the row is the one of `SELECT … WHERE pg_try_advisory_xact_lock(:lock_key)`: no
    row at all, so no conflict to wait on, when another transaction holds the key's lock.
    """
    columns = {
        "user_id": bindparam("buyer", type_=KEYS.c.user_id.type),
        "key": bindparam("idem_key", type_=KEYS.c.key.type),
        "request_hash": bindparam("fingerprint", type_=KEYS.c.request_hash.type),
        "created_at": bindparam("now", type_=KEYS.c.created_at.type),
    }
    if dialect == "postgresql":
        row = select(*columns.values()).where(func.pg_try_advisory_xact_lock(bindparam("lock_key", type_=BigInteger)))
        statement = postgresql.insert(KEYS).from_select(list(columns), row)
    else:
        statement = sqlite.insert(KEYS).values(columns)
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


_STORED: Select[Any] = select(KEYS.c.request_hash, KEYS.c.status_code, KEYS.c.response_body, KEYS.c.created_at).where(
    KEYS.c.user_id == bindparam("buyer"), KEYS.c.key == bindparam("idem_key")
)
_RECORD: Update = (
    update(KEYS)
    .where(KEYS.c.id == bindparam("key_row"))
    .values(status_code=bindparam("code"), response_body=bindparam("body"))
)
