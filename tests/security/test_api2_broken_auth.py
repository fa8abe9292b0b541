"""OWASP API2:2023 Broken Authentication: token faults on every protected operation, credential
brute force, user enumeration at login, and revocations that survive a Redis outage or restart."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pytest
from flask import Flask
from flask_jwt_extended import create_access_token, create_refresh_token

from shop.extensions import db
from shop.users import models as user_models
from shop.users.models import User, UserSession
from tests.conftest import PASSWORD, bearer, token_for
from tests.factories import make_user
from tests.security.conftest import RedisServer, assert_error, concrete, operations

OTHER_SECRET = "an-attackers-guess-at-the-secret-0123456789"


def _encode(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    return f"{_encode({'alg': alg, 'typ': 'JWT'})}.{_encode(claims)}."


def _empty_key_signed(claims: dict[str, Any], **headers: str) -> str:
    """Signed with an empty key, as a server that loaded its key from the `kid` path (/dev/null) would check."""
    signing_input = f"{_encode({'alg': 'HS256', 'typ': 'JWT', **headers})}.{_encode(claims)}"
    signature = hmac.new(b"", signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _claims(app: Flask, user_id: int, **changes: Any) -> dict[str, Any]:
    with app.app_context():
        token = create_access_token(identity=user_id)
    claims = pyjwt.decode(token, options={"verify_signature": False})
    claims.update(changes)
    return claims


def _signed(app: Flask, claims: dict[str, Any], alg: str = "HS256", **headers: Any) -> str:
    return pyjwt.encode(claims, app.config["JWT_SECRET_KEY"], algorithm=alg, headers=headers or None)


def _faults(app: Flask, user_id: int) -> dict[str, dict[str, str]]:
    """Every way an Authorization header can be wrong, by name."""
    claims = _claims(app, user_id)
    with app.app_context():
        refresh = create_refresh_token(identity=user_id)
        expired = create_access_token(identity=user_id, expires_delta=timedelta(seconds=-30))
    return {
        "missing": {},
        "empty": {"Authorization": ""},
        "bearer-without-token": {"Authorization": "Bearer "},
        "basic-scheme": {"Authorization": "Basic " + base64.b64encode(b"alice:" + PASSWORD.encode()).decode()},
        "token-without-scheme": {"Authorization": _signed(app, claims)},
        "garbage": bearer("garbage"),
        "three-empty-parts": bearer(".."),
        "bad-signature": bearer(pyjwt.encode(claims, OTHER_SECRET, algorithm="HS256")),
        "signature-stripped": bearer(_signed(app, claims).rsplit(".", 1)[0] + "."),
        "alg-none": bearer(_unsigned(claims)),
        "alg-None-capitalised": bearer(_unsigned(claims, "None")),
        "alg-HS512-right-secret": bearer(_signed(app, claims, "HS512")),
        "kid-header-injection": bearer(_empty_key_signed(claims, kid="/dev/null")),
        "claims-tampered": bearer(
            _signed(app, claims).split(".")[0]
            + "."
            + _encode({**claims, "sub": "1"})
            + "."
            + _signed(app, claims).split(".")[2]
        ),
        "expired": bearer(expired),
        "not-yet-valid": bearer(_signed(app, {**claims, "nbf": claims["iat"] + 3600})),
        "refresh-as-access": bearer(refresh),
        "unknown-user": bearer(_signed(app, _claims(app, 999_999))),
    }


def _assert_401(response: Any) -> None:
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def _protected(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path) of every operation that requires a token, from the OpenAPI document."""
    return [
        (method, concrete(path))
        for method, path, operation in operations(spec)
        if operation.get("security") == [{"bearerAuth": []}]
    ]


def test_the_document_marks_the_protected_operations(spec):
    protected = _protected(spec)

    assert ("get", "/api/users/me/") in protected and ("post", "/api/orders/") in protected
    assert ("post", "/api/products/") in protected and ("get", "/api/orders/emails/") in protected
    assert ("post", "/api/token/") not in protected and ("get", "/api/products/") not in protected


def test_every_token_fault_is_401_on_every_protected_operation(app, client, spec, user):
    faults = _faults(app, user.id)

    for method, path in _protected(spec):
        for name, headers in faults.items():
            response = client.open(path, method=method.upper(), headers=headers, json={})
            assert response.status_code == 401, (method, path, name, response.get_json())
            _assert_401(response)


