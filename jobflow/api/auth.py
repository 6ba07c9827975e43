"""Bearer-token access for API writes and the admin API."""
import hmac
from functools import wraps

from flask import current_app, request

from .errors import APIError


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
