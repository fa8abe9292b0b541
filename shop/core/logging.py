"""JSON log lines on stdout, each request's with its id: one access line per request.

The request id is the client's (or Nginx's) `X-Request-ID` when it is a sane token, else a new
one; it is echoed in the response and carried by every log line written while the request runs.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Flask, Response, has_request_context, request
from flask_jwt_extended import get_jwt

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("shop.access")
# Where a request keeps its id and start time (the environ is the request's own; `g` may outlive it).
_REQUEST_ID = "shop.request_id"
_STARTED = "shop.request_started"

# LogRecord's own attributes: everything else on a record came in through `extra=`.
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context():
            request_id = request.environ.get(_REQUEST_ID)
            if request_id:
                line["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS:
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        # orjson: UTF-8 as it is, anything it cannot encode as its str(); a fifth of json.dumps' cost here.
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_json_logging(level: int | str = logging.INFO) -> None:
    """Send every logger's lines to stdout as JSON, unless something (pytest, a host) already handles them."""
    # Alembic announces each of its plugins at INFO whenever the app is built: noise in every worker.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # No line shows the thread or process names: don't look them up for every record (logging's
    # documented switches; the pid is written where it matters, on the access line).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def request_id_from(header: str | None) -> str:
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def _start_request() -> None:
    environ = request.environ
    environ[_STARTED] = time.perf_counter()
    environ[_REQUEST_ID] = request_id_from(environ.get("HTTP_X_REQUEST_ID"))


def _user_id() -> str | None:
    """The user of a verified access token, when the view checked one."""
    if "HTTP_AUTHORIZATION" not in request.environ:
        return None  # no token sent: none verified (spares raising and catching for every anonymous request)
    try:
        claims = get_jwt()
    except RuntimeError:  # no token was verified for this request
        return None
    return str(claims["sub"]) if "sub" in claims else None


def _finish_request(response: Response) -> Response:
    environ = request.environ
    request_id = environ.get(_REQUEST_ID) or request_id_from(None)
    response.headers.add(REQUEST_ID_HEADER, request_id)  # nothing else writes it (a set would scan the list)
    if not access_log.isEnabledFor(logging.INFO):
        return response
    started = environ.get(_STARTED)
    method = environ["REQUEST_METHOD"]
    path = request.path
    status = response.status_code
    fields = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
        "user_id": _user_id(),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "pid": os.getpid(),
    }
    # makeRecord and handle: what `info` does, without looking up the caller's frame for every request.
    access_log.handle(
        access_log.makeRecord(
            access_log.name, logging.INFO, "", 0, "%s %s %s", (method, path, status), None, extra=fields
        )
    )
    return response


def init_request_logging(app: Flask) -> None:
    """Give every request an id and write its access line; registered first so it times the whole request."""
    app.before_request(_start_request)
    app.after_request(_finish_request)
