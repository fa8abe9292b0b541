"""The shop's gunicorn settings (gunicorn.conf.py, read as they are) for the bare ceiling app.

Only the hook that touches the shop's database pools is replaced: the ceiling app has none.
"""

from pathlib import Path
from typing import Any

_settings = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
exec(compile(_settings.read_text(), str(_settings), "exec"))  # noqa: S102 - the project's own config file


def post_worker_init(worker: Any) -> None:
    """Nothing to drop: the ceiling app opens its connections on first use, after the fork."""
