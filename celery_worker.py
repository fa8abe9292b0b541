"""Entry point for `celery -A celery_worker worker` and `celery -A celery_worker beat`."""

import sys

from shop import create_app
from shop.config import ConfigError

try:
    flask_app = create_app()
except ConfigError as exc:
    sys.exit(f"shop: configuration error: {exc}")
celery_app = flask_app.extensions["celery"]
