"""Idempotency-Key: the first answer to a request is stored per user and replayed to its repeats.

A key is claimed in its own short transaction (the unique constraint on user and key decides
between concurrent requests); the write it guards stores its answer on the claim inside the
write's own transaction, so an answer is stored exactly when the write is committed.

While the guarded write runs, its transaction holds the claim's row lock (`hold`). A repeat that
finds the claim unanswered and unlocked knows that no request is working on it any more (its
process died, or lost the database, before it could release the key), and takes the claim over
at once on PostgreSQL instead of answering 409 until the claim is old. Each claim carries a token
(the time it was taken); the write checks the token under the lock, so a request whose claim was
taken over can never store an answer or write a second order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from shop.core.errors import Conflict, ValidationFailed
from shop.core.metrics import IDEMPOTENT_REPLAYS
from shop.core.time import utcnow
from shop.extensions import db
from shop.orders.models import IdempotencyKey

KEY_LIFETIME = timedelta(hours=24)
# Without row locks (SQLite), a claim with no answer after this long belongs to a request that died.
ABANDONED_AFTER = timedelta(seconds=60)
# With row locks (PostgreSQL), an unlocked claim this old is abandoned: the grace covers the moment
# between the claim's commit and its write taking the lock.
UNLOCKED_ABANDONED_AFTER = timedelta(seconds=1)
LOCK_NOT_AVAILABLE = "55P03"
IN_FLIGHT = "A request with this Idempotency-Key is still being processed; retry shortly."


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as bytes: a stored one replayed to a repeat, or the first one."""

    status_code: int
    body: bytes
    replayed: bool = True


@dataclass(frozen=True)
class Claim:
    """A key this request holds until its write commits with an answer, or releases it.

    `token` is the claim's time as stored: a takeover changes it, and the write checks it.
    """

    id: int
    token: datetime


class ClaimLost(Conflict):
    """Another request took this claim over: this one must not write."""


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
            claimed = Claim(row.id, row.created_at)
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
    raise Conflict(IN_FLIGHT)


def _answer(existing: IdempotencyKey, request_hash: str) -> Claim | Answer:
    """The stored answer to a repeat, or the key itself when its first request died unanswered."""
    if existing.request_hash != request_hash:
        raise ValidationFailed(
            "This Idempotency-Key was used with another request body.",
            {"headers": {"Idempotency-Key": ["Already used with another body."]}},
        )
    if existing.status_code is None:
        taken = _take_over_abandoned(existing.id)
        if taken is not None:
            return taken
        raise Conflict(IN_FLIGHT)
    IDEMPOTENT_REPLAYS.inc()
    return Answer(existing.status_code, existing.response_body or b"")


def hold(claimed: Claim) -> None:
    """First thing in the guarded write's transaction: lock the claim, and check it is still ours.

    The lock tells a repeat that this request is alive (see `_take_over_abandoned`).
    """
    token = db.session.scalar(
        select(IdempotencyKey.created_at)
        .where(IdempotencyKey.id == claimed.id, IdempotencyKey.status_code.is_(None))
        .with_for_update()
    )
    if token != claimed.token:
        raise ClaimLost(IN_FLIGHT)


def record(claimed: Claim, status_code: int, body: bytes) -> None:
    """Store the answer on the claim, in the caller's open transaction, if the claim is still ours."""
    result = db.session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.id == claimed.id,
            IdempotencyKey.created_at == claimed.token,
            IdempotencyKey.status_code.is_(None),
        )
        .values(status_code=status_code, response_body=body)
    )
    if result.rowcount != 1:
        raise ClaimLost(IN_FLIGHT)


def release(claimed: Claim) -> None:
    """The guarded write failed and changed nothing: free the key so the client may retry with it.

    Only the claim as this request took it: one taken over, or answered, is not this request's to free.
    """
    db.session.rollback()
    db.session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.id == claimed.id,
            IdempotencyKey.created_at == claimed.token,
            IdempotencyKey.status_code.is_(None),
        )
    )
    db.session.commit()


def purge_expired() -> int:
    result = db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - KEY_LIFETIME))
    db.session.commit()
    return result.rowcount or 0


def _delete(row_id: int) -> None:
    db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id))
    db.session.commit()


def _take_over_abandoned(row_id: int) -> Claim | None:
    """The claim, renewed for this request, when no request is working on it any more; else None.

    PostgreSQL: the claim's row lock is held by the write of a live request, so an unlocked
    claim past a short grace is abandoned. Without row locks: a claim past ABANDONED_AFTER.
    """
    now = utcnow()
    locks = db.session.get_bind().dialect.name == "postgresql"
    row_query = (
        select(IdempotencyKey)
        .where(IdempotencyKey.id == row_id, IdempotencyKey.status_code.is_(None))
        .execution_options(populate_existing=True)
    )
    try:
        row = db.session.scalar(row_query.with_for_update(nowait=True) if locks else row_query)
    except OperationalError as exc:
        db.session.rollback()
        if getattr(exc.orig, "pgcode", None) == LOCK_NOT_AVAILABLE:
            return None  # a live request holds it
        raise
    if row is None or row.created_at >= now - (UNLOCKED_ABANDONED_AFTER if locks else ABANDONED_AFTER):
        db.session.rollback()
        return None
    row.created_at = now
    db.session.commit()
    return Claim(row_id, now)
