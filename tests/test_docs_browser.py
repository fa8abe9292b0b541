"""Swagger UI and ReDoc in headless Chromium against a live shop, with every other host cut off.

A real gunicorn on loopback serves the pages and their scripts; Debian's Chromium, driven by
Playwright, loads them with every request to another origin aborted and recorded. Each page must
render every tag and operation of the served document; Swagger UI's "Authorize" takes an access
token that persists across a reload, and its "Try it out" gets its 200s in the page.

`DOCS_SCREENSHOTS=docs` writes the screenshots to docs/ (README, "API documentation"); otherwise to the
test's own directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from playwright.sync_api import Browser, Page, Route, sync_playwright

from tests.conftest import PASSWORD
from tests.factories import make_category, make_product, make_user
from tests.ops_processes import ROOT, live_shop, need_binary

# ReDoc 2's sidebar shows Redocly's logo from Redocly's CDN: the page's Content-Security-Policy
# (img-src 'self') refuses it before any request, and ReDoc drops the image when it fails.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
METHODS = {"get", "put", "post", "patch", "delete"}


@dataclass
class Offline:
    """Everything a page tried to reach outside the shop: requests aborted, loads refused by its CSP."""

    origin: str
    aborted: list[str] = field(default_factory=list)
    refused_by_csp: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.aborted.append(url)
            route.abort("blockedbyclient")

    def console(self, message: Any) -> None:
        if message.type != "error":
            return
        text = message.text
        if "violates the following Content Security Policy" in text:
            self.refused_by_csp.append(text)
        else:
            self.errors.append(text)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = need_binary("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            # No calls home of Chromium's own: this machine has no other host to reach.
            args=["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def shop(app: Flask, tmp_path: Path) -> Iterator[str]:
    with app.app_context():
        make_user(username="alice", email="alice@example.com", password=PASSWORD)
        category = make_category(name="Kitchen")
        make_product(category=category, name="Blue Kettle", price="24.50", stock=7)
        make_product(category=category, name="Teapot", price="18.00", stock=3)
    with live_shop(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path) as url:
        yield url


@pytest.fixture
def offline_page(browser: Browser, shop: str) -> Iterator[tuple[Page, Offline]]:
    offline = Offline(shop)
    context = browser.new_context(viewport={"width": 1280, "height": 860}, service_workers="block")
    context.route("**/*", offline.route)
    page = context.new_page()
    page.on("console", offline.console)
    page.on("pageerror", lambda error: offline.errors.append(str(error)))
    try:
        yield page, offline
    finally:
        context.close()


def _operations(spec: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(tag, method, path) of every operation the document lists, once under each of its tags."""
    return {
        (tag, method, path)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
        for tag in operation["tags"]
    }


def _redoc_id(spec: dict[str, Any], tag: str, method: str, path: str) -> str:
    """ReDoc's id of an operation's menu item and section: by operationId, else by path (JSON pointer)."""
    operation_id = spec["paths"][path][method].get("operationId")
    if operation_id:
        return f"tag/{tag}/operation/{operation_id}"
    return f"tag/{tag}/paths/{path.replace('~', '~0').replace('/', '~1')}/{method}"


def _screenshot(page: Page, name: str, tmp_path: Path) -> None:
    directory = ROOT / os.environ["DOCS_SCREENSHOTS"] if os.environ.get("DOCS_SCREENSHOTS") else tmp_path
    page.screenshot(path=directory / name)


def _try_it_out(page: Page, method: str, path: str, clear: tuple[str, ...] = ()) -> Any:
    """Open the operation, press "Try it out", empty the `clear` parameters (Swagger UI fills in the
    document's examples) and press "Execute"; the live response's status cell."""
    block = page.locator(f".opblock-{method}:has(.opblock-summary-path[data-path='{path}'])")
    if not block.locator(".try-out__btn").is_visible():
        block.locator(".opblock-summary-control").click()
    try_out = block.locator(".try-out__btn")
    if try_out.inner_text().strip() == "Try it out":
        try_out.click()
    for name in clear:
        block.locator(f"tr[data-param-name='{name}'] input").fill("")
    block.locator(".execute").click()
    return block.locator(".live-responses-table .response .response-col_status")


