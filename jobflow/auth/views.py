"""``/login`` and ``/logout``."""
from urllib.parse import urlsplit

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_limiter.errors import RateLimitExceeded
from flask_login import current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError

from ..extensions import limiter
from . import bp
from .users import authenticate

LOGIN_LIMIT = "10 per minute;50 per hour"


def _safe_next(target: str | None) -> str:
    """A local path to go to after signing in; never another site."""
    default = url_for("admin.overview")
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_LIMIT, methods=["POST"])
def login():
    """The sign-in form; posts email, password and csrf_token."""
    next_url = request.values.get("next")
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(_safe_next(next_url))
        return render_template("auth/login.html", next=next_url or "", email="")
    email = request.form.get("email", "")
    user = authenticate(email, request.form.get("password", ""))
    if user is None:
        current_app.logger.warning("failed sign-in from %s", request.remote_addr)
        return render_template("auth/login.html", next=next_url or "", email=email,
                               error="Wrong email or password."), 401
    login_user(user)
    from ..ops.actions import Actor, audit
    audit(Actor(user.email, "page", request.remote_addr), "login", target=user.role)
    return redirect(_safe_next(next_url))


@bp.post("/logout")
def logout():
    """Sign out (a POST with a CSRF token, so no other site can sign you out)."""
    logout_user()
    flash("Signed out.", "success")
    return redirect(url_for("auth.login"))


@bp.errorhandler(RateLimitExceeded)
def too_many_attempts(exc):
    return render_template("auth/login.html", next="", email="",
                           error="Too many sign-in attempts. Wait a minute and try again."), 429


@bp.errorhandler(CSRFError)
def stale_form(exc):
    return render_template("auth/login.html", next="", email="",
                           error="The form expired. Please sign in again."), 400