def test_revoked_and_deactivated_tokens_are_401_everywhere(app, client, spec, user):
    pair = token_for(client, "alice")
    assert client.post("/api/token/revoke/", headers=bearer(pair["access"])).status_code == 204
    with app.app_context():
        bob = make_user(username="bob", password=PASSWORD)
    bob_token = token_for(client, "bob")["access"]
    with app.app_context():
        db.session.get(User, bob.id).is_active = False
        db.session.commit()

    for method, path in _protected(spec):
        for token in (pair["access"], bob_token):
            _assert_401(client.open(path, method=method.upper(), headers=bearer(token), json={}))


def test_tokens_carry_no_personal_data_and_expire_as_configured(app, client, user):
    pair = token_for(client, "alice")
    access = pyjwt.decode(pair["access"], options={"verify_signature": False})
    refresh = pyjwt.decode(pair["refresh"], options={"verify_signature": False})

    assert set(access) <= {"fresh", "iat", "jti", "type", "sub", "nbf", "csrf", "exp", "sid"}
    assert access["sub"] == str(user.id) and "alice" not in json.dumps(access)
    assert access["exp"] - int(access["iat"]) == 15 * 60  # iat to the microsecond (RFC 7519 NumericDate)
    assert refresh["exp"] - int(refresh["iat"]) == 7 * 24 * 3600
    assert pyjwt.get_unverified_header(pair["access"])["alg"] == "HS256"


def test_a_spent_refresh_token_cannot_be_replayed(client, user):
    pair = token_for(client, "alice")
    assert client.post("/api/token/refresh/", json={"refresh": pair["refresh"]}).status_code == 200

    _assert_401(client.post("/api/token/refresh/", json={"refresh": pair["refresh"]}))


def test_an_access_token_cannot_refresh(client, user):
    pair = token_for(client, "alice")

    _assert_401(client.post("/api/token/refresh/", json={"refresh": pair["access"]}))


def test_no_password_or_hash_ever_leaves_the_server(client, user, staff_headers):
    secret = "unique-Pass-phrase-31337"
    registration = {"username": "newbie", "email": "newbie@example.com", "password": secret, "password2": secret}
    answers = [
        client.post("/api/users/", json=registration),
        client.post("/api/users/", json={**registration, "password2": secret + "x"}),
        client.post("/api/users/", json={**registration, "username": "other", "email": "o@example.com"}),
        client.post("/api/token/", json={"username": "newbie", "password": secret + "x"}),
        client.get("/api/users/", headers=staff_headers),
        client.get("/api/users/me/", headers=bearer(token_for(client, "newbie", secret)["access"])),
    ]

    for response in answers:
        text = response.get_data(as_text=True)
        assert secret not in text and "password_hash" not in text and "scrypt" not in text and "pbkdf2" not in text


# Login must not tell an unknown username from a wrong password.


@pytest.fixture
def hash_checks(monkeypatch) -> list[str]:
    """Every password hash the server checks, by method (`pbkdf2:sha256:1000`), counted as it happens."""
    checked: list[str] = []
    real = user_models.check_password_hash

    def counting(pwhash: str, password: str) -> bool:
        checked.append(pwhash.split("$", 1)[0])
        return real(pwhash, password)

    monkeypatch.setattr(user_models, "check_password_hash", counting)
    return checked


def test_login_answers_the_same_and_hashes_the_same_for_every_failure(app, client, user, hash_checks):
    with app.app_context():
        make_user(username="dormant", password=PASSWORD, is_active=False)
    attempts = {
        "unknown user": {"username": "nobody-here", "password": PASSWORD},
        "wrong password": {"username": "alice", "password": PASSWORD + "x"},
        "inactive user": {"username": "dormant", "password": PASSWORD},
    }
    answers = {}
    for name, credentials in attempts.items():
        before = len(hash_checks)
        response = client.post("/api/token/", json=credentials)
        answers[name] = (response.status_code, response.get_data(as_text=True), tuple(sorted(response.headers.keys())))
        assert hash_checks[before:] == [app.config["PASSWORD_HASH_METHOD"]], name

    assert len(set(answers.values())) == 1, answers
    assert answers["unknown user"][0] == 401


# Brute force on the endpoints that check a password (the login's own limit: test_ratelimits.py).