def test_swagger_ui_renders_every_operation_and_tries_them_offline(offline_page, shop: str, tmp_path: Path) -> None:
    page, offline = offline_page
    spec = requests.get(f"{shop}/api/openapi.json", timeout=10).json()

    page.goto(f"{shop}/api/docs/")
    page.wait_for_selector(".opblock-summary-path")

    tags = page.eval_on_selector_all(".opblock-tag", "tags => tags.map(tag => tag.dataset.tag)")
    assert tags == [tag["name"] for tag in spec["tags"]]
    shown = page.eval_on_selector_all(
        ".opblock-tag-section",
        """sections => sections.flatMap(section => {
            const tag = section.querySelector('.opblock-tag').dataset.tag;
            return [...section.querySelectorAll('.opblock')].map(block => [
                tag,
                block.querySelector('.opblock-summary-method').textContent.toLowerCase(),
                block.querySelector('.opblock-summary-path').dataset.path,
            ]);
        })""",
    )
    assert {tuple(operation) for operation in shown} == _operations(spec)
    _screenshot(page, "swagger-ui.png", tmp_path)

    status = _try_it_out(page, "get", "/api/products/", clear=("min_price", "max_price"))
    assert status.inner_text().strip() == "200"
    body = page.locator(".opblock-get:has(.opblock-summary-path[data-path='/api/products/']) .live-responses-table")
    assert "Blue Kettle" in body.inner_text() and "Teapot" in body.inner_text()
    body.evaluate("table => { table.scrollIntoView(); window.scrollBy(0, -260); }")
    _screenshot(page, "swagger-ui-try-it-out.png", tmp_path)

    # "Authorize" takes the access token as the bearer token; persistAuthorization keeps it on reload.
    access = requests.post(f"{shop}/api/token/", json={"username": "alice", "password": PASSWORD}, timeout=10)
    page.locator(".auth-wrapper .authorize").click()
    page.locator(".auth-container input").fill(access.json()["access"])
    page.locator(".auth-btn-wrapper .authorize").click()
    page.locator(".auth-btn-wrapper .btn-done").click()
    assert _try_it_out(page, "get", "/api/users/me/").inner_text().strip() == "200"

    page.reload()
    page.wait_for_selector(".opblock-summary-path")
    me = _try_it_out(page, "get", "/api/users/me/")
    assert me.inner_text().strip() == "200"
    assert (
        '"username": "alice"'
        in page.locator(
            ".opblock-get:has(.opblock-summary-path[data-path='/api/users/me/']) .live-responses-table"
        ).inner_text()
    )

    assert offline.aborted == [] and offline.refused_by_csp == [] and offline.errors == []


def test_redoc_renders_every_tag_and_operation_offline(offline_page, shop: str, tmp_path: Path) -> None:
    page, offline = offline_page
    spec = requests.get(f"{shop}/api/openapi.json", timeout=10).json()

    page.goto(f"{shop}/api/redoc/")
    page.wait_for_selector("[role=menuitem]")

    menu = page.eval_on_selector_all(
        "li[data-item-id]", "items => items.map(item => [item.dataset.itemId, item.querySelector('label').innerText])"
    )
    tags = [label for item_id, label in menu if item_id.count("/") == 1]
    assert tags == [tag["name"] for tag in spec["tags"]]
    listed = {item_id for item_id, _ in menu if item_id.count("/") > 1}
    assert listed == {_redoc_id(spec, *operation) for operation in _operations(spec)}
    # Each operation's own section is on the page, headed by its summary.
    for operation in _operations(spec):
        summary = spec["paths"][operation[2]][operation[1]]["summary"]
        section = page.locator(f"[id='{_redoc_id(spec, *operation)}']")
        assert section.locator("h2").first.inner_text() == summary
    page.locator("li[data-item-id='tag/products'] > label").click()
    page.wait_for_function("location.hash.includes('tag/products')")
    _screenshot(page, "redoc.png", tmp_path)

    assert offline.aborted == [] and offline.errors == []
    assert len(offline.refused_by_csp) == 1 and REDOC_LOGO in offline.refused_by_csp[0]
