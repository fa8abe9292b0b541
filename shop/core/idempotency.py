"""Idempotency-Key: the first answer to a request is stored per user and replayed to its repeats.

A key is claimed in its own short transaction (the unique constraint on user and key decides
between concurrent requests); the write it guards stores its answer on the claim inside the
write's own transaction, so an answer is stored exactly when the write is committed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from shop.core.errors import Conflict, ValidationFailed
from shop.core.metrics import IDEMPOTENT_REPLAYS
from shop.core.time import utcnow
from shop.extensions import db
from shop.orders.models import IdempotencyKey

KEY_LIFETIME = timedelta(hours=24)
# A claim with no answer after this long belongs to a request that died; its transaction rolled back.
ABANDONED_AFTER = timedelta(seconds=60)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as bytes: a stored one replayed to a repeat, or the first one."""

    status_code: int
    body: bytes
    replayed: bool = True


@dataclass(frozen=True)
class Claim:
    """A key this request holds until its write commits with an answer, or releases it."""

    id: int


def fingerprint(payload: Any) -> str:
    """The same JSON content gives the same fingerprint, whatever its key order or spacing."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def claim(user_id: int, key: str, request_hash: str) -> Claim | Answer:
    """Claim `key` for this request, or return the stored answer of the request that claimed it.

    The claim commits at once, on the request's own connection: a request never holds one
    pooled connection while it waits for another.
    """
    for _ in range(3):
        row = IdempotencyKey(user_id=user_id, key=key, request_hash=request_hash, created_at=utcnow())
        db.session.add(row)
        try:
            db.session.flush()
            claimed = Claim(row.id)
            db.session.commit()
            return claimed
        except IntegrityError:
            db.session.rollback()
        existing = db.session.scalar(
            select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        )
        if existing is None:
            continue  # released or expired meanwhile: claim again
        if existing.created_at < utcnow() - KEY_LIFETIME:
            _delete(existing.id)
            continue
        return _answer(existing, request_hash)
    raise Conflict("A request with this Idempotency-Key is still being processed; retry shortly.")


def _answer(existing: IdempotencyKey, request_hash: str) -> Claim | Answer:
    """The stored answer to a repeat, or the key itself when its first request died unanswered."""
    if existing.request_hash != request_hash:
        raise ValidationFailed(
            "This Idempotency-Key was used with another request body.",
            {"headers": {"Idempotency-Key": ["Already used with another body."]}},
        )
    if existing.status_code is None:
        if _take_over_abandoned(existing.id):
            return Claim(existing.id)
        raise Conflict("A request with this Idempotency-Key is still being processed; retry shortly.")
    IDEMPOTENT_REPLAYS.inc()
    return Answer(existing.status_code, existing.response_body or b"")


def record(claimed: Claim, status_code: int, body: bytes) -> None:
    """Store the answer on the claim, in the caller's open transaction."""
    db.session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == claimed.id)
        .values(status_code=status_code, response_body=body)
    )


def release(claimed: Claim) -> None:
    """The guarded write failed and changed nothing: free the key so the client may retry with it."""
    db.session.rollback()
    _delete(claimed.id)


def purge_expired() -> int:
    result = db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - KEY_LIFETIME))
    db.session.commit()
    return result.rowcount or 0


def _delete(row_id: int) -> None:
    db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id))
    db.session.commit()


def _take_over_abandoned(row_id: int) -> bool:
    now = utcnow()
    result = db.session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.id == row_id,
            IdempotencyKey.status_code.is_(None),
            IdempotencyKey.created_at < now - ABANDONED_AFTER,
        )
        .values(created_at=now)
    )
    db.session.commit()
    return result.rowcount == 1
