"""The catalog as clients use it: categories, products, filters, ordering, pages, stock, and who may write."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shop.extensions import db
from shop.products.models import Category, Product
from tests.factories import make_category, make_product

ERROR_KEYS = {"code", "status", "message"}


def assert_error(response, code: int) -> dict:
    assert response.status_code == code, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) >= ERROR_KEYS and body["code"] == code
    return body


@pytest.fixture
def category(app):
    with app.app_context():
        return make_category(name="Accessories", description="Computer accessories and peripherals.")


@pytest.fixture
def mouse(app, category):
    with app.app_context():
        return make_product(
            db.session.merge(category),
            name="Wireless Mouse",
            description="Ergonomic wireless mouse with adjustable DPI.",
            price="25.99",
            stock=150,
        )


def new_product(category_id: int, **fields) -> dict:
    return {"name": "Mechanical Keyboard", "price": "75.50", "stock": 80, "category_id": category_id, **fields}


# Reads


def test_product_list_is_the_seed_c2_array(client, mouse, category):
    response = client.get("/api/products/")

    assert response.status_code == 200
    assert response.get_json() == [
        {
            "id": mouse.id,
            "name": "Wireless Mouse",
            "description": "Ergonomic wireless mouse with adjustable DPI.",
            "price": "25.99",
            "stock": 150,
            "image": None,
            "category": {
                "id": category.id,
                "name": "Accessories",
                "description": "Computer accessories and peripherals.",
            },
            "created_at": mouse.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_at": mouse.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    ]
    assert json.loads(response.headers["X-Pagination"]) == {
        "total": 1,
        "total_pages": 1,
        "first_page": 1,
        "last_page": 1,
        "page": 1,
    }


def test_product_detail_and_unknown_product(client, mouse):
    assert client.get(f"/api/products/{mouse.id}/").get_json()["name"] == "Wireless Mouse"
    assert_error(client.get(f"/api/products/{mouse.id + 1}/"), 404)
    assert_error(client.get("/api/products/2147483648/"), 404)
    assert_error(client.get(f"/api/products/{2**70}/"), 404)


def test_path_without_slash_redirects(client, mouse):
    response = client.get("/api/products")

    assert response.status_code == 308 and response.headers["Location"].endswith("/api/products/")


def test_a_token_is_optional_on_reads(client, mouse, user_headers):
    assert client.get("/api/products/", headers=user_headers).status_code == 200
    assert client.get(f"/api/products/{mouse.id}/", headers=user_headers).status_code == 200


def test_fast_list_shape_equals_the_product_schema(app, client, mouse):
    from shop.products.schemas import ProductSchema

    with app.app_context():
        expected = ProductSchema().dump(db.session.get(Product, mouse.id))

    assert client.get("/api/products/").get_json() == [expected]
    assert client.get(f"/api/products/{mouse.id}/").get_json() == expected


def test_categories_list_and_detail(client, category):
    response = client.get("/api/categories/")

    assert response.get_json() == [
        {"id": category.id, "name": "Accessories", "description": "Computer accessories and peripherals."}
    ]
    assert json.loads(response.headers["X-Pagination"])["total"] == 1
    assert client.get(f"/api/categories/{category.id}/").get_json()["name"] == "Accessories"
    assert_error(client.get(f"/api/categories/{category.id + 1}/"), 404)


# Filters, ordering, pages


@pytest.fixture
def shelf(app):
    """Five products over two categories, with distinct names, prices, stock and creation times."""
    with app.app_context():
        audio, office = make_category(name="Audio"), make_category(name="Office")
        start = datetime(2024, 1, 1, tzinfo=UTC)
        specs = [
            ("Desk Lamp", "Warm light for late work", "19.90", 5, office),
            ("Studio Headset", "Closed-back, wired", "89.00", 0, audio),
            ("Bluetooth Speaker", "Pocket speaker, 100% wireless", "45.50", 12, audio),
            ("Office Chair", "Mesh back, lumbar support", "149.00", 3, office),
            ("USB_C Cable", "Braided, 2 m", "9.99", 40, office),
        ]
        products = {}
        for n, (name, description, price, stock, category) in enumerate(specs):
            products[name] = make_product(category, name=name, description=description, price=price, stock=stock)
            products[name].created_at = start + timedelta(days=(n * 3) % 5)
            db.session.merge(products[name])
        db.session.commit()
        return {"audio": audio.id, "office": office.id, **{name: p.id for name, p in products.items()}}


def names(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [product["name"] for product in response.get_json()]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("search=SPEAKER", ["Bluetooth Speaker"]),
        ("search=mesh", ["Office Chair"]),  # in the description only
        ("search=100%25", ["Bluetooth Speaker"]),  # % is a character, not a wildcard
        ("search=k_l", []),  # and so is _ (as a wildcard it would match "Desk Lamp")
        ("search=usb_c", ["USB_C Cable"]),
        ("min_price=45.50", ["Studio Headset", "Bluetooth Speaker", "Office Chair"]),
        ("max_price=19.9", ["Desk Lamp", "USB_C Cable"]),
        ("min_price=10&max_price=50", ["Desk Lamp", "Bluetooth Speaker"]),
        ("min_price=100&max_price=10", []),
        ("in_stock=false", ["Studio Headset"]),
        ("in_stock=true&max_price=20", ["Desk Lamp", "USB_C Cable"]),
    ],
)
def test_filters(client, shelf, query, expected):
    assert names(client.get(f"/api/products/?{query}")) == expected


def test_category_filter(client, shelf):
    assert names(client.get(f"/api/products/?category={shelf['audio']}")) == ["Studio Headset", "Bluetooth Speaker"]
    assert names(client.get("/api/products/?category=2147483647")) == []


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        (None, ["Desk Lamp", "Studio Headset", "Bluetooth Speaker", "Office Chair", "USB_C Cable"]),
        ("id", ["Desk Lamp", "Studio Headset", "Bluetooth Speaker", "Office Chair", "USB_C Cable"]),
        ("-id", ["USB_C Cable", "Office Chair", "Bluetooth Speaker", "Studio Headset", "Desk Lamp"]),
        ("name", ["Bluetooth Speaker", "Desk Lamp", "Office Chair", "Studio Headset", "USB_C Cable"]),
        ("-name", ["USB_C Cable", "Studio Headset", "Office Chair", "Desk Lamp", "Bluetooth Speaker"]),
        ("price", ["USB_C Cable", "Desk Lamp", "Bluetooth Speaker", "Studio Headset", "Office Chair"]),
        ("-price", ["Office Chair", "Studio Headset", "Bluetooth Speaker", "Desk Lamp", "USB_C Cable"]),
        # created_at days: lamp 0, headset 3, speaker 1, chair 4, cable 2
        ("created_at", ["Desk Lamp", "Bluetooth Speaker", "USB_C Cable", "Studio Headset", "Office Chair"]),
        ("-created_at", ["Office Chair", "Studio Headset", "USB_C Cable", "Bluetooth Speaker", "Desk Lamp"]),
    ],
)
def test_ordering(client, shelf, ordering, expected):
    query = f"?ordering={ordering}" if ordering else ""
    assert names(client.get(f"/api/products/{query}")) == expected


def test_ties_are_broken_by_id_so_pages_never_overlap(app, client, category):
    with app.app_context():
        ids = [make_product(db.session.merge(category), price="5.00").id for _ in range(5)]

    seen = [
        p["id"]
        for page in (1, 2, 3)
        for p in client.get(f"/api/products/?ordering=price&page_size=2&page={page}").get_json()
    ]
    newest_first = [p["id"] for p in client.get("/api/products/?ordering=-price").get_json()]

    assert seen == ids
    assert newest_first == ids[::-1]


def test_pages_and_their_metadata(client, shelf):
    response = client.get("/api/products/?page=2&page_size=2")

    assert names(response) == ["Bluetooth Speaker", "Office Chair"]
    assert json.loads(response.headers["X-Pagination"]) == {
        "total": 5,
        "total_pages": 3,
        "first_page": 1,
        "last_page": 3,
        "page": 2,
        "previous_page": 1,
        "next_page": 3,
    }
    assert names(client.get("/api/products/?page=3&page_size=2")) == ["USB_C Cable"]
    assert names(client.get("/api/products/?page=4&page_size=2")) == []
    assert names(client.get(f"/api/products/?page={10**30}")) == []
    assert len(client.get("/api/products/").get_json()) == 5  # default page size 20


def test_page_size_defaults_to_20(app, client, category):
    with app.app_context():
        for _ in range(21):
            make_product(db.session.merge(category))

    response = client.get("/api/products/")

    assert len(response.get_json()) == 20
    assert json.loads(response.headers["X-Pagination"])["total_pages"] == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page=abc", "page"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page_size=1000", "page_size"),
        ("min_price=abc", "min_price"),
        ("min_price=-1", "min_price"),
        ("max_price=1e400", "max_price"),
        ("max_price=NaN", "max_price"),
        ("min_price=1.001", "min_price"),
        ("ordering=stock", "ordering"),
        ("ordering=--id", "ordering"),
        ("category=abc", "category"),
        ("category=0", "category"),
        (f"category={2**31}", "category"),
        (f"category={2**70}", "category"),
        ("in_stock=maybe", "in_stock"),
        ("search=" + "x" * 101, "search"),
        ("search=a%00b", "search"),
    ],
)
def test_bad_list_parameters_are_422_with_field_errors(client, shelf, query, field):
    body = assert_error(client.get(f"/api/products/?{query}"), 422)

    assert field in body["errors"]["query"]


def test_bad_parameters_are_refused_even_after_a_good_page_was_cached(client, shelf):
    assert client.get("/api/products/?page=1").status_code == 200
    assert_error(client.get("/api/products/?page=0"), 422)
    assert client.get("/api/products/?page=1").status_code == 200


def test_unknown_query_parameters_are_ignored(client, shelf):
    assert len(client.get("/api/products/?colour=red").get_json()) == 5


# Staff writes


def test_staff_creates_a_product_with_its_category_nested(client, staff_headers, category):
    response = client.post(
        "/api/products/",
        json=new_product(category_id=category.id, image="https://img.example.com/k.png"),
        headers=staff_headers,
    )

    assert response.status_code == 201
    body = response.get_json()
    assert body["price"] == "75.50" and body["stock"] == 80 and body["description"] == ""
    assert body["image"] == "https://img.example.com/k.png"
    assert body["category"] == {"id": category.id, "name": "Accessories", "description": category.description}
    assert client.get(f"/api/products/{body['id']}/").get_json() == body


def test_price_is_stored_exactly(app, client, staff_headers, category):
    response = client.post(
        "/api/products/", json=new_product(category_id=category.id, price="0.1"), headers=staff_headers
    )

    assert response.get_json()["price"] == "0.10"
    with app.app_context():
        assert str(db.session.get(Product, response.get_json()["id"]).price) == "0.10"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"price": "-1.00"}, "price"),
        ({"price": -1}, "price"),
        ({"price": 25.99}, "price"),  # money is a string, never a float
        ({"price": "1e400"}, "price"),
        ({"price": "100000000.00"}, "price"),
        ({"price": "1.999"}, "price"),
        ({"price": "NaN"}, "price"),
        ({"stock": -1}, "stock"),
        ({"stock": "2"}, "stock"),
        ({"stock": 2.5}, "stock"),
        ({"stock": True}, "stock"),
        ({"stock": 2**31}, "stock"),
        ({"category_id": 2**31}, "category_id"),
        ({"category_id": 2**70}, "category_id"),
        ({"category_id": "1"}, "category_id"),
        ({"image": "file:///etc/passwd"}, "image"),
        ({"image": "ftp://example.com/a.png"}, "image"),
        ({"image": "javascript:alert(1)"}, "image"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "a\u0000b"}, "name"),
        ({"id": 7}, "id"),
        ({"hidden": True}, "hidden"),
        ({"category": {"id": 1}}, "category"),
    ],
)
def test_bad_product_bodies_are_422_and_nothing_is_written(app, client, staff_headers, category, changes, field):
    body = assert_error(
        client.post("/api/products/", json={**new_product(category.id), **changes}, headers=staff_headers),
        422,
    )

    assert field in body["errors"]["json"]
    with app.app_context():
        assert db.session.query(Product).count() == 0


def test_unknown_category_is_422(client, staff_headers, category):
    body = assert_error(
        client.post("/api/products/", json=new_product(category_id=category.id + 1), headers=staff_headers), 422
    )

    assert "category_id" in body["errors"]["json"]


def test_missing_fields_are_422(client, staff_headers):
    body = assert_error(client.post("/api/products/", json={}, headers=staff_headers), 422)

    assert set(body["errors"]["json"]) == {"name", "price", "category_id"}


def test_patch_changes_only_what_is_sent(client, staff_headers, mouse):
    response = client.patch(f"/api/products/{mouse.id}/", json={"price": "19.99", "stock": 3}, headers=staff_headers)

    assert response.status_code == 200
    body = response.get_json()
    assert (body["name"], body["price"], body["stock"]) == ("Wireless Mouse", "19.99", 3)


def test_patch_moves_a_product_to_another_category(client, staff_headers, mouse, app):
    with app.app_context():
        office = make_category(name="Office")

    body = client.patch(f"/api/products/{mouse.id}/", json={"category_id": office.id}, headers=staff_headers).get_json()

    assert body["category"]["name"] == "Office"
    body = assert_error(
        client.patch(f"/api/products/{mouse.id}/", json={"category_id": office.id + 1}, headers=staff_headers), 422
    )
    assert "category_id" in body["errors"]["json"]


def test_put_replaces_every_field_and_requires_them_all(client, staff_headers, mouse, category):
    full = {
        "name": "Silent Mouse",
        "description": "Quiet clicks.",
        "price": "30.00",
        "stock": 7,
        "image": None,
        "category_id": category.id,
    }

    body = client.put(f"/api/products/{mouse.id}/", json=full, headers=staff_headers).get_json()

    assert {k: body[k] for k in ("name", "description", "price", "stock", "image")} == {
        "name": "Silent Mouse",
        "description": "Quiet clicks.",
        "price": "30.00",
        "stock": 7,
        "image": None,
    }
    partial = {k: v for k, v in full.items() if k != "stock"}
    body = assert_error(client.put(f"/api/products/{mouse.id}/", json=partial, headers=staff_headers), 422)
    assert "stock" in body["errors"]["json"]


def test_delete_hides_the_product_from_everyone(app, client, staff_headers, user_headers, mouse):
    assert client.delete(f"/api/products/{mouse.id}/", headers=staff_headers).status_code == 204

    assert client.get("/api/products/").get_json() == []
    assert_error(client.get(f"/api/products/{mouse.id}/"), 404)
    assert_error(client.get(f"/api/products/{mouse.id}/", headers=staff_headers), 404)
    assert_error(client.patch(f"/api/products/{mouse.id}/", json={"stock": 1}, headers=staff_headers), 404)
    assert_error(client.delete(f"/api/products/{mouse.id}/", headers=staff_headers), 404)
    with app.app_context():
        assert db.session.get(Product, mouse.id).hidden is True  # still there for the orders that hold it


def test_write_to_unknown_product_is_404(client, staff_headers):
    assert_error(client.patch("/api/products/999/", json={"stock": 1}, headers=staff_headers), 404)
    assert_error(client.post("/api/products/999/stock/", json={"delta": 1}, headers=staff_headers), 404)


# Categories


def test_staff_manage_categories(client, staff_headers):
    created = client.post("/api/categories/", json={"name": "Audio"}, headers=staff_headers)
    assert created.status_code == 201
    category = created.get_json()
    assert category["description"] == ""

    changed = client.patch(
        f"/api/categories/{category['id']}/", json={"description": "Sound"}, headers=staff_headers
    ).get_json()
    assert changed == {"id": category["id"], "name": "Audio", "description": "Sound"}

    assert client.delete(f"/api/categories/{category['id']}/", headers=staff_headers).status_code == 204
    assert_error(client.get(f"/api/categories/{category['id']}/"), 404)


def test_category_names_are_unique(client, staff_headers, category):
    body = assert_error(client.post("/api/categories/", json={"name": "Accessories"}, headers=staff_headers), 422)
    assert "name" in body["errors"]["json"]

    other = client.post("/api/categories/", json={"name": "Other"}, headers=staff_headers).get_json()
    body = assert_error(
        client.patch(f"/api/categories/{other['id']}/", json={"name": "Accessories"}, headers=staff_headers), 422
    )
    assert "name" in body["errors"]["json"]
    renamed = client.patch(f"/api/categories/{other['id']}/", json={"name": "Other"}, headers=staff_headers)
    assert renamed.status_code == 200


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "x" * 101}, {"name": 5}, {"name": "A", "id": 3}])
def test_bad_category_bodies_are_422(client, staff_headers, body):
    assert_error(client.post("/api/categories/", json=body, headers=staff_headers), 422)


def test_a_category_with_products_cannot_be_deleted(app, client, staff_headers, mouse, category):
    assert_error(client.delete(f"/api/categories/{category.id}/", headers=staff_headers), 409)

    client.delete(f"/api/products/{mouse.id}/", headers=staff_headers)
    # A hidden product still belongs to its category (and to the orders that hold it).
    assert_error(client.delete(f"/api/categories/{category.id}/", headers=staff_headers), 409)
    with app.app_context():
        assert db.session.get(Category, category.id) is not None


# Stock


def test_stock_adjustment_adds_and_removes(client, staff_headers, mouse):
    url = f"/api/products/{mouse.id}/stock/"

    assert client.post(url, json={"delta": 10}, headers=staff_headers).get_json()["stock"] == 160
    assert client.post(url, json={"delta": -160}, headers=staff_headers).get_json()["stock"] == 0


def test_stock_never_goes_below_zero(app, client, staff_headers, mouse):
    body = assert_error(
        client.post(f"/api/products/{mouse.id}/stock/", json={"delta": -151}, headers=staff_headers), 409
    )

    assert "stock" in body["errors"]
    with app.app_context():
        assert db.session.get(Product, mouse.id).stock == 150


def test_stock_never_exceeds_its_column(app, client, staff_headers, mouse):
    assert_error(client.post(f"/api/products/{mouse.id}/stock/", json={"delta": 2**31 - 1}, headers=staff_headers), 409)
    with app.app_context():
        assert db.session.get(Product, mouse.id).stock == 150


@pytest.mark.parametrize("body", [{}, {"delta": "5"}, {"delta": 1.5}, {"delta": 2**31}, {"delta": 1, "stock": 5}])
def test_bad_stock_bodies_are_422(client, staff_headers, mouse, body):
    assert_error(client.post(f"/api/products/{mouse.id}/stock/", json=body, headers=staff_headers), 422)


# Who may write


WRITES = [
    ("post", "/api/products/", {"name": "X", "price": "1.00", "category_id": 1}),
    ("put", "/api/products/{product}/", {"name": "X"}),
    ("patch", "/api/products/{product}/", {"stock": 1}),
    ("delete", "/api/products/{product}/", None),
    ("post", "/api/products/{product}/stock/", {"delta": 1}),
    ("post", "/api/categories/", {"name": "X"}),
    ("patch", "/api/categories/{category}/", {"name": "X"}),
    ("delete", "/api/categories/{category}/", None),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_customers_may_not_write(client, user_headers, mouse, category, method, path, body):
    url = path.format(product=mouse.id, category=category.id)
    assert_error(getattr(client, method)(url, json=body, headers=user_headers), 403)


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_anonymous_writes_are_401(client, mouse, category, method, path, body):
    url = path.format(product=mouse.id, category=category.id)
    response = getattr(client, method)(url, json=body)

    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_every_catalog_operation_is_documented(client):
    spec = client.get("/api/openapi.json").get_json()
    operations = {
        ("/api/products/", "get"): {"200", "304", "422"},
        ("/api/products/", "post"): {"201", "401", "403", "422"},
        ("/api/products/{product_id}/", "get"): {"200", "304", "404"},
        ("/api/products/{product_id}/", "put"): {"200", "401", "403", "404", "422"},
        ("/api/products/{product_id}/", "patch"): {"200", "401", "403", "404", "422"},
        ("/api/products/{product_id}/", "delete"): {"204", "401", "403", "404"},
        ("/api/products/{product_id}/stock/", "post"): {"200", "401", "403", "404", "409", "422"},
        ("/api/categories/", "get"): {"200", "304", "422"},
        ("/api/categories/", "post"): {"201", "401", "403", "422"},
        ("/api/categories/{category_id}/", "get"): {"200", "304", "404"},
        ("/api/categories/{category_id}/", "patch"): {"200", "401", "403", "404", "422"},
        ("/api/categories/{category_id}/", "delete"): {"204", "401", "403", "404", "409"},
    }
    for (path, method), statuses in operations.items():
        operation = spec["paths"][path][method]
        assert operation["summary"], (path, method)
        assert statuses <= set(operation["responses"]), (path, method, set(operation["responses"]))
    price = spec["components"]["schemas"]["Product"]["properties"]["price"]
    assert price["type"] == "string" and "pattern" in price
    parameters = spec["paths"]["/api/products/"]["get"]["parameters"]
    shared = spec["components"]["parameters"]
    list_parameters = {shared[p["$ref"].rsplit("/", 1)[1]]["name"] if "$ref" in p else p["name"] for p in parameters}
    assert {"category", "search", "min_price", "max_price", "in_stock", "ordering", "If-None-Match"} <= list_parameters
