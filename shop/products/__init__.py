"""The catalog: categories, products and their stock."""
