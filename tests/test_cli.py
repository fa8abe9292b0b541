"""The commands of docs/api.md: create-admin and seed."""

from __future__ import annotations

import click
from sqlalchemy import func, select

from shop.extensions import db
from shop.products.models import Category, Product
from shop.users.models import User
from tests.conftest import PASSWORD


def test_create_admin_makes_an_admin_who_can_log_in(runner, app, client):
    result = runner.invoke(
        args=["create-admin", "root_admin", "--email", "root@example.com", "--password", "s3cret-pass"]
    )

    assert result.exit_code == 0, result.output
    assert "Created admin root_admin" in result.output
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.username == "root_admin"))
        assert admin.is_staff and admin.is_admin and admin.check_password("s3cret-pass")
    assert client.post("/api/token/", json={"username": "root_admin", "password": "s3cret-pass"}).status_code == 200


def test_set_role_changes_rights_and_ends_the_users_sessions(runner, app, client, user):
    pair = client.post("/api/token/", json={"username": "alice", "password": PASSWORD}).get_json()

    result = runner.invoke(args=["set-role", "alice", "staff"])

    assert result.exit_code == 0 and "alice is now staff" in result.output
    assert client.get("/api/users/me/", headers={"Authorization": f"Bearer {pair['access']}"}).status_code == 401
    again = client.post("/api/token/", json={"username": "alice", "password": PASSWORD}).get_json()
    assert client.get("/api/users/", headers={"Authorization": f"Bearer {again['access']}"}).status_code == 200
    assert runner.invoke(args=["set-role", "nobody", "admin"]).exit_code != 0


def test_create_admin_prompts_for_the_password(runner, app):
    result = runner.invoke(
        args=["create-admin", "prompted", "--email", "p@example.com"], input="long-password-1\nlong-password-1\n"
    )

    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(select(User).where(User.username == "prompted")).check_password("long-password-1")


def test_create_admin_refuses_bad_input_and_duplicates(runner, app, user):
    bad_email = runner.invoke(args=["create-admin", "someone", "--email", "nope", "--password", "long-password-1"])
    taken = runner.invoke(args=["create-admin", "alice", "--email", "new@example.com", "--password", "long-password-1"])

    assert bad_email.exit_code != 0 and "email" in bad_email.output
    assert taken.exit_code != 0 and "username" in taken.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User).where(User.is_staff)) == 0


def test_seed_fills_the_catalog_and_if_empty_leaves_it(runner, app):
    result = runner.invoke(args=["seed", "--categories", "3", "--products", "50"])

    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Category)) == 3
        assert db.session.scalar(select(func.count()).select_from(Product)) == 50

    again = runner.invoke(args=["seed", "--products", "10", "--if-empty"])

    assert again.exit_code == 0 and "nothing seeded" in again.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Product)) == 50


def test_seed_progress_advances_in_small_steps(runner, app, monkeypatch):
    steps: list[int] = []
    real_progressbar = click.progressbar

    def recording_progressbar(*args, **kwargs):
        bar = real_progressbar(*args, **kwargs)
        update = bar.update
        bar.update = lambda n, current_item=None: (steps.append(n), update(n, current_item))[1]
        return bar

    monkeypatch.setattr(click, "progressbar", recording_progressbar)
    result = runner.invoke(args=["seed", "--categories", "2", "--products", "1050"])

    assert result.exit_code == 0, result.output
    # 1,050 rows in one written batch: the bar still moves every 100 rows, then the last 50.
    assert steps == [100] * 10 + [50]
