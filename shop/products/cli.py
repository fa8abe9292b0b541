"""`flask seed`: a demo catalog in bulk."""

from __future__ import annotations

import random
from decimal import Decimal

import click
from sqlalchemy import func, insert, select

from shop.core.time import utcnow
from shop.extensions import db
from shop.products.models import Category, Product

ADJECTIVES = ["Wireless", "Ergonomic", "Compact", "Mechanical", "Portable", "Smart", "Classic", "Rugged", "Silent"]
NOUNS = ["Mouse", "Keyboard", "Monitor", "Headset", "Lamp", "Backpack", "Speaker", "Charger", "Webcam", "Desk"]
BATCH = 5000


@click.command("seed")
@click.option("--categories", default=5, show_default=True, type=click.IntRange(1), help="How many categories.")
@click.option("--products", default=100, show_default=True, type=click.IntRange(0), help="How many products.")
@click.option("--if-empty", is_flag=True, help="Do nothing when the catalog already has products.")
@click.option("--random-seed", default=42, show_default=True, help="Same seed, same catalog.")
def seed(categories: int, products: int, if_empty: bool, random_seed: int) -> None:
    """Fill the catalog with demo categories and products."""
    if if_empty and db.session.scalar(select(func.count()).select_from(Product)):
        click.echo("The catalog has products already; nothing seeded.")
        return
    rng = random.Random(random_seed)  # noqa: S311 - demo data, not security
    start = db.session.scalar(select(func.count()).select_from(Category)) or 0
    names = [f"Category {start + n + 1}" for n in range(categories)]
    category_ids = list(
        db.session.scalars(
            insert(Category).returning(Category.id),
            [{"name": name, "description": f"Demo products of {name}."} for name in names],
        )
    )
    now = utcnow()
    with click.progressbar(length=products, label="Seeding products") as bar:
        for offset in range(0, products, BATCH):
            size = min(BATCH, products - offset)
            rows = [_product_row(rng, category_ids, now) for _ in range(size)]
            db.session.execute(insert(Product), rows)
            bar.update(size)
    db.session.commit()
    click.echo(f"Seeded {categories} categories and {products} products.")


def _product_row(rng: random.Random, category_ids: list[int], now: object) -> dict[str, object]:
    name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.randint(100, 999)}"
    return {
        "name": name,
        "description": f"{name}: a demo product for browsing and load tests.",
        "price": Decimal(rng.randint(100, 50000)) / 100,
        "stock": rng.randint(0, 500),
        "image": None,
        "category_id": rng.choice(category_ids),
        "hidden": False,
        "created_at": now,
        "updated_at": now,
    }
