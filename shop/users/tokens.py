"""Sessions and their tokens: sign-in, rotation (RFC 9700), ending; PostgreSQL holds them, Redis is the fast path.

A sign-in starts a session (a `UserSession` row): a family of one refresh token at a time and the
access tokens issued beside it, every one carrying the session's id as `sid`. No token outlives the
session's absolute end (`SESSION_MAX_DAYS`). Refreshing spends the refresh token and issues a new
pair; presenting a refresh token of the family that was already spent is reuse (RFC 9700 4.14.2):
the whole session ends. Logout ends the caller's session; a password change ends every other one.

The per-request check (`is_revoked`) is one Redis MGET, as before sessions, sent in the request's
one round trip to Redis (`prefetch_revocation`): the session's ended marker and
`sessions-ended:ready`, which says Redis holds every ended session that has not expired.
Without that marker (Redis restarted or missed a copy) the database answers for this token (one
primary-key read) and a background thread, never a request, refills Redis. "Log out everywhere",
an admin's password reset and deactivation set the user's `tokens_valid_after`, which the token
check compares with the token's `iat` on the Account row it reads anyway: no extra round trip.
A token without `sid` (made by tools and tests) is a session of its own, named by its `jti`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

from flask import Flask, current_app, has_request_context, request
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from sqlalchemy import Integer, Select, bindparam, delete, select, update

from shop.core.auth import checks_token, unauthorized
from shop.core.errors import Unauthenticated
from shop.core.time import utcnow
from shop.extensions import cache, db, jwt
from shop.infra import roundtrip
from shop.infra.app import current_handler
from shop.infra.jwt import bearer_claims
from shop.users.models import Account, User, UserSession

logger = logging.getLogger(__name__)

# Set in Redis once every ended, unexpired session has been copied there; gone after a Redis restart.
_READY_KEY = "sessions-ended:ready"
# Held by the one process refilling Redis, so a restart does not make every process read the table.
_REFILL_LOCK = "sessions-ended:refilling"
# A session end of this process could not be copied to Redis (a timeout, an outage): until the ready
# marker is dropped, other processes would trust a Redis that lacks it.
_redis_missed_an_end = False
_refilling = threading.Lock()
# What the request's round trip answered for its token: (session id, [ended, ready] or the error).
_PREFETCHED = "shop.tokens.session"


class TokenRejected(Unauthenticated):
    """A token that is well-formed but may not be used."""


def session_id(claims: dict[str, Any]) -> str:
    """The session a token belongs to: its `sid`, or for a token made outside a sign-in, its own `jti`."""
    return claims.get("sid") or claims["jti"]


def _ended_key(sid: str) -> str:
    return f"session-ended:{sid}"


def start_session(user: User | Account) -> dict[str, str]:
    """Sign-in: a new session of `SESSION_MAX_DAYS` and its first token pair."""
    now = utcnow()
    session = UserSession(
        id=uuid.uuid4().hex,
        user_id=user.id,
        refresh_jti=str(uuid.uuid4()),
        created_at=now,
        expires_at=now + current_app.config["SESSION_MAX_AGE"],
    )
    db.session.add(session)
    db.session.commit()
    return _pair(user.id, session.id, session.refresh_jti, session.expires_at)


def _pair(user_id: int, sid: str, refresh_jti: str, session_end: datetime) -> dict[str, str]:
    """An access and a refresh token of the session, neither outliving it; `iat` to the microsecond
    (a NumericDate may be fractional, RFC 7519 2), so a token issued just after a "log out everywhere"
    is told from one issued just before it."""
    config = current_app.config
    now = utcnow()
    claims = {"sid": sid, "iat": now.timestamp()}
    access_for = min(config["JWT_ACCESS_TOKEN_EXPIRES"], session_end - now)
    refresh_for = min(config["JWT_REFRESH_TOKEN_EXPIRES"], session_end - now)
    return {
        "access": create_access_token(identity=user_id, additional_claims=claims, expires_delta=access_for),
        "refresh": create_refresh_token(
            identity=user_id, additional_claims={**claims, "jti": refresh_jti}, expires_delta=refresh_for
        ),
    }


def rotate(refresh_claims: dict[str, Any]) -> dict[str, str]:
    """Spend a refresh token and issue a new pair; reuse of a spent one ends its whole session."""
    user = load_active_user(refresh_claims)
    if user is None:
        raise TokenRejected("The token's user is not active.")
    sid = refresh_claims.get("sid")
    if sid is None:
        raise TokenRejected("This refresh token belongs to no session; sign in again.")
    new_jti = str(uuid.uuid4())
    now = utcnow()
    spent = db.session.execute(
        update(UserSession)
        .where(
            UserSession.id == sid,
            UserSession.refresh_jti == refresh_claims["jti"],
            UserSession.ended_at.is_(None),
            UserSession.expires_at > now,
        )
        .values(refresh_jti=new_jti)
        .returning(UserSession.expires_at)
    ).first()
    db.session.commit()
    if spent is None:
        # Another refresh token of the family is current: this one was spent before (stolen and
        # replayed, or replayed by a thief after the owner refreshed). The session ends for both.
        end_sessions([sid])
        raise TokenRejected("The refresh token has already been used; the session has ended.")
    return _pair(user.id, sid, new_jti, spent.expires_at)


def logout(access_claims: dict[str, Any], refresh_token: str | None) -> None:
    """End the caller's session, and the refresh token's session when given (it must be the caller's)."""
    sids = [session_id(access_claims)]
    if refresh_token:
        try:
            refresh_claims = decode_token(refresh_token)
        except Exception as exc:
            raise TokenRejected("The refresh token is invalid.") from exc
        if refresh_claims.get("type") != "refresh" or refresh_claims["sub"] != access_claims["sub"]:
            raise TokenRejected("The refresh token is invalid.")
        sids.append(session_id(refresh_claims))
    end_sessions(sids, user_id=int(access_claims["sub"]))


def end_other_sessions(user_id: int, keep: dict[str, Any]) -> None:
    """End every session of the user but the one of these claims (a password change)."""
    now = utcnow()
    sids = db.session.scalars(
        select(UserSession.id).where(
            UserSession.user_id == user_id,
            UserSession.ended_at.is_(None),
            UserSession.expires_at > now,
            UserSession.id != session_id(keep),
        )
    ).all()
    end_sessions(list(sids))


def end_all_sessions(user: User) -> None:
    """Every token of the user issued until now is refused (log out everywhere, reset, deactivation).

    The caller commits: the user's `tokens_valid_after` is what the token check reads."""
    now = utcnow()
    user.tokens_valid_after = now
    db.session.execute(
        update(UserSession).where(UserSession.user_id == user.id, UserSession.ended_at.is_(None)).values(ended_at=now)
    )


def end_sessions(sids: list[str], user_id: int | None = None) -> None:
    """End these sessions durably (a row each), then mark them ended in Redis."""
    global _redis_missed_an_end
    if not sids:
        return
    now = utcnow()
    known = {
        row.id: row for row in db.session.scalars(select(UserSession).where(UserSession.id.in_(sids)).with_for_update())
    }
    for sid in sids:
        row = known.get(sid)
        if row is None:  # a token made outside a sign-in: its session is recorded as it ends
            if user_id is None:
                continue
            row = known[sid] = UserSession(
                id=sid,
                user_id=user_id,
                refresh_jti="",
                created_at=now,
                expires_at=now + current_app.config["JWT_REFRESH_TOKEN_EXPIRES"],
            )
            db.session.add(row)
        if row.ended_at is None:
            row.ended_at = now
    ends = {sid: row.expires_at for sid, row in known.items()}
    db.session.commit()
    if not _redis_backed():
        return
    try:
        for sid, expires_at in ends.items():
            cache.set(_ended_key(sid), 1, timeout=_seconds_left(expires_at))
    except Exception:  # noqa: BLE001 - the database row is what counts
        logger.warning("could not copy a session's end to Redis; it will be refilled from the database")
        _redis_missed_an_end = True


def is_revoked(claims: dict[str, Any]) -> bool:
    """Whether the token's session has ended: one Redis MGET; the database while Redis is not known complete."""
    global _redis_missed_an_end
    sid = session_id(claims)
    if _redis_backed():
        try:
            if _redis_missed_an_end:
                cache.delete(_READY_KEY)  # every process reads the database until Redis is refilled
                _redis_missed_an_end = False
            prefetched = request.environ.get(_PREFETCHED) if has_request_context() else None
            if prefetched is not None and prefetched[0] == sid and not isinstance(prefetched[1], Exception):
                ended, ready = (value is not None for value in prefetched[1])
            else:
                ended, ready = cache.get_many(_ended_key(sid), _READY_KEY)
            if ended:
                return True
            if ready:
                return False
            start_refill(current_app._get_current_object())  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - Redis down: the database answers instead
            logger.warning("session cache unavailable; checking the database")
    return db.session.scalar(_ended_statement(), {"id": sid}) is not None


def prefetch_revocation() -> None:
    """Before a view that checks the access token: its session's end asked in the request's Redis round trip.

    The keys and values are the cache's (`session-ended:<sid>` and the ready marker, under
    CACHE_KEY_PREFIX); `is_revoked` reads the answer instead of a round trip of its own, and asks
    Redis itself when there is none (another token, Redis failed, no hook ran).
    """
    if not _redis_backed() or _redis_missed_an_end or not checks_token(current_handler()):
        return
    claims = bearer_claims()
    if not claims or "jti" not in claims:
        return
    config = current_app.config
    client = roundtrip.client(current_app, config["REDIS_URL"], config.get("CACHE_OPTIONS") or {})
    prefix = config.get("CACHE_KEY_PREFIX", "")
    sid = session_id(claims)
    environ = request.environ

    def answered(answer: Any) -> None:
        environ[_PREFETCHED] = (sid, answer)

    roundtrip.defer(client, answered, "MGET", prefix + _ended_key(sid), prefix + _READY_KEY)


@lru_cache(maxsize=1)
def _ended_statement() -> Select[Any]:
    return select(UserSession.ended_at).where(UserSession.id == bindparam("id"), UserSession.ended_at.is_not(None))


def load_active_user(claims: dict[str, Any]) -> Account | None:
    """The token's user as an `Account`, or None when it is gone, deactivated, or the token was issued
    before the user's `tokens_valid_after`: one prebuilt Core read.

    Every authenticated request makes it, so it skips the ORM (an identity-map load costs about three
    times a Core row here); a view that changes the user loads the model (`services.user_of`).
    """
    row = db.session.connection().execute(_account_statement(), {"id": int(claims["sub"])}).first()
    if row is None:
        return None
    account = Account(*row)
    valid_after = account.tokens_valid_after
    if valid_after is not None and float(claims.get("iat", 0)) <= valid_after.timestamp():
        return None
    return account


@lru_cache(maxsize=1)
def _account_statement() -> Select[Any]:
    columns = [getattr(User, name) for name in Account._fields]
    return select(*columns).where(User.id == bindparam("id", type_=Integer), User.is_active.is_(True))


def purge_expired() -> int:
    """Drop sessions past their absolute end (no token of theirs can be valid); returns how many."""
    result = db.session.execute(delete(UserSession).where(UserSession.expires_at < utcnow()))
    db.session.commit()
    return result.rowcount or 0


def start_refill(app: Flask) -> None:
    """Refill Redis with the ended sessions in a thread of this process, at most one at a time."""
    if not _refilling.acquire(blocking=False):
        return
    thread = threading.Thread(target=_refill_in_thread, args=(app,), name="sessions-refill", daemon=True)
    thread.start()


def _refill_in_thread(app: Flask) -> None:
    try:
        with app.app_context():
            try:
                refill_redis()
            finally:
                db.session.remove()
    except Exception:
        logger.warning("refilling ended sessions into Redis failed", exc_info=True)
    finally:
        _refilling.release()


def refill_redis() -> bool:
    """Copy every ended, unexpired session to Redis and set the ready marker; False if another process is at it."""
    if not cache.add(_REFILL_LOCK, 1, timeout=60):  # SET NX: one refilling process at a time
        return False
    try:
        started = time.monotonic()
        rows = db.session.execute(
            select(UserSession.id, UserSession.expires_at).where(
                UserSession.ended_at.is_not(None), UserSession.expires_at > utcnow()
            )
        ).all()
        db.session.rollback()
        for sid, expires_at in rows:
            cache.set(_ended_key(sid), 1, timeout=_seconds_left(expires_at))
        cache.set(_READY_KEY, 1, timeout=0)
        logger.info("refilled %d ended sessions into Redis in %.3f s", len(rows), time.monotonic() - started)
        return True
    finally:
        cache.delete(_REFILL_LOCK)


def _seconds_left(expires_at: datetime) -> int:
    return max(1, int((expires_at - utcnow()).total_seconds()) + 1)


def _redis_backed() -> bool:
    return current_app.config["REDIS_URL"] is not None


def register_token_handlers(app: Flask) -> None:
    """Answer every token fault with 401 and `WWW-Authenticate: Bearer` (never the default 422)."""
    jwt.unauthorized_loader(lambda reason: unauthorized("Authentication required: send a Bearer token."))
    jwt.invalid_token_loader(lambda reason: unauthorized("The token is invalid."))
    jwt.expired_token_loader(lambda header, payload: unauthorized("The token has expired."))
    jwt.revoked_token_loader(lambda header, payload: unauthorized("The token has been revoked."))
    jwt.needs_fresh_token_loader(lambda header, payload: unauthorized("A fresh token is required."))
    jwt.token_verification_failed_loader(lambda header, payload: unauthorized("The token is invalid."))
    jwt.user_lookup_error_loader(
        lambda header, payload: unauthorized("The token's user is not active, or its session has ended.")
    )
    jwt.token_in_blocklist_loader(lambda header, payload: is_revoked(payload))
    jwt.user_identity_loader(lambda user_id: str(user_id))
    jwt.user_lookup_loader(lambda header, payload: load_active_user(payload))
    app.before_request(prefetch_revocation)  # the blocklist asked in the request's Redis round trip
