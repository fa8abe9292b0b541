"""Token rules shared by every blueprint: the 401 body, the guards of authenticated views, staff checks."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask_jwt_extended import current_user, verify_jwt_in_request
from flask_smorest import abort

from shop.core.errors import Unauthenticated, error_response

P = ParamSpec("P")
R = TypeVar("R")

BEARER = Unauthenticated.headers
# The security requirement an authenticated operation declares in OpenAPI.
BEARER_SECURITY = [{"bearerAuth": []}]
# Marks a view that checks the access token (read by hooks that prepare the check before the view).
GUARDED = "guarded_by_access_token"


def checks_token(handler: Any) -> bool:
    return bool(getattr(handler, GUARDED, False))


def unauthorized(message: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    return error_response(401, message, headers=BEARER)


def login_required(view: Callable[P, R]) -> Callable[P, R]:
    """The view needs a valid access token."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        verify_jwt_in_request()
        return view(*args, **kwargs)

    setattr(wrapper, GUARDED, True)
    return wrapper


def staff_required(view: Callable[P, R]) -> Callable[P, R]:
    """The view needs a valid access token of a staff user (403 for a customer)."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        verify_jwt_in_request()
        if not current_user.is_staff:
            abort(403, message="Staff only.")
        return view(*args, **kwargs)

    setattr(wrapper, GUARDED, True)
    return wrapper


def admin_required(view: Callable[P, R]) -> Callable[P, R]:
    """The view needs an admin's access token (403 for staff and customers); put outside `auth`."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        verify_jwt_in_request()
        if not current_user.is_admin:
            abort(403, message="Admins only.")
        return view(*args, **kwargs)

    return wrapper


def auth(blp: Any, *, staff: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Guard a view with a token check and document it: bearer security, 401, and 403 for staff views."""

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        view = (staff_required if staff else login_required)(view)
        view = blp.alt_response(401, response="UNAUTHORIZED")(view)
        if staff:
            view = blp.alt_response(403, response="FORBIDDEN")(view)
        return blp.doc(security=BEARER_SECURITY)(view)

    return decorator
