"""Entry point for gunicorn (`wsgi:app`) and the flask CLI (`flask --app wsgi`)."""

import sys

from shop import create_app
from shop.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    sys.exit(f"shop: configuration error: {exc}")
