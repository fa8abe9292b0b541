"""The shop's Flask class: the request's Redis round trip sent before the view, and no per-request costs it never needs.

Every override here is of a public, documented method or attribute of `flask.Flask`:

- `dispatch_request`: sends the request's deferred Redis commands (`shop.infra.roundtrip`) right
  before the view runs, unless the view's handler joins the round trip and sends it itself. The
  handler is found as Flask finds it (the view function, or for a class-based view the method
  named by the request method, HEAD falling back to GET), once per endpoint and method
  (`view_handler`, which the token check's hook reads too).
- `session_interface`: the API authenticates with bearer tokens and never reads or writes
  `session`, yet Flask builds a signing serializer and parses the Cookie header on every request
  to open one. Here every request gets Flask's null session (reading is fine, writing raises).
- `ensure_sync`: Flask asks whether each hook and view is a coroutine function on every call
  (`inspect.iscoroutinefunction`, about a dozen times a cached catalog page); the answer is
  remembered per function. Together with the sessions, about 5% of a cached page's worker CPU
  (docs/performance.md, measured in-process).
- `response_class`: `ShopResponse`, whose `get_wsgi_headers` skips werkzeug's defensive copy of
  the headers when there is nothing to fix (below).
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any, cast

from flask import Flask, Request, Response, current_app, request
from flask.sessions import SessionInterface, SessionMixin

from shop.infra import roundtrip


class NoSessions(SessionInterface):
    """No cookie sessions: `open_session` answers None, so Flask gives the request a null session."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        return None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None


class ShopResponse(Response):
    """Werkzeug's response, handing its headers to the server as they are when nothing in them needs fixing.

    `get_wsgi_headers` (public) copies every header into a new `Headers`, re-validating each one,
    to fix a Location or Content-Location, drop Content-Length where the status forbids it, or
    compute a missing Content-Length: about 100 Python calls for the 14 headers of a catalog page.
    A 2xx answer (not 204) that already has its Content-Length and no Location header needs none
    of it, so the headers are returned as they are (the server only reads them); anything else
    goes through werkzeug's own code.
    """

    def get_wsgi_headers(self, environ: Any) -> Any:
        status = self.status_code
        if 200 <= status < 300 and status != 204:
            has_length = False
            for key, _ in self.headers:
                lowered = key.lower()
                if lowered == "content-length":
                    has_length = True
                elif lowered in ("location", "content-location"):
                    return super().get_wsgi_headers(environ)
            if has_length:
                return self.headers
        return super().get_wsgi_headers(environ)


class ShopFlask(Flask):
    session_interface = NoSessions()
    response_class = ShopResponse

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synchronous: dict[Callable[..., Any], bool] = {}
        self._handlers: dict[tuple[str, str], Any] = {}

    def dispatch_request(self) -> Any:
        if roundtrip.pending() and not self._view_joins_round_trip():
            roundtrip.send()
        return super().dispatch_request()

    def _view_joins_round_trip(self) -> bool:
        return roundtrip.joins(self.view_handler())

    def view_handler(self) -> Any:
        """The function that will answer this request: the view, or its class's method for the request's method.

        Found as Flask finds it (HEAD falling back to GET), once per endpoint and method; None when
        the request matched no route. Hooks read the markers decorators put on it.
        """
        rule = request.url_rule
        if rule is None or request.routing_exception is not None:
            return None
        key = (rule.endpoint, request.method)
        if key in self._handlers:
            return self._handlers[key]
        view = self.view_functions.get(rule.endpoint)
        view_class = getattr(view, "view_class", None)
        handler: Any = view
        if view_class is not None:
            handler = getattr(view_class, request.method.lower(), None)
            if handler is None and request.method == "HEAD":
                handler = getattr(view_class, "get", None)
        self._handlers[key] = handler
        return handler

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # A bound method is made anew on each access: remember the function underneath.
        key = getattr(func, "__func__", func)
        synchronous = self._synchronous.get(key)
        if synchronous is None:
            synchronous = self._synchronous[key] = not iscoroutinefunction(func)
        return func if synchronous else self.async_to_sync(func)


def current_handler() -> Any:
    """The function that will answer the current request (`ShopFlask.view_handler`)."""
    return cast(ShopFlask, current_app).view_handler()
