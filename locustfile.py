"""Load test: shoppers who sign in once, browse and search the catalog, read products, place orders.

    make loadtest                                   # the local stack, 60 s (README "Performance")
    .venv/bin/locust -f locustfile.py --host https://shop.example --headless -u 500 -r 50 -t 5m

Each simulated user signs in once (registers as `load-<n>`, or finds it registered, and logs in),
then, with 1 to 5 s between actions: browses list pages with filters, orderings
and searches, reads product pages, places orders of one to three products with a fresh
`Idempotency-Key`, reads its own orders and sometimes cancels a pending one. An expired access
token is refreshed (rotation) and, failing that, the user signs in again.

Environment: LOAD_USER_PREFIX (default `load-`, so runs can keep their users apart),
LOAD_PASSWORD. Registration and sign-in are rate limited per client address (RATELIMIT_AUTH,
10/minute): a load test from few addresses against a shop with production limits needs them
raised, or its users registered beforehand; a 429 is waited out (Retry-After) and retried.
"""

from __future__ import annotations

import itertools
import os
import random
import time
import uuid
from typing import Any

from locust import FastHttpUser, between, task

USER_PREFIX = os.environ.get("LOAD_USER_PREFIX", "load-")
PASSWORD = os.environ.get("LOAD_PASSWORD", "load-test-password-1")
SEARCH_WORDS = ["wireless", "mouse", "keyboard", "compact", "lamp", "smart", "speaker", "desk", "silent", "webcam"]
ORDERINGS = ["id", "price", "-price", "name", "-created_at"]
# Each process numbers its users from its own offset, so workers of a distributed run never collide.
_numbers = itertools.count(random.randrange(1, 10**9))


