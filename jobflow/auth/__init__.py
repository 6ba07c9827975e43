"""Admin sign-in: flask-login backed by AdminUser documents; roles enforced on the server.

Two roles: ``admin`` may act, ``viewer`` may only look. Pages use
``viewer_required`` (any signed-in user) and ``admin_required`` (may act).
The user is loaded from the database on every request, so a role change
applies to the next request; a session holds only while its session token is
the user's current one (sign-out and a password change replace it).
"""
from functools import wraps

from flask import Blueprint, abort
from flask_login import current_user

from ..extensions import login_manager
from .users import session_user

bp = Blueprint("auth", __name__)

login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to see the dashboard."
login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(session_id: str):
    """The signed-in user, or None when the user is gone or the session was ended."""
    return session_user(session_id)


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


from . import views  # noqa: E402,F401  (routes register on import)
