"""``/login`` and ``/logout``."""
import unicodedata
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.urls import iri_to_uri

from jobflow.ops.login_limit import give_back, take_attempt
from jobflow.ops.users import authenticate, end_sessions
from jobflow.timeutil import duration_text, utcnow
from jobflow.web.access import end_session, start_session

bp = Blueprint("auth", __name__)

_MAX_NEXT_LENGTH = 2048


def _odd_character(target: str) -> bool:
    """True when ``target`` holds a control character (CR, LF, NUL; tab and newlines, which browsers
    drop from URLs, so ``/<tab>/evil.example`` would become ``//evil.example``), a space or a separator."""
    return any(unicodedata.category(c)[0] in "CZ" for c in target)


def _local_path(target: str | None) -> str | None:
    """``target`` when it is a path of this site (percent-encoded), else None.

    A path of this site starts with one ``/`` (``//`` names another host), holds no backslash
    (browsers read ``/\\host`` as ``//host``), no scheme, no host and no control character.
    """
    if not target or len(target) > _MAX_NEXT_LENGTH or "\\" in target or _odd_character(target):
        return None
    if not target.startswith("/") or target.startswith("//"):
        return None
    try:
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            return None
        return iri_to_uri(target)
    except ValueError:   # e.g. an unbalanced [ of an IPv6 host
        return None


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: ``target`` when it is a path of this site, else the dashboard.

    Never another site, and never an error, whatever ``target`` holds.
    """
    return _local_path(target) or url_for("admin.overview")


def _form(next_url, email, error=None, status=200, headers=None):
    """The sign-in page; it carries the next URL on only when it is a path of this site."""
    html = render_template("auth/login.html", next=_local_path(next_url) or "", email=email, error=error)
    return html, status, headers or {}


def _too_many(retry_after: int):
    current_app.logger.warning("sign-in refused: too many attempts from %s", request.remote_addr)
    return _form("", "", f"Too many sign-in attempts. Try again in {duration_text(retry_after)}.", 429,
                 {"Retry-After": str(retry_after)})


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in form; posts email, password and csrf_token."""
    next_url = request.values.get("next")
    if request.method != "POST":   # GET and HEAD show the form; HEAD is no sign-in attempt
        if current_user.is_authenticated:
            return redirect(_safe_next(next_url))
        return _form(next_url, "")
    attempt = take_attempt(request.remote_addr, utcnow())
    if attempt.retry_after is not None:
        return _too_many(attempt.retry_after)
    email = request.form.get("email", "")
    user = authenticate(email, request.form.get("password", ""))
    if user is None:
        current_app.logger.warning("failed sign-in from %s", request.remote_addr)
        return _form(next_url, email, "Wrong email or password.", 401)
    give_back(attempt)
    start_session(user)    # a new session with a new CSRF token: nothing planted before sign-in survives it
    from jobflow.ops.actions import Actor, audit
    audit(Actor(user.email, "page", request.remote_addr), "login", target=user.role)
    return redirect(_safe_next(next_url))


@bp.post("/logout")
def logout():
    """Sign out everywhere (a POST with a CSRF token, so no other site can sign you out).

    The user's session token is replaced, so a copy of this session cookie, and
    every other session of the same user, stops working too.
    """
    if current_user.is_authenticated:
        end_sessions(current_user.id)
    end_session()
    flash("Signed out.", "success")
    return redirect(url_for("auth.login"))


@bp.errorhandler(CSRFError)
def stale_form(exc):
    return _form("", "", "The form expired. Please sign in again.", 400)
