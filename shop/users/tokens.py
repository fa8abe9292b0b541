"""Token pairs, rotation and revocation: the database holds revocations durably, Redis is the fast path."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from flask import current_app, has_request_context, request
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from sqlalchemy import Integer, Select, bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from shop.core.auth import checks_token
from shop.core.errors import Unauthenticated
from shop.core.time import utcnow
from shop.extensions import cache, db
from shop.infra import roundtrip
from shop.infra.app import current_handler
from shop.infra.jwt import bearer_claims
from shop.users.models import Account, RevokedToken, User

logger = logging.getLogger(__name__)

# Set in Redis once every unexpired revocation has been copied there; gone after a Redis restart.
_READY_KEY = "revoked:ready"
# A revocation of this process could not be copied to Redis (a timeout, an outage): until the ready
# marker is dropped, other processes would trust a Redis that lacks it.
_redis_missed_a_revocation = False
# What the request's round trip answered for its token: (jti, [revoked, ready] or the error).
_PREFETCHED = "shop.tokens.revocation"


class TokenRejected(Unauthenticated):
    """A token that is well-formed but may not be used."""


def issue_pair(user: User | Account) -> dict[str, str]:
    return {"access": create_access_token(identity=user.id), "refresh": create_refresh_token(identity=user.id)}


def rotate(refresh_claims: dict[str, Any]) -> dict[str, str]:
    """Spend a refresh token and issue a new pair; a token already spent is refused, even concurrently."""
    user = load_active_user(refresh_claims)
    if user is None:
        raise TokenRejected("The token's user is not active.")
    if not _record_revocation(refresh_claims):
        raise TokenRejected("The refresh token has already been used.")
    return issue_pair(user)


def revoke(access_claims: dict[str, Any], refresh_token: str | None) -> None:
    """Log out: revoke the access token, and the caller's refresh token when given."""
    claims = [access_claims]
    if refresh_token:
        try:
            refresh_claims = decode_token(refresh_token)
        except Exception as exc:
            raise TokenRejected("The refresh token is invalid.") from exc
        if refresh_claims.get("type") != "refresh" or refresh_claims["sub"] != access_claims["sub"]:
            raise TokenRejected("The refresh token is invalid.")
        claims.append(refresh_claims)
    for item in claims:
        _record_revocation(item)


def is_revoked(jti: str) -> bool:
    global _redis_missed_a_revocation
    if _redis_backed():
        try:
            if _redis_missed_a_revocation:
                cache.delete(_READY_KEY)  # every process refills Redis from the database on its next check
                _redis_missed_a_revocation = False
            prefetched = request.environ.get(_PREFETCHED) if has_request_context() else None
            if prefetched is not None and prefetched[0] == jti and not isinstance(prefetched[1], Exception):
                revoked, ready = (value is not None for value in prefetched[1])
            else:
                revoked, ready = cache.get_many(f"revoked:{jti}", _READY_KEY)
            if revoked:
                return True
            if ready:
                return False
            _warm_cache()
        except Exception:  # noqa: BLE001 - Redis down: the database answers instead
            logger.warning("token blocklist cache unavailable; checking the database")
    return db.session.get(RevokedToken, jti) is not None


def prefetch_revocation() -> None:
    """Before a view that checks the access token: its revocation asked in the request's Redis round trip.

    The keys and values are the cache's (`revoked:<jti>` and the ready marker, under
    CACHE_KEY_PREFIX); `is_revoked` reads the answer instead of a round trip of its own, and asks
    Redis itself when there is none (another token, Redis failed, no hook ran).
    """
    if not _redis_backed() or _redis_missed_a_revocation or not checks_token(current_handler()):
        return
    claims = bearer_claims()
    if not claims or "jti" not in claims:
        return
    config = current_app.config
    client = roundtrip.client(current_app, config["REDIS_URL"], config.get("CACHE_OPTIONS") or {})
    prefix = config.get("CACHE_KEY_PREFIX", "")
    jti = claims["jti"]
    environ = request.environ

    def answered(answer: Any) -> None:
        environ[_PREFETCHED] = (jti, answer)

    roundtrip.defer(client, answered, "MGET", f"{prefix}revoked:{jti}", prefix + _READY_KEY)


def load_active_user(claims: dict[str, Any]) -> Account | None:
    """The token's user as an `Account`, or None when it is gone or deactivated: one prebuilt Core read.

    Every authenticated request makes it, so it skips the ORM (an identity-map load costs about three
    times a Core row here); a view that changes the user loads the model (`services.user_of`).
    """
    row = db.session.connection().execute(_account_statement(), {"id": int(claims["sub"])}).first()
    return Account(*row) if row is not None else None


@lru_cache(maxsize=1)
def _account_statement() -> Select[Any]:
    columns = [getattr(User, name) for name in Account._fields]
    return select(*columns).where(User.id == bindparam("id", type_=Integer), User.is_active.is_(True))


def purge_expired() -> int:
    """Drop revocations of tokens that have expired anyway; returns how many."""
    result = db.session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
    db.session.commit()
    return result.rowcount or 0


def _record_revocation(claims: dict[str, Any]) -> bool:
    """Store the revocation; False when the token was revoked already."""
    global _redis_missed_a_revocation
    expires_at = datetime.fromtimestamp(claims["exp"], UTC)
    db.session.add(RevokedToken(jti=claims["jti"], expires_at=expires_at))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return False
    if _redis_backed():
        try:
            cache.set(f"revoked:{claims['jti']}", 1, timeout=_seconds_left(expires_at))
        except Exception:  # noqa: BLE001 - the database row is what counts
            logger.warning("could not copy a revocation to Redis; it will be refilled from the database")
            _redis_missed_a_revocation = True
    return True


def _warm_cache() -> None:
    now = utcnow()
    rows = db.session.scalars(db.select(RevokedToken).where(RevokedToken.expires_at > now)).all()
    for row in rows:
        cache.set(f"revoked:{row.jti}", 1, timeout=_seconds_left(row.expires_at))
    cache.set(_READY_KEY, 1, timeout=0)


def _seconds_left(expires_at: datetime) -> int:
    return max(1, int((expires_at - utcnow()).total_seconds()) + 1)


def _redis_backed() -> bool:
    return current_app.config["REDIS_URL"] is not None
