"""Flask without two per-request costs the shop never needs (measured by `make profile`).

- Cookie sessions: the API authenticates with bearer tokens and never reads or writes `session`,
  yet Flask builds a signing serializer and parses the Cookie header on every request to open one.
  Here every request gets Flask's null session (reading is fine, writing raises).
- `ensure_sync`: Flask asks whether each hook and view is a coroutine function on every call
  (sixteen times a cached catalog page); here the answer is remembered per function.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutinefunction
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin


class NoSessions(SessionInterface):
    """No cookie sessions: `open_session` answers None, so Flask gives the request a null session."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        return None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None


class LeanFlask(Flask):
    session_interface = NoSessions()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._synchronous: dict[Callable[..., Any], bool] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # A bound method is made anew on each access: remember the function underneath.
        key = getattr(func, "__func__", func)
        synchronous = self._synchronous.get(key)
        if synchronous is None:
            synchronous = self._synchronous[key] = not iscoroutinefunction(func)
        return func if synchronous else self.async_to_sync(func)
