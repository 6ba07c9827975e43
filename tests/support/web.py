"""Talking to the product over HTTP: signing in (test client, HTTP session, browser page), JSON calls,
addresses of its own for each in-process request, and the Prometheus text format."""
from __future__ import annotations

import http.cookiejar
import itertools
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from urllib.parse import quote

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
# Client addresses for in-process requests (TEST-NET-2, never routed), so the rate limits, kept on, never
# answer for another request.
ADDRESSES = (f"198.51.100.{n}" for n in itertools.cycle(range(1, 255)))


def csrf_from(html: str) -> str:
    """The csrf_token of the first form in a page."""
    return CSRF.search(html).group(1)


def fresh_addr() -> dict:
    """``environ_base`` giving a request a client address of its own."""
    return {"REMOTE_ADDR": next(ADDRESSES)}


def seg(value: str) -> str:
    """A path segment; unpaired surrogates go as the invalid UTF-8 bytes a client could send."""
    return quote(value, safe="", errors="surrogatepass")


def sign_in(client, email: str = "admin@example.com", password: str = "correct horse", role: str = "admin",
            environ_base: dict | None = None) -> str:
    """Sign a Flask test client in with the login form (the user is created when missing); the CSRF token of the
    new session (sign-in replaces the one of the form)."""
    from jobflow.models import AdminUser
    from jobflow.ops.users import create_user
    if not AdminUser.objects(email=email).first():
        create_user(email, password, role)
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": token},
                           environ_base=environ_base or {})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return csrf_from(client.get("/admin/embeddings/audit", environ_base=environ_base or {}).get_data(as_text=True))


def sign_in_page(page, email: str, password: str, role: str = "admin") -> None:
    """A browser page (Playwright) signs in through the form (the user is created when missing)."""
    from jobflow.models import AdminUser
    from jobflow.ops.users import create_user
    if not AdminUser.objects(email=email).first():
        create_user(email, password, role)
    page.goto("/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/admin/embeddings"))


def http_get(url: str, timeout: float = 15) -> tuple[int, dict | str, float, dict]:
    """GET: (status, JSON body or text, seconds, headers); error statuses are answers too."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, raw, headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), dict(exc.headers)
    elapsed = time.monotonic() - started
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text) if "json" in headers.get("Content-Type", "") else text
    except ValueError:
        body = text
    return status, body, elapsed, headers


def api(method: str, url: str, body=None, token: str | None = None, timeout: float = 20) -> tuple[int, object]:
    """One JSON API call: (status, decoded body); error statuses are answers too."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def metric_values(text: str) -> dict[str, float]:
    """Prometheus text format: ``name{labels}`` -> value."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                continue
    return values


class Browser:
    """An admin's browser over HTTP: cookies kept, forms posted with their CSRF token."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[int, str, str]:
        """(status, page text, final URL) after redirects."""
        try:
            with self.opener.open(self.base + path, timeout=30) as response:
                return response.status, response.read().decode("utf-8", "replace"), response.geturl()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace"), exc.geturl()

    def post_form(self, path: str, fields: dict) -> tuple[int, str, str]:
        data = urllib.parse.urlencode(fields).encode()
        try:
            with self.opener.open(urllib.request.Request(self.base + path, data=data, method="POST"),
                                  timeout=30) as response:
                return response.status, response.read().decode("utf-8", "replace"), response.geturl()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode("utf-8", "replace"), exc.geturl()

    def sign_in(self, email_address: str, password: str) -> None:
        """The login form, as a person fills it in; lands on the dashboard."""
        status, page, _ = self.get("/login")
        assert status == 200, page[:500]
        status, page, url = self.post_form("/login", {"email": email_address, "password": password,
                                                      "csrf_token": csrf_from(page)})
        assert status == 200 and url.endswith("/admin/embeddings"), (status, url, page[:500])
