"""The rules of the catalog: what a list shows, how products and categories change, and stock.

Reads select only the columns a client sees, product and category in one statement, and turn
rows straight into the dumped shape (`product_view`, its stock through the cache's `shown_stock`,
which keeps it apart from a stored page); writes commit, then tell the catalog's response cache
what changed (a staff write: everything; a stock change: that product's stock and stock_version,
which every statement changing a stock increments), so the next GET sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Row,
    Select,
    bindparam,
    cast,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from shop.core.errors import Conflict, NotFound, ValidationFailed
from shop.extensions import db
from shop.products.cache import catalog_changed, shown_stock, stock_changed
from shop.products.models import Category, Product
from shop.products.schemas import MAX_STOCK

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
ORDER_COLUMNS = {"id": Product.id, "name": Product.name, "price": Product.price, "created_at": Product.created_at}
VIEW_COLUMNS = (
    Product.id,
    Product.name,
    Product.description,
    Product.price,
    Product.stock,
    Product.stock_version,
    Product.image,
    Product.created_at,
    Product.updated_at,
    Category.id.label("category_id"),
    Category.name.label("category_name"),
    Category.description.label("category_description"),
)
VISIBLE = Product.hidden == false()
# No table here holds more rows than an int4 id can number: a larger offset is past the end for sure.
MAX_OFFSET = 2**31 - 1


def product_view(row: Row[Any]) -> dict[str, Any]:
    """A product in ProductSchema's dumped shape, from a row of VIEW_COLUMNS (tests hold the two equal)."""
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "price": format(row.price, ".2f"),
        "stock": shown_stock(row.id, row.stock, row.stock_version),
        "image": row.image,
        "category": {"id": row.category_id, "name": row.category_name, "description": row.category_description},
        "created_at": row.created_at.strftime(TIME_FORMAT),
        "updated_at": row.updated_at.strftime(TIME_FORMAT),
    }


def _views() -> Select[Any]:
    return select(*VIEW_COLUMNS).join(Category, Category.id == Product.category_id)


# Reads


def list_products(filters: dict[str, Any], pagination: Any) -> list[dict[str, Any]]:
    """One page of visible products and their total, in one statement whatever the page size.

    The total rides along as an scalar subquery the database computes once, saving a round trip; only an empty
    page (nothing matches, or past the end) needs the count on its own.
    """
    shape, values = _filter_values(filters)
    count, page = _list_statements(shape, filters.get("ordering", "id"))
    # Core on the session's connection: the same transaction, without the ORM's per-statement machinery.
    connection = db.session.connection()
    rows = []
    if pagination.first_item <= MAX_OFFSET:
        values.update(limit=pagination.page_size, offset=pagination.first_item)
        rows = connection.execute(page, values).all()
    pagination.item_count = rows[0].total if rows else connection.scalar(count, values)
    return [product_view(row) for row in rows]