def test_old_password_guesses_are_limited_per_user_from_any_ip(limited_app, user):
    client = limited_app(RATELIMIT_AUTH="2/minute", RATELIMIT_USER="100/minute").test_client()
    headers = bearer(token_for(client, "alice")["access"])
    guess = {"old_password": "guess-1234", "new_password": "n3w-pass-word", "new_password2": "n3w-pass-word"}

    statuses = [
        client.post("/api/users/me/password/", json=guess, headers=headers, environ_base={"REMOTE_ADDR": ip})
        for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3")
    ]

    assert [response.status_code for response in statuses[:2]] == [422, 422]
    assert_error(statuses[2], 429)
    assert "Retry-After" in statuses[2].headers


# Ended sessions stay ended: the database is the truth, Redis only the fast path.


def _revoke(client: Any, pair: dict[str, str]) -> None:
    response = client.post("/api/token/revoke/", headers=bearer(pair["access"]), json={"refresh": pair["refresh"]})
    assert response.status_code == 204


def _me(client: Any, token: str) -> int:
    return client.get("/api/users/me/", headers=bearer(token)).status_code


def _ready_marker(server: RedisServer) -> bool:
    return any(key.endswith(b"sessions-ended:ready") for key in server.client(4).scan_iter())


def _wait_for_ready_marker(server: RedisServer) -> None:
    """The refill runs in a background thread of the process: wait for it (up to 10 s) as a client would."""
    deadline = time.monotonic() + 10
    while not _ready_marker(server):
        assert time.monotonic() < deadline, "Redis was not refilled"
        time.sleep(0.02)


def test_a_revoked_token_stays_revoked_while_redis_is_down(redis_app, private_redis, user):
    client = redis_app.test_client()
    revoked, valid = token_for(client, "alice"), token_for(client, "alice")
    _revoke(client, revoked)
    assert _me(client, revoked["access"]) == 401
    _wait_for_ready_marker(private_redis)

    private_redis.stop()

    assert _me(client, revoked["access"]) == 401
    _assert_401(client.post("/api/token/refresh/", json={"refresh": revoked["refresh"]}))
    assert _me(client, valid["access"]) == 200


def test_a_revoked_token_stays_revoked_after_redis_restarts_empty(redis_app, private_redis, user):
    client = redis_app.test_client()
    revoked, valid = token_for(client, "alice"), token_for(client, "alice")
    _revoke(client, revoked)
    assert _me(client, valid["access"]) == 200

    private_redis.stop()
    private_redis.start()  # no persistence: every key, the ready marker included, is gone

    assert _me(client, revoked["access"]) == 401  # the database answers while Redis is not known complete
    assert _me(client, valid["access"]) == 200
    _wait_for_ready_marker(private_redis)  # refilled by a thread of the process, not by the request
    assert _me(client, revoked["access"]) == 401


def test_a_logout_during_a_redis_outage_holds_once_redis_is_back(redis_app, private_redis, user):
    client = redis_app.test_client()
    pair = token_for(client, "alice")
    assert _me(client, pair["access"]) == 200

    private_redis.stop()
    _revoke(client, pair)
    assert _me(client, pair["access"]) == 401
    private_redis.start()

    assert _me(client, pair["access"]) == 401
    _assert_401(client.post("/api/token/refresh/", json={"refresh": pair["refresh"]}))


def test_a_logout_redis_missed_while_frozen_holds_once_redis_answers_again(redis_app, private_redis, user):
    """Redis keeps its keys (and its ready marker) but missed one revocation: it must not be trusted as is."""
    client = redis_app.test_client()
    pair = token_for(client, "alice")
    assert _me(client, pair["access"]) == 200
    _wait_for_ready_marker(private_redis)

    private_redis.pause()
    try:
        _revoke(client, pair)  # written to the database; the copy to Redis times out
        assert _me(client, pair["access"]) == 401
    finally:
        private_redis.resume()

    assert _me(client, pair["access"]) == 401
    _wait_for_ready_marker(private_redis)
    assert any(b"session-ended:" + pair_sid(pair).encode() in key for key in private_redis.client(4).scan_iter())


def pair_sid(pair: dict[str, str]) -> str:
    return pyjwt.decode(pair["access"], options={"verify_signature": False})["sid"]


def test_ended_sessions_are_rows_in_the_database(redis_app, user):
    client = redis_app.test_client()
    pair = token_for(client, "alice")
    _revoke(client, pair)

    with redis_app.app_context():
        assert db.session.get(UserSession, pair_sid(pair)).ended_at is not None
