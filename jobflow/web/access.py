"""Who may do what: the API token (Bearer) for API writes and the admin API, the signed-in roles for pages.

Two roles: ``admin`` may act, ``viewer`` may only look. Pages use
``viewer_required`` (any signed-in user) and ``admin_required`` (may act).
The user is loaded from the database on every request, so a role change
applies to the next request; a session holds only while its session token is
the user's current one (sign-out and a password change replace it).
"""
import hmac
from functools import wraps

from flask import Flask, abort, current_app, request
from flask_login import current_user

from jobflow.extensions import login_manager
from jobflow.ops.users import session_user
from jobflow.web.errors import APIError


def init_app(app: Flask) -> None:
    """How flask-login loads the signed-in user, where it sends anonymous users, and what it says."""
    login_manager.user_loader(load_user)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Sign in to see the dashboard."
    login_manager.login_message_category = "info"


def load_user(session_id: str):
    """The signed-in user, or None when the user is gone or the session was ended."""
    return session_user(session_id)


def bearer_ok() -> bool:
    """True when the request carries the configured ADMIN_API_TOKEN as a Bearer token."""
    token = current_app.config.get("ADMIN_API_TOKEN") or ""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def token_required(view):
    """Refuse the request with 401 JSON unless it carries the API token."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not bearer_ok():
            raise APIError(401, "unauthorized", "Send Authorization: Bearer <ADMIN_API_TOKEN>.",
                           headers={"WWW-Authenticate": "Bearer"})
        return view(*args, **kwargs)
    return wrapper


def viewer_required(view):
    """Any signed-in user (viewer or admin) may look; others go to the login page."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        return view(*args, **kwargs)
    return wrapper


def admin_required(view):
    """Only admins may act: viewers get 403, anonymous users the login page."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if not current_user.can_act:
            abort(403, "Viewers may look but not act; ask an admin.")
        return view(*args, **kwargs)
    return wrapper
