"""gunicorn's logger without gunicorn's access log: the shop writes one access line per request itself.

gunicorn builds every access line's atoms (a dictionary of each request and response header, the
request line, sizes, timings) whenever a logging configuration is given, as `gunicorn.conf.py`
does for its JSON error log (`logconfig_dict`), even with the access logger sent to a NullHandler:
about a tenth of a warm catalog page's worker CPU (py-spy, samples holding the GIL). `access` is
the method gunicorn's `logger_class` setting exists to replace; here it does nothing. The app's own
line (`shop.core.logging`) carries the request id and the user, which gunicorn does not know.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger


class AppLogsAccess(Logger):
    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None