def _filter_values(filters: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Which filters apply (the statements' shape) and the values bound to them."""
    values: dict[str, Any] = {}
    if "category" in filters:
        values["category"] = filters["category"]
    if filters.get("search"):
        values["pattern"] = "%" + _escape_like(filters["search"]) + "%"
    for bound in ("min_price", "max_price"):
        if filters.get(bound) is not None:
            values[bound] = filters[bound]
    shape = tuple(values)
    if filters.get("in_stock") is not None:
        shape += ("in_stock" if filters["in_stock"] else "sold_out",)
    return shape, values


@cache
def _list_statements(shape: tuple[str, ...], ordering: str) -> tuple[Select[Any], Select[Any]]:
    """The count and the page statements of one shape and ordering, built once with bound parameters.

    Reusing the same statement objects spares every request building the expression, computing its cache
    key and adapting the cached result columns to new column objects (a third of a page's SQL work in
    `make profile`). At most 8 orderings times 48 shapes.
    """
    conditions = _conditions(shape)
    count = select(func.count()).select_from(Product).where(*conditions)
    column = ORDER_COLUMNS[ordering.lstrip("-")]
    # The id breaks ties, in the same direction, so pages never overlap or skip a product.
    keys = [column] if column is Product.id else [column, Product.id]
    order = [key.desc() if ordering.startswith("-") else key.asc() for key in keys]
    page = (
        _views()
        .add_columns(count.scalar_subquery().label("total"))
        .where(*conditions)
        .order_by(*order)
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )
    return count, page


def _conditions(shape: tuple[str, ...]) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [VISIBLE]
    if "category" in shape:
        conditions.append(Product.category_id == bindparam("category", type_=Integer))
    if "pattern" in shape:
        # ILIKE on each column: PostgreSQL answers it from the trigram indexes (migration 0002).
        pattern = bindparam("pattern", type_=Product.name.type)
        conditions.append(
            or_(Product.name.ilike(pattern, escape="\\"), Product.description.ilike(pattern, escape="\\"))
        )
    if "min_price" in shape:
        conditions.append(Product.price >= bindparam("min_price", type_=Product.price.type))
    if "max_price" in shape:
        conditions.append(Product.price <= bindparam("max_price", type_=Product.price.type))
    if "in_stock" in shape:
        conditions.append(Product.stock > 0)
    elif "sold_out" in shape:
        conditions.append(Product.stock == 0)
    return conditions


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def product_detail(product_id: int) -> dict[str, Any]:
    """One visible product in its dumped shape; a hidden or unknown one is a 404."""
    row = db.session.connection().execute(_detail_statement(), {"id": product_id}).first()
    if row is None:
        raise NotFound("No such product.")
    return product_view(row)


@cache
def _detail_statement() -> Select[Any]:
    return _views().where(Product.id == bindparam("id", type_=Integer), VISIBLE)


def get_product(product_id: int) -> Product:
    product = db.session.get(Product, product_id)
    if product is None or product.hidden:
        raise NotFound("No such product.")
    return product


def list_categories(pagination: Any) -> Sequence[Category]:
    pagination.item_count = db.session.scalar(select(func.count()).select_from(Category))
    if pagination.first_item >= pagination.item_count:
        return []
    query = select(Category).order_by(Category.id).limit(pagination.page_size).offset(pagination.first_item)
    return db.session.scalars(query).all()


def get_category(category_id: int) -> Category:
    category = db.session.get(Category, category_id)
    if category is None:
        raise NotFound("No such category.")
    return category


# Writes: each commits once, then tells the cached catalog what changed.


def create_product(data: dict[str, Any]) -> Product:
    product = Product(**_with_category(data))
    db.session.add(product)
    _commit({"category_id": ["No such category."]})
    return product


def update_product(product_id: int, changes: dict[str, Any]) -> Product:
    """PATCH (some fields) or PUT (all of them): the same rule, the schema decides which.

    A change of `stock` increments `stock_version` in the same UPDATE, and the cache is told the
    committed stock and version (the flush's RETURNING), besides the staff write's `global` bump.
    """
    product = get_product(product_id)
    before = product.stock
    for name, value in _with_category(changes).items():
        setattr(product, name, value)
    if "stock" in changes:
        product.stock_version = Product.stock_version + 1
    _commit({"category_id": ["No such category."]})
    if "stock" in changes:
        stock_changed([(product.id, product.stock, product.stock_version, (before > 0) != (product.stock > 0))])
    return product


def hide_product(product_id: int) -> None:
    """Take a product out of the catalog; orders that hold it still show it."""
    get_product(product_id).hidden = True
    _commit()


def adjust_stock(product_id: int, delta: int) -> Product:
    """Add `delta` to the stock in one statement, so concurrent adjustments and orders never lose one."""
    new_stock = cast(Product.stock, BigInteger) + delta  # no int4 overflow while checking the bounds
    changed = db.session.execute(
        update(Product)
        .where(Product.id == product_id, VISIBLE, new_stock >= 0, new_stock <= MAX_STOCK)
        .values(stock=Product.stock + delta, stock_version=Product.stock_version + 1)
        .returning(Product.stock, Product.stock_version)
        .execution_options(synchronize_session=False)
    ).first()
    if changed is None:
        db.session.rollback()
        product = get_product(product_id)
        if product.stock + delta < 0:
            raise Conflict(
                "Not enough stock for this adjustment.",
                {"stock": [f"{product.stock} in stock; cannot remove {-delta}."]},
            )
        raise Conflict("The stock would exceed its maximum.", {"stock": [f"At most {MAX_STOCK} units."]})
    db.session.commit()
    stock, version = changed
    stock_changed([(product_id, stock, version, (stock - delta > 0) != (stock > 0))])
    return get_product(product_id)


def create_category(data: dict[str, Any]) -> Category:
    _check_category_name(data["name"])
    category = Category(**data)
    db.session.add(category)
    _commit({"name": ["A category with this name exists."]})
    return category


def update_category(category_id: int, changes: dict[str, Any]) -> Category:
    category = get_category(category_id)
    if "name" in changes and changes["name"] != category.name:
        _check_category_name(changes["name"])
    for name, value in changes.items():
        setattr(category, name, value)
    _commit({"name": ["A category with this name exists."]})
    return category


def delete_category(category_id: int) -> None:
    """Delete an empty category; one that still holds products (hidden ones too) is a 409."""
    category = get_category(category_id)
    if db.session.scalar(select(Product.id).where(Product.category_id == category.id).limit(1)) is not None:
        raise Conflict("The category still has products.")
    db.session.delete(category)
    try:
        db.session.commit()
    except IntegrityError as exc:  # a product was added to it meanwhile
        db.session.rollback()
        raise Conflict("The category still has products.") from exc
    catalog_changed()


def _with_category(data: dict[str, Any]) -> dict[str, Any]:
    """Check `category_id` names a category (422 otherwise) before the write."""
    if "category_id" in data and db.session.get(Category, data["category_id"]) is None:
        raise ValidationFailed("Invalid category.", {"category_id": ["No such category."]})
    return data


def _check_category_name(name: str) -> None:
    if db.session.scalar(select(Category.id).where(Category.name == name)) is not None:
        raise ValidationFailed("Invalid category.", {"name": ["A category with this name exists."]})


def _commit(conflict_errors: dict[str, list[str]] | None = None) -> None:
    """Commit; a constraint broken by a concurrent writer becomes the same 422 as the pre-check."""
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise ValidationFailed("Invalid data.", conflict_errors) from exc
    catalog_changed()
