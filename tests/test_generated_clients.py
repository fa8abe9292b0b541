"""Clients generated from the served OpenAPI document work against a live shop.

Python: openapi-python-client (pinned in requirements.txt) generates a client from the document a
running gunicorn serves, in the test's own directory, and must not warn; the test then drives a
customer's and a staff member's whole journey through it. Every request goes through the generated
function of its operation and every body through the generated model of its schema; both are found
by what they are for (method and path, the parameter's annotation), not by their generated names.

TypeScript: openapi-typescript (clients/typescript/package.json, pinned by its lock file) generates
the document's types, and the committed client clients/typescript/src/client.ts must type-check
against them with `tsc --noEmit`.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask

from tests.conftest import PASSWORD, need_service
from tests.factories import make_user
from tests.ops_processes import ROOT, VENV_BIN, live_shop

PACKAGE = "shop_api_client"
TYPESCRIPT = ROOT / "clients" / "typescript"
# How a generated module names its operation: `"method": "get", "url": "/api/products/{product_id}/"`.
_OPERATION = re.compile(r'"method": "(\w+)",\s*"url": "([^"]+)"')


@pytest.fixture
def shop(app: Flask, tmp_path: Path) -> Iterator[str]:
    with live_shop(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path) as url:
        yield url


class GeneratedClient:
    """The generated package, called by (method, path) with plain values turned into its own types."""

    def __init__(self, package: ModuleType, base_url: str) -> None:
        self.package = package
        self.base_url = base_url
        self.operations: dict[tuple[str, str], ModuleType] = {}
        api = Path(package.__file__).parent / "api"
        for source in sorted(api.glob("*/*.py")):
            found = _OPERATION.search(source.read_text())
            if found:
                name = f"{package.__name__}.api.{source.parent.name}.{source.stem}"
                self.operations[(found[1], found[2])] = importlib.import_module(name)

    def __call__(self, method: str, path: str, token: str | None = None, **arguments: Any) -> Any:
        operation = self.operations[(method, path)].sync_detailed
        client: Any
        if token:
            client = self.package.AuthenticatedClient(base_url=self.base_url, token=token)
        else:
            client = self.package.Client(base_url=self.base_url)
        parameters = inspect.signature(operation).parameters
        for name, value in arguments.items():
            arguments[name] = _typed(parameters[name].annotation, value)
        return operation(client=client, **arguments)


def _typed(annotation: Any, value: Any) -> Any:
    """A dict as the generated model it is annotated with, a string as the generated enum."""
    for kind in typing.get_args(annotation) or (annotation,):
        if isinstance(value, dict) and hasattr(kind, "from_dict"):
            return kind.from_dict(value)
        if isinstance(value, str) and isinstance(kind, type) and issubclass(kind, enum.Enum):
            return kind(value)
    return value


def _generate_python_client(shop: str, directory: Path) -> ModuleType:
    result = subprocess.run(
        [
            str(VENV_BIN / "openapi-python-client"),
            "generate",
            "--url",
            f"{shop}/api/openapi.json",
            "--meta",
            "none",
            "--output-path",
            str(directory / PACKAGE),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        # The generator formats its output with ruff, the venv's.
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "warning" not in output.lower(), output
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(directory))


def _pagination(response: Any) -> dict[str, int]:
    return json.loads(response.headers["X-Pagination"])


def test_the_generated_python_client_runs_a_customer_and_a_staff_journey(app: Flask, shop: str, tmp_path: Path):
    call = GeneratedClient(_generate_python_client(shop, tmp_path), shop)

    # A customer registers, logs in and refreshes the pair; the spent refresh token is refused.
    registered = call(
        "post",
        "/api/users/",
        body={"username": "carol", "email": "carol@example.com", "password": PASSWORD, "password2": PASSWORD},
    )
    assert registered.status_code == 201 and registered.parsed.username == "carol"
    login = call("post", "/api/token/", body={"username": "carol", "password": PASSWORD})
    assert login.status_code == 200
    refreshed = call("post", "/api/token/refresh/", body={"refresh": login.parsed.refresh})
    assert refreshed.status_code == 200 and refreshed.parsed.refresh != login.parsed.refresh
    # A spent refresh token presented again ends the session (its newer pair too): sign in again.
    assert call("post", "/api/token/refresh/", body={"refresh": login.parsed.refresh}).status_code == 401
    assert call("get", "/api/users/me/", token=refreshed.parsed.access).status_code == 401
    again = call("post", "/api/token/", body={"username": "carol", "password": PASSWORD})
    assert again.status_code == 200
    customer = again.parsed.access
    assert call("get", "/api/users/me/", token=customer).parsed.email == "carol@example.com"

    # Staff fill the catalog: categories, products (created, replaced, updated, deleted), stock.
    with app.app_context():
        make_user(username="boss", email="boss@example.com", password=PASSWORD, is_staff=True)
    staff = call("post", "/api/token/", body={"username": "boss", "password": PASSWORD}).parsed.access
    kitchen = call("post", "/api/categories/", token=staff, body={"name": "Kitchen", "description": "Pots"})
    assert kitchen.status_code == 201
    kitchen_id = kitchen.parsed.id
    renamed = call(
        "patch", "/api/categories/{category_id}/", token=staff, category_id=kitchen_id, body={"name": "Cook"}
    )
    assert renamed.status_code == 200 and renamed.parsed.name == "Cook"
    garden_id = call("post", "/api/categories/", token=staff, body={"name": "Garden"}).parsed.id
    assert call("delete", "/api/categories/{category_id}/", token=staff, category_id=garden_id).status_code == 204

    def new_product(name: str, price: str, stock: int) -> int:
        body = {"name": name, "description": f"A {name.lower()}", "price": price, "stock": stock}
        created = call("post", "/api/products/", token=staff, body={**body, "category_id": kitchen_id})
        assert created.status_code == 201, created.content
        return created.parsed.id

    kettle = new_product("Steel kettle", "30.00", 5)
    glass = new_product("Glass kettle", "45.00", 2)
    sold_out = new_product("Copper kettle", "40.00", 0)
    new_product("Teapot", "35.00", 9)
    spare = new_product("Spare lid", "3.00", 1)
    replaced = call(
        "put",
        "/api/products/{product_id}/",
        token=staff,
        product_id=glass,
        body={
            "name": "Glass kettle",
            "description": "Borosilicate",
            "price": "42.00",
            "stock": 2,
            "image": "https://img.example.com/glass-kettle.png",
            "category_id": kitchen_id,
        },
    )
    assert replaced.status_code == 200 and replaced.parsed.image == "https://img.example.com/glass-kettle.png"
    patched = call("patch", "/api/products/{product_id}/", token=staff, product_id=kettle, body={"price": "32.50"})
    assert patched.status_code == 200 and patched.parsed.price == "32.50"
    stocked = call("post", "/api/products/{product_id}/stock/", token=staff, product_id=kettle, body={"delta": 3})
    assert stocked.status_code == 200 and stocked.parsed.stock == 8
    assert call("delete", "/api/products/{product_id}/", token=staff, product_id=spare).status_code == 204

    # The catalog with every filter at once, a page at a time.
    filters = {
        "category": kitchen_id,
        "search": "KETTLE",
        "min_price": "30.00",
        "max_price": "44.00",
        "in_stock": True,
        "ordering": "-price",
        "page_size": 1,
    }
    first = call("get", "/api/products/", page=1, **filters)
    assert first.status_code == 200 and [product.id for product in first.parsed] == [glass]
    assert _pagination(first) == {
        "total": 2,
        "total_pages": 2,
        "first_page": 1,
        "last_page": 2,
        "page": 1,
        "next_page": 2,
    }
    second = call("get", "/api/products/", page=2, **filters)
    assert [product.id for product in second.parsed] == [kettle] and _pagination(second)["previous_page"] == 1
    everything = call("get", "/api/products/", ordering="name", page_size=100)
    assert [product.name for product in everything.parsed] == [
        "Copper kettle",
        "Glass kettle",
        "Steel kettle",
        "Teapot",
    ]
    assert sold_out not in [product.id for product in call("get", "/api/products/", in_stock=True).parsed]

    # A product's page, then the same page revalidated by its ETag.
    detail = call("get", "/api/products/{product_id}/", product_id=kettle)
    assert detail.status_code == 200 and detail.parsed.stock == 8 and detail.parsed.category.name == "Cook"
    etag = detail.headers["ETag"]
    again = call("get", "/api/products/{product_id}/", product_id=kettle, if_none_match=etag)
    assert again.status_code == 304 and again.content == b""

    # An order sent twice with one Idempotency-Key is made once; it is read, listed and cancelled.
    order_body = {"items": [{"product_id": kettle, "quantity": 2}, {"product_id": glass, "quantity": 1}]}
    created = call("post", "/api/orders/", token=customer, body=order_body, idempotency_key="carol-order-1")
    assert created.status_code == 201 and created.parsed.total == "107.00"
    assert created.parsed.status.value == "pending"
    replay = call("post", "/api/orders/", token=customer, body=order_body, idempotency_key="carol-order-1")
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.parsed.id == created.parsed.id
    order_id = created.parsed.id
    read = call("get", "/api/orders/{order_id}/", token=customer, order_id=order_id)
    assert read.status_code == 200 and [item.quantity for item in read.parsed.items] == [2, 1]
    listed = call("get", "/api/orders/", token=customer, status="pending")
    assert [order.id for order in listed.parsed] == [order_id] and _pagination(listed)["total"] == 1
    cancelled = call("post", "/api/orders/{order_id}/cancel/", token=customer, order_id=order_id)
    assert cancelled.status_code == 200 and cancelled.parsed.status.value == "cancelled"
    assert call("get", "/api/products/{product_id}/", product_id=kettle).parsed.stock == 8  # stock given back

    # Staff move another order along.
    second_order = call("post", "/api/orders/", token=customer, body={"items": [{"product_id": kettle, "quantity": 1}]})
    assert second_order.status_code == 201
    paid = call(
        "patch", "/api/orders/{order_id}/", token=staff, order_id=second_order.parsed.id, body={"status": "paid"}
    )
    assert paid.status_code == 200 and paid.parsed.status.value == "paid"
    by_user = call("get", "/api/orders/", token=staff, user="carol", status="paid")
    assert [order.id for order in by_user.parsed] == [second_order.parsed.id]


def test_the_typescript_client_type_checks_against_the_generated_types(app: Flask, tmp_path: Path) -> None:
    npx = need_service("`npx` (Node.js and npm)", shutil.which("npx"))
    if not (TYPESCRIPT / "node_modules" / ".bin" / "tsc").exists():
        need_service("clients/typescript/node_modules (`make install`)", None)
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(app.test_client().get("/api/openapi.json").get_json()))

    def run(*args: str) -> None:
        result = subprocess.run(
            [npx, "--no-install", *args], cwd=TYPESCRIPT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr

    run("openapi-typescript", str(document), "--output", str(tmp_path / "schema.d.ts"))
    # The committed tsconfig, with the schema taken from this test's directory.
    config = {
        "extends": str(TYPESCRIPT / "tsconfig.json"),
        "compilerOptions": {"paths": {"shop-api-schema": [str(tmp_path / "schema.d.ts")]}},
        "include": [str(TYPESCRIPT / "src")],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    run("tsc", "--noEmit", "--project", str(tmp_path / "tsconfig.json"))
