"""Response headers: security headers on every response (a strict Content-Security-Policy and friends, HSTS with
secure cookies), and the mark of an answer from memory while the database does not answer."""

# Only our own scripts, styles and fetches; no inline script; no framing.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                           "object-src 'none'")
# A year; sent while the cookies are HTTPS-only (SESSION_COOKIE_SECURE, or PUBLIC_BASE_URL on https).
STRICT_TRANSPORT_SECURITY = "max-age=31536000"


def security_headers(response):
    """Add the CSP and related headers (HSTS when cookies are secure); pages with a signed-in user are never cached,
    nor answers to a request with a Bearer token (a draft's answer must not reach a shared cache)."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    from flask import current_app, request
    if current_app.config.get("SESSION_COOKIE_SECURE") is True:
        headers.setdefault("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY)
    if request.path.startswith(("/admin", "/login", "/api/admin")):
        headers["Cache-Control"] = "no-store"
    if request.path.startswith(("/api/", "/metrics")):
        response.vary.add("Authorization")     # the token changes the answer: caches keep the two apart
    if request.headers.get("Authorization", "").lstrip().lower().startswith("bearer"):
        headers["Cache-Control"] = "private, no-store"
    return response


STALE_HEADER = "X-JobFlow-Stale"


def mark_stale(response, model):
    """An answer from memory while the database has not answered for a while says so: the seconds since it last did
    (README, The read path)."""
    stale = model.stale_for() if model is not None else None
    if stale is not None:
        response.headers[STALE_HEADER] = str(int(stale))
    return response