class Shopper(FastHttpUser):
    wait_time = between(1, 5)
    # Shared by the users of one process: what the catalog looks like, learnt as they browse.
    categories: list[int] = []
    product_ids: list[int] = []

    def on_start(self) -> None:
        self.username = f"{USER_PREFIX}{next(_numbers)}"
        self.tokens: dict[str, str] = {}
        self.pending_orders: list[int] = []
        self.sign_in()
        if not Shopper.categories:
            with self.rest("GET", "/api/categories/?page_size=100", name="/api/categories/") as response:
                if response.js:
                    Shopper.categories = [category["id"] for category in response.js]
        self.browse()

    # Signing in

    def sign_in(self) -> None:
        """Register (a 422 says the user exists already: fine), then log in."""
        if not self.tokens:
            body = {"username": self.username, "password": PASSWORD, "password2": PASSWORD}
            body["email"] = f"{self.username}@example.com"
            self._with_retry_after("POST", "/api/users/", body, expected=(201, 422))
        if not self._log_in():
            raise RuntimeError(f"{self.username} could not sign in")

    def _log_in(self) -> bool:
        body = {"username": self.username, "password": PASSWORD}
        response = self._with_retry_after("POST", "/api/token/", body, expected=(200, 401))
        if response is None or response.status_code != 200:
            return False
        self.tokens = response.json()
        return True

    def _with_retry_after(self, method: str, path: str, body: dict[str, Any], expected: tuple[int, ...]) -> Any:
        """A credential request, waiting out a 429 as its Retry-After says (at most 5 tries)."""
        for _ in range(5):
            with self.client.request(method, path, json=body, catch_response=True) as response:
                if response.status_code == 429:
                    response.success()  # the limit doing its job; not a failure of the shop
                    time.sleep(min(60, int(response.headers.get("Retry-After") or 1)))
                    continue
                if response.status_code in expected:
                    response.success()
                else:
                    response.failure(f"{response.status_code}: {response.text[:200]}")
                return response
        return None

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.get('access', '')}"}

    def refresh(self) -> None:
        """The access token expired: rotate the pair with the refresh token, or sign in again."""
        with self.client.post(
            "/api/token/refresh/", json={"refresh": self.tokens.get("refresh", "")}, catch_response=True
        ) as response:
            if response.status_code == 200:
                self.tokens = response.json()
                return
            response.success()
        self.sign_in()

    def authed(self, method: str, path: str, name: str, **kwargs: Any) -> Any:
        """A request with the access token, refreshed once when the shop says it has expired."""
        response = self.client.request(method, path, name=name, headers=self.auth(), **kwargs)
        if response.status_code == 401:
            self.refresh()
            response = self.client.request(method, path, name=name, headers=self.auth(), **kwargs)
        return response

    # Browsing (anonymous, as a visitor's browser would: the catalog needs no token)

    @task(6)
    def browse(self) -> None:
        params = [f"page={random.choice([1, 1, 1, 2, 2, 3, random.randint(1, 50)])}"]
        if Shopper.categories and random.random() < 0.5:
            params.append(f"category={random.choice(Shopper.categories)}")
        if random.random() < 0.4:
            params.append(f"ordering={random.choice(ORDERINGS)}")
        if random.random() < 0.2:
            low = random.randint(0, 400)
            params += [f"min_price={low}", f"max_price={low + random.choice([20, 50, 100])}"]
        if random.random() < 0.2:
            params.append("in_stock=true")
        with self.rest("GET", "/api/products/?" + "&".join(params), name="/api/products/?filters") as response:
            self._learn(response.js)

    @task(2)
    def search(self) -> None:
        word = random.choice(SEARCH_WORDS)
        with self.rest("GET", f"/api/products/?search={word}", name="/api/products/?search") as response:
            self._learn(response.js)

    @task(5)
    def view_product(self) -> None:
        if not Shopper.product_ids:
            return self.browse()
        product_id = random.choice(Shopper.product_ids)
        with self.rest("GET", f"/api/products/{product_id}/", name="/api/products/[id]/") as response:
            if response.status_code == 404:  # hidden meanwhile: fine, a shopper moves on
                response.success()
        return None

    def _learn(self, products: Any) -> None:
        if isinstance(products, list) and products:
            known = Shopper.product_ids
            known.extend(product["id"] for product in products if product.get("stock", 0) > 0)
            del known[:-2000]  # a bounded memory of recently seen products

    # Orders (signed in)

    @task(2)
    def place_order(self) -> None:
        if len(Shopper.product_ids) < 3:
            return self.browse()
        chosen = random.sample(sorted(set(Shopper.product_ids)), k=random.randint(1, 3))
        body = {"items": [{"product_id": pid, "quantity": random.randint(1, 2)} for pid in chosen]}
        headers = {**self.auth(), "Idempotency-Key": str(uuid.uuid4())}
        with self.client.post(
            "/api/orders/", json=body, headers=headers, name="/api/orders/ (place)", catch_response=True
        ) as response:
            if response.status_code == 201:
                self.pending_orders.append(response.json()["id"])
                del self.pending_orders[:-20]
            elif response.status_code == 409:
                response.success()  # out of stock is an answer, not an error
            elif response.status_code == 401:
                response.success()
                self.refresh()
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")
        return None

    @task(2)
    def my_orders(self) -> None:
        response = self.authed("GET", "/api/orders/", name="/api/orders/ (mine)")
        if response.status_code == 200 and response.json() and random.random() < 0.5:
            order = random.choice(response.json())
            self.authed("GET", f"/api/orders/{order['id']}/", name="/api/orders/[id]/")

    @task(1)
    def cancel_order(self) -> None:
        if not self.pending_orders or random.random() > 0.3:
            return
        order_id = self.pending_orders.pop(random.randrange(len(self.pending_orders)))
        with self.client.post(
            f"/api/orders/{order_id}/cancel/", headers=self.auth(), name="/api/orders/[id]/cancel/", catch_response=True
        ) as response:
            if response.status_code in (200, 409):  # 409: already moved on by staff
                response.success()
