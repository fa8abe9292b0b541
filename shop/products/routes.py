"""Catalog endpoints: parse, call the service, return what the schema dumps.

Public reads are served through the response cache (`cached_response`, outermost so a hit skips
parsing, SQL and serialization); a token is neither needed nor looked at, since every client sees
the same catalog. Writes tell the cache what changed, in the service (`shop.products.cache`).
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from flask.views import MethodView

from shop.core.auth import auth
from shop.core.pagination import PAGINATE
from shop.infra.api import Blueprint, links_from_created
from shop.products import services
from shop.products.cache import cached_response
from shop.products.models import Category, Product
from shop.products.schemas import (
    CATEGORY_EXAMPLE,
    PAGE_PARAMS,
    PRODUCT_EXAMPLE,
    PRODUCT_LIST_PARAMS,
    PRODUCT_UPDATE_EXAMPLE,
    STOCK_EXAMPLE,
    CategoryCreateSchema,
    CategorySchema,
    CategoryUpdateSchema,
    ProductCreateSchema,
    ProductQuerySchema,
    ProductReplaceSchema,
    ProductSchema,
    ProductUpdateSchema,
    StockAdjustmentSchema,
)

categories_blp = Blueprint(
    "categories",
    __name__,
    url_prefix="/api/categories",
    description="Product categories: anyone reads them, staff write them.",
)
products_blp = Blueprint(
    "products",
    __name__,
    url_prefix="/api/products",
    description="The catalog: anyone lists (filtered, ordered, paginated) and reads products, with ETags; staff "
    "add, change and hide products and adjust their stock.",
)

ID = "<int(max=2147483647):{}>"


def json_bytes(data: Any) -> Response:
    """A JSON response of data already in its dumped shape."""
    return Response(orjson.dumps(data), mimetype="application/json")


@categories_blp.route("/")
class Categories(MethodView):
    @categories_blp.doc(operationId="listCategories")
    @cached_response("categories", PAGE_PARAMS)
    @categories_blp.response(200, CategorySchema(many=True))
    @categories_blp.paginate(**PAGINATE)
    def get(self, pagination_parameters: Any) -> Any:
        """List categories"""
        return services.list_categories(pagination_parameters)

    @categories_blp.doc(
        operationId="createCategory",
        **links_from_created("category_id", "readCategory", "updateCategory", "deleteCategory"),
    )
    @auth(categories_blp, staff=True)
    @categories_blp.arguments(CategoryCreateSchema, example=CATEGORY_EXAMPLE)
    @categories_blp.response(201, CategorySchema)
    def post(self, data: dict[str, Any]) -> Category:
        """Create a category (staff)"""
        return services.create_category(data)


@categories_blp.route(f"/{ID.format('category_id')}/")
class CategoryDetail(MethodView):
    @categories_blp.doc(operationId="readCategory")
    @cached_response("category")
    @categories_blp.response(200, CategorySchema)
    @categories_blp.alt_response(404, response="NOT_FOUND")
    def get(self, category_id: int) -> Category:
        """Read a category"""
        return services.get_category(category_id)

    @categories_blp.doc(operationId="updateCategory")
    @auth(categories_blp, staff=True)
    @categories_blp.arguments(CategoryUpdateSchema, required=False, example=CATEGORY_EXAMPLE)  # no body: no change
    @categories_blp.response(200, CategorySchema)
    @categories_blp.alt_response(404, response="NOT_FOUND")
    def patch(self, changes: dict[str, Any], category_id: int) -> Category:
        """Change a category's name or description (staff)"""
        return services.update_category(category_id, changes)

    @categories_blp.doc(operationId="deleteCategory")
    @auth(categories_blp, staff=True)
    @categories_blp.response(204)
    @categories_blp.alt_response(404, response="NOT_FOUND")
    @categories_blp.alt_response(409, response="CONFLICT", description="The category still has products")
    def delete(self, category_id: int) -> None:
        """Delete an empty category (staff)"""
        services.delete_category(category_id)


@products_blp.route("/")
class Products(MethodView):
    @products_blp.doc(operationId="listProducts")
    @cached_response("list", PRODUCT_LIST_PARAMS, shows_products=True, membership_param="in_stock")
    @products_blp.arguments(ProductQuerySchema, location="query")
    @products_blp.response(200, ProductSchema(many=True))
    @products_blp.paginate(**PAGINATE)
    def get(self, filters: dict[str, Any], pagination_parameters: Any) -> Response:
        """List products, filtered and ordered"""
        return json_bytes(services.list_products(filters, pagination_parameters))

    @products_blp.doc(
        operationId="createProduct",
        **links_from_created(
            "product_id", "readProduct", "replaceProduct", "updateProduct", "hideProduct", "adjustProductStock"
        ),
    )
    @auth(products_blp, staff=True)
    @products_blp.arguments(ProductCreateSchema, example=PRODUCT_EXAMPLE)
    @products_blp.response(201, ProductSchema)
    def post(self, data: dict[str, Any]) -> Product:
        """Add a product (staff)"""
        return services.create_product(data)


@products_blp.route(f"/{ID.format('product_id')}/")
class ProductDetail(MethodView):
    @products_blp.doc(operationId="readProduct")
    @cached_response("detail", shows_products=True)
    @products_blp.response(200, ProductSchema)
    @products_blp.alt_response(404, response="NOT_FOUND")
    def get(self, product_id: int) -> Response:
        """Read a product"""
        return json_bytes(services.product_detail(product_id))

    @products_blp.doc(operationId="replaceProduct")
    @auth(products_blp, staff=True)
    @products_blp.arguments(ProductReplaceSchema, example=PRODUCT_EXAMPLE)
    @products_blp.response(200, ProductSchema)
    @products_blp.alt_response(404, response="NOT_FOUND")
    def put(self, data: dict[str, Any], product_id: int) -> Product:
        """Replace a product's fields (staff)"""
        return services.update_product(product_id, data)

    @products_blp.doc(operationId="updateProduct")
    @auth(products_blp, staff=True)
    @products_blp.arguments(ProductUpdateSchema, required=False, example=PRODUCT_UPDATE_EXAMPLE)  # no body: no change
    @products_blp.response(200, ProductSchema)
    @products_blp.alt_response(404, response="NOT_FOUND")
    def patch(self, changes: dict[str, Any], product_id: int) -> Product:
        """Change some of a product's fields, stock included (staff)"""
        return services.update_product(product_id, changes)

    @products_blp.doc(operationId="hideProduct")
    @auth(products_blp, staff=True)
    @products_blp.response(204)
    @products_blp.alt_response(404, response="NOT_FOUND")
    def delete(self, product_id: int) -> None:
        """Remove a product from the catalog (staff); orders that hold it still show it"""
        services.hide_product(product_id)


@products_blp.route(f"/{ID.format('product_id')}/stock/")
class ProductStock(MethodView):
    @products_blp.doc(operationId="adjustProductStock")
    @auth(products_blp, staff=True)
    @products_blp.arguments(StockAdjustmentSchema, example=STOCK_EXAMPLE)
    @products_blp.response(200, ProductSchema)
    @products_blp.alt_response(404, response="NOT_FOUND")
    @products_blp.alt_response(409, response="CONFLICT", description="The stock would go below zero")
    def post(self, data: dict[str, Any], product_id: int) -> Product:
        """Adjust the stock by a delta, atomically (staff): goods received, corrections"""
        return services.adjust_stock(product_id, data["delta"])
