"""`flask seed`: a demo catalog in bulk (PostgreSQL COPY; batched inserts elsewhere)."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import click
from flask.cli import with_appcontext
from sqlalchemy import func, insert, select

from shop.core.time import utcnow
from shop.extensions import db
from shop.products.cache import catalog_changed
from shop.products.models import Category, Product

ADJECTIVES = ["Wireless", "Ergonomic", "Compact", "Mechanical", "Portable", "Smart", "Classic", "Rugged", "Silent"]
NOUNS = ["Mouse", "Keyboard", "Monitor", "Headset", "Lamp", "Backpack", "Speaker", "Charger", "Webcam", "Desk"]
CATEGORY_NAMES = [
    "Accessories", "Audio", "Cameras", "Computers", "Gaming", "Home Office", "Lighting", "Networking",
    "Phones", "Storage", "Wearables", "Smart Home", "Cables", "Power", "Printers", "Software",
    "Displays", "Furniture", "Travel", "Tools",
]  # fmt: skip
BATCH = 10_000
# The progress bar moves every PROGRESS_STEP rows as they are made, not once per written batch.
PROGRESS_STEP = 100
COLUMNS = ("name", "description", "price", "stock", "image", "category_id", "hidden", "created_at", "updated_at")


@click.command("seed")
@click.option("--categories", default=5, show_default=True, type=click.IntRange(1), help="How many categories.")
@click.option("--products", default=100, show_default=True, type=click.IntRange(0), help="How many products.")
@click.option("--if-empty", is_flag=True, help="Do nothing when the catalog already has products.")
@click.option("--random-seed", default=42, show_default=True, help="Same seed, same catalog.")
@with_appcontext
def seed(categories: int, products: int, if_empty: bool, random_seed: int) -> None:
    """Fill the catalog with demo categories and products."""
    if if_empty and db.session.scalar(select(func.count()).select_from(Product)):
        click.echo("The catalog has products already; nothing seeded.")
        return
    rng = random.Random(random_seed)  # noqa: S311 - demo data, not security
    category_ids = _add_categories(categories)
    write = _copy if db.engine.dialect.name == "postgresql" else _insert
    # Distinct creation times, one second apart and oldest first, so `ordering=created_at` means something.
    first = utcnow() - timedelta(seconds=products)
    with click.progressbar(length=products, label="Seeding products") as bar:
        for offset in range(0, products, BATCH):
            size = min(BATCH, products - offset)
            rows = (_product_row(rng, category_ids, first + timedelta(seconds=offset + n)) for n in range(size))
            write(_counted(rows, bar))
    db.session.commit()
    catalog_changed()
    click.echo(f"Seeded {categories} categories and {products} products.")


def _counted(rows: Iterator[dict[str, Any]], bar: Any) -> Iterator[dict[str, Any]]:
    """The rows as they are, advancing the progress bar every PROGRESS_STEP of them and at the end."""
    pending = 0
    for row in rows:
        yield row
        pending += 1
        if pending == PROGRESS_STEP:
            bar.update(pending)
            pending = 0
    if pending:
        bar.update(pending)


def _add_categories(count: int) -> list[int]:
    taken = set(db.session.scalars(select(Category.name)))
    candidates = (*CATEGORY_NAMES, *(f"Category {n}" for n in range(1, len(taken) + count + 1)))
    names = [name for name in candidates if name not in taken][:count]
    rows = [{"name": name, "description": f"Demo products: {name.lower()}."} for name in names]
    return list(db.session.scalars(insert(Category).returning(Category.id), rows))


def _product_row(rng: random.Random, category_ids: list[int], created_at: datetime) -> dict[str, Any]:
    name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.randint(100, 999)}"
    return {
        "name": name,
        "description": f"{name}: a demo product for browsing and load tests.",
        "price": Decimal(rng.randint(100, 50000)) / 100,
        "stock": rng.randint(0, 500),
        "image": None,
        "category_id": rng.choice(category_ids),
        "hidden": False,
        "created_at": created_at,
        "updated_at": created_at,
    }


def _insert(rows: Iterator[dict[str, Any]]) -> None:
    db.session.execute(insert(Product), list(rows))


def _copy(rows: Iterator[dict[str, Any]]) -> None:
    """COPY a batch in PostgreSQL's text format, on the session's connection and transaction."""
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(_copy_value(row[column]) for column in COLUMNS) + "\n")
    buffer.seek(0)
    cursor = db.session.connection().connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY products ({', '.join(COLUMNS)}) FROM STDIN", buffer)
    finally:
        cursor.close()


def _copy_value(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
