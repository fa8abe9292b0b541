"""Look-alike usernames cannot coexist: unique after NFKC and case folding, mixed-script look-alikes refused."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from flask_migrate import upgrade
from sqlalchemy import text

from shop import create_app
from shop.extensions import db, migrate
from tests.conftest import PASSWORD, app_config
from tests.security.conftest import assert_error, dispose


def _register(client: Any, username: str, n: int) -> Any:
    body = {"username": username, "email": f"u{n}@example.com", "password": PASSWORD, "password2": PASSWORD}
    return client.post("/api/users/", json=body)


@pytest.mark.parametrize(
    "look_alike",
    [
        "Alice",  # case
        "ALICE",
        "\uff41\uff4c\uff49\uff43\uff45",  # fullwidth
        "\u0430lice",  # a Cyrillic a among Latin letters
        "al\u0456ce",  # a Cyrillic i
    ],
)
def test_a_look_alike_of_a_registered_username_is_refused(client: Any, user, look_alike: str) -> None:
    body = assert_error(_register(client, look_alike, 1), 422)
    assert "username" in body["errors"].get("json", body["errors"])


def test_usernames_are_stored_as_given_and_sign_in_as_people_read_them(client: Any) -> None:
    created = _register(client, "Bob_Smith", 2)

    assert created.status_code == 201 and created.get_json()["username"] == "Bob_Smith"
    assert client.post("/api/token/", json={"username": "bob_smith", "password": PASSWORD}).status_code == 200


@pytest.mark.parametrize("name", ["\u041f\u0451\u0442\u0440", "\u674e\u5c0f\u96f7", "jos\u00e9"])
def test_single_script_usernames_of_any_script_register(client: Any, name: str) -> None:
    assert _register(client, name, len(name.encode())).status_code == 201


def test_the_migration_finds_usernames_that_already_collide() -> None:
    path = Path(tempfile.mkdtemp(prefix="shop-usernames-")) / "old.sqlite3"
    app = create_app(app_config(SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}"))
    try:
        with app.app_context():
            upgrade(revision="0003")
            for n, name in enumerate(["alice", "Alice", "bob"]):
                db.session.execute(
                    text(
                        "INSERT INTO users (username, email, password_hash, first_name, last_name, is_staff,"
                        " is_active, date_joined) VALUES (:u, :e, 'x', '', '', false, true, CURRENT_TIMESTAMP)"
                    ),
                    {"u": name, "e": f"old{n}@example.com"},
                )
            db.session.commit()

            with pytest.raises(RuntimeError, match="rename all but one of each: alice, Alice"):
                command.upgrade(migrate.get_config(), "0004")
    finally:
        dispose(app)
