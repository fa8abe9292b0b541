"""The documentation pages' scripts and styles, served by the shop itself: Swagger UI and ReDoc work offline.

flask-smorest renders the pages (`/api/docs/`, `/api/redoc/`); the files they load come from the
npm packages pinned in package.json (swagger-ui-dist, redoc), which `make install` puts in
node_modules/. Only the files the two pages load are served, each under its own name.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, send_file

from shop.config import DOCS_ASSETS_PATH

NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
# The name a page asks for → its file in node_modules/.
ASSETS = {
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js": "swagger-ui-dist/swagger-ui-standalone-preset.js",
    "redoc.standalone.js": "redoc/bundles/redoc.standalone.js",
}
# The files change only with a package's version: a browser keeps them a day, then revalidates by ETag.
MAX_AGE = 86400

blp = Blueprint("api-docs-assets", __name__, url_prefix=DOCS_ASSETS_PATH.rstrip("/"))


@blp.get("/<name>")
def asset(name: str) -> Response:
    """One file of Swagger UI or ReDoc, by the name its page asks for."""
    relative = ASSETS.get(name)
    if relative is None:
        abort(404)
    path = NODE_MODULES / relative
    if not path.is_file():
        abort(404, description=f"{relative} is not installed: `make install` puts it in node_modules/.")
    return send_file(path, max_age=MAX_AGE, conditional=True)
