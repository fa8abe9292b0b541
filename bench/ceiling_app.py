"""The ceilings of the benchmark: what bare Flask does on this machine, under the shop's gunicorn settings.

    GET /cached/  the list page's bytes, read from Redis as they are (BENCH_PAGE_KEY) and returned
    GET /db/      the same list page built by plain psycopg2: a count and a 20-row page with its
                  category join (`?page=N`), dumped by orjson into the shop's product shape

No extension, no schema, no ORM, no logging: the shop's warm and cold list pages are measured
against these. `bench/run.py` serves it with `gunicorn -c bench/gunicorn_ceiling.conf.py`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import orjson
import psycopg2
import redis
from flask import Flask, Response, request

PAGE_SIZE = 20
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
COUNT = "SELECT count(*) FROM products WHERE products.hidden = false"
PAGE = """
SELECT products.id, products.name, products.description, products.price, products.stock, products.image,
       products.created_at, products.updated_at,
       categories.id, categories.name, categories.description
FROM products JOIN categories ON categories.id = products.category_id
WHERE products.hidden = false
ORDER BY products.id
LIMIT %s OFFSET %s
"""

app = Flask(__name__)
_redis = redis.Redis.from_url(os.environ["REDIS_URL"])
_page_key = os.environ.get("BENCH_PAGE_KEY", "bench:page")
_connection: Any = None


def _cursor() -> Any:
    """One autocommit connection per worker process, opened on first use (after gunicorn forks)."""
    global _connection
    if _connection is None or _connection.closed:
        _connection = psycopg2.connect(os.environ["BENCH_DSN"], options="-c timezone=UTC")
        _connection.autocommit = True
    return _connection.cursor()


def _product(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": row[0],
        "name": row[1],
        "description": row[2],
        "price": format(row[3], ".2f"),
        "stock": row[4],
        "image": row[5],
        "category": {"id": row[8], "name": row[9], "description": row[10]},
        "created_at": row[6].strftime(TIME_FORMAT),
        "updated_at": row[7].strftime(TIME_FORMAT),
    }


@app.get("/cached/")
def cached() -> Response:
    return Response(_redis.get(_page_key), mimetype="application/json")


@app.get("/db/")
def page() -> Response:
    number = max(1, request.args.get("page", 1, type=int))
    with _cursor() as cursor:
        cursor.execute(COUNT)
        total = cursor.fetchone()[0]
        cursor.execute(PAGE, (PAGE_SIZE, (number - 1) * PAGE_SIZE))
        rows = cursor.fetchall()
    response = Response(orjson.dumps([_product(row) for row in rows]), mimetype="application/json")
    response.headers["X-Pagination"] = orjson.dumps(
        {"total": total, "total_pages": math.ceil(total / PAGE_SIZE), "page": number}
    ).decode()
    return response
