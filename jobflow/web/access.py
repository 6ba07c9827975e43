"""Who may do what: the API token (Bearer) for API writes and the admin API, the signed-in roles for pages.

Two roles: ``admin`` may act, ``viewer`` may only look. Pages use
``viewer_required`` (any signed-in user) and ``admin_required`` (may act).
The user is loaded from the database on every request, so a role change
applies to the next request; a session holds only while its session token is
the user's current one (sign-out and a password change replace it).

Sign-in starts a new session (nothing of the one before survives, not its CSRF
token), and a session ends when unused for SESSION_IDLE_MINUTES or
SESSION_MAX_HOURS after its sign-in: both times are kept in the signed session
and checked on every request that carries a session cookie.
"""
import hmac
import time
from functools import wraps

from flask import Flask, abort, current_app, flash, g, redirect, request, session, url_for
from flask_login import current_user, login_user, logout_user

from jobflow.extensions import login_manager
from jobflow.ops import request_limit
from jobflow.ops.users import session_user
from jobflow.timeutil import utcnow
from jobflow.web.errors import APIError

SIGNED_IN_AT, SEEN_AT = "signed_in_at", "seen_at"     # seconds since the epoch, in the signed session cookie
_EXPIRED = "jobflow.session_expired"                   # request.environ: this request's session just ended
_BEARER = "jobflow.bearer_ok"                          # request.environ: whether this request holds the token


def init_app(app: Flask) -> None:
    """How flask-login loads the signed-in user, where it sends anonymous users, and what it says; session lifetimes."""
    login_manager.user_loader(load_user)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Sign in to see the dashboard."
    login_manager.login_message_category = "info"
    app.before_request(end_expired_session)


def start_session(user) -> None:
    """Sign ``user`` in on a new session: a cookie planted before (and its CSRF token) is worth nothing after."""
    session.clear()
    g.pop("csrf_token", None)      # Flask-WTF keeps the request's signed token in g; the next page gets a new one
    login_user(user)
    session[SIGNED_IN_AT] = session[SEEN_AT] = int(time.time())


def end_session() -> None:
    """Sign out of this session and forget everything in it."""
    logout_user()
    session.clear()
    g.pop("csrf_token", None)


def session_expired() -> bool:
    """True when this request's session ended because it was idle or too old."""
    return bool(request.environ.get(_EXPIRED))


def end_expired_session():
    """Sign out a session unused for SESSION_IDLE_MINUTES or older than SESSION_MAX_HOURS (or without its times).

    Pages go to the sign-in page; everything else goes on signed out (the admin API answers 401 JSON).
    """
    if current_app.config["SESSION_COOKIE_NAME"] not in request.cookies or "_user_id" not in session:
        return None        # no session: leave it untouched (public answers get no Vary: Cookie)
    now, idle = time.time(), current_app.config["SESSION_IDLE_MINUTES"] * 60
    signed_in, seen = session.get(SIGNED_IN_AT), session.get(SEEN_AT)
    fresh = isinstance(signed_in, int) and isinstance(seen, int) and now - seen <= idle \
        and now - signed_in <= current_app.config["SESSION_MAX_HOURS"] * 3600
    if fresh:
        if now - seen >= min(60, idle / 10):    # rewrite the cookie now and then, not on every request
            session[SEEN_AT] = int(now)
        return None
    current_app.logger.info("dashboard session ended: %s", "unused too long" if isinstance(seen, int) and
                            now - seen > idle else "too old")
    end_session()
    request.environ[_EXPIRED] = True
    if request.path.startswith("/admin"):
        flash("Your session expired. Please sign in again.", "info")
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("auth.login", next=target))
    return None


def load_user(session_id: str):
    """The signed-in user, or None when the user is gone or the session was ended."""
    return session_user(session_id)


def bearer_ok() -> bool:
    """True when the request carries the configured ADMIN_API_TOKEN as a Bearer token.

    A wrong Bearer token counts against the client (ops.request_limit, shared by every process): over the limit
    the request is a 429, and the client's tokens are not even compared until its window ends.
    """
    if _BEARER not in request.environ:
        request.environ[_BEARER] = _check_bearer()
    return request.environ[_BEARER]


def _check_bearer() -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False       # no token at all (an anonymous caller, or Basic credentials for a proxy in front)
    now = utcnow()
    retry_after = request_limit.token_refused(request.remote_addr, now)
    if retry_after is None:
        token = current_app.config.get("ADMIN_API_TOKEN") or ""
        if token and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
        retry_after = request_limit.wrong_token(request.remote_addr, now)
        if retry_after is None:
            return False
    current_app.logger.warning("API token refused: too many wrong tokens from %s", request.remote_addr)
    raise too_many("Too many requests with a wrong API token", retry_after)


def too_many(what: str, retry_after: int) -> APIError:
    """The 429 of a shared limit, as JSON with Retry-After."""
    return APIError(429, "too_many_requests", f"{what}; try again in {retry_after} s.",
                    headers={"Retry-After": str(retry_after)})


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
