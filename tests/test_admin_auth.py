"""Dashboard access: sign-in, roles enforced on the server, CSRF, rate limit, cookies, CSP, create-admin."""
import re

import pytest

from jobflow.auth.users import UserError, authenticate, create_user, first_run_notice
from jobflow.models import AdminUser, AuditEntry, QueueItem

pytestmark = pytest.mark.usefixtures("fast_hashing")


def csrf_token(client, path="/login"):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def login(client, email="admin@example.com", password="correct horse", role="admin"):
    if not AdminUser.objects(email=email).first():
        create_user(email, password, role)
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_token(client)})
    assert response.status_code == 302, response.get_data(as_text=True)
    return response


def test_pages_need_a_sign_in(client):
    response = client.get("/admin/embeddings/queue")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")
    login(client)
    assert client.get("/admin/embeddings/queue").status_code == 200


def test_sign_in_success_failure_and_safe_redirect(client):
    create_user("Admin@Example.com", "correct horse")
    token = csrf_token(client)
    bad = client.post("/login", data={"email": "admin@example.com", "password": "wrong", "csrf_token": token})
    assert bad.status_code == 401 and "Wrong email or password" in bad.get_data(as_text=True)
    unknown = client.post("/login", data={"email": "nobody@example.com", "password": "x", "csrf_token": token})
    assert unknown.status_code == 401
    evil = client.post("/login", data={"email": "ADMIN@example.com", "password": "correct horse",
                                       "csrf_token": token, "next": "https://evil.example/steal"})
    assert evil.status_code == 302 and evil.headers["Location"] == "/admin/embeddings"
    assert AdminUser.objects.get(email="admin@example.com").lastLoginAt is not None
    assert AuditEntry.objects(action="login").count() == 1


def test_next_keeps_a_local_path(client):
    create_user("a@example.com", "correct horse")
    token = csrf_token(client)
    response = client.post("/login", data={"email": "a@example.com", "password": "correct horse",
                                           "csrf_token": token, "next": "/admin/embeddings/workers"})
    assert response.headers["Location"] == "/admin/embeddings/workers"
    for target in ("//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
        response = client.post("/login", data={"email": "a@example.com", "password": "correct horse",
                                               "csrf_token": token, "next": target})
        assert response.headers["Location"] == "/admin/embeddings", target


def test_login_post_without_csrf_is_refused(client):
    create_user("a@example.com", "correct horse")
    response = client.post("/login", data={"email": "a@example.com", "password": "correct horse"})
    assert response.status_code == 400
    assert client.get("/admin/embeddings").status_code == 302


def test_login_is_rate_limited(client):
    create_user("a@example.com", "correct horse")
    token = csrf_token(client)
    codes = [client.post("/login", data={"email": "a@example.com", "password": "nope", "csrf_token": token}).status_code
             for _ in range(11)]
    assert codes[:10] == [401] * 10 and codes[10] == 429
    # Even the right password waits now.
    ok = client.post("/login", data={"email": "a@example.com", "password": "correct horse", "csrf_token": token})
    assert ok.status_code == 429 and "Too many sign-in attempts" in ok.get_data(as_text=True)


def test_session_cookie_and_security_headers(client):
    response = login(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/admin/embeddings")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    assert "<script>" not in page.get_data(as_text=True)  # no inline script: only <script src=...>
    assert client.get("/login").headers["Content-Security-Policy"] == csp


def test_viewer_may_look_but_not_act(client):
    item = QueueItem(jobId="65a000000000000000000001", status="failed", lastError="boom")
    item.save()
    login(client, "viewer@example.com", "viewer pass", role="viewer")
    page = client.get("/admin/embeddings")
    assert page.status_code == 200 and "you can look at everything but not act" in page.get_data(as_text=True)
    detail = client.get(f"/admin/embeddings/queue/{item.id}").get_data(as_text=True)
    assert "Retry…" not in detail
    token = csrf_token(client, "/admin/embeddings")
    for path in (f"/admin/embeddings/queue/{item.id}/retry", "/admin/embeddings/actions/retry-failed",
                 "/admin/embeddings/actions/recompute-all", "/admin/embeddings/actions/clear-old-queue"):
        response = client.post(path, data={"csrf_token": token, "confirm": "yes"})
        assert response.status_code == 403, path
    assert QueueItem.objects.get(id=item.id).status == "failed"
    assert AuditEntry.objects(action__ne="login").count() == 0


def test_logout_is_a_post_with_csrf(client):
    login(client)
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400          # no token
    token = csrf_token(client, "/admin/embeddings")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/embeddings").status_code == 302


@pytest.mark.parametrize("email,password,role,message", [
    ("not-an-email", "long enough", "admin", "not an email"),
    ("a@example.com", "short", "admin", "at least 8"),
    ("a@example.com", "long enough", "owner", "role must be"),
])
def test_create_user_refuses_bad_values(app, email, password, role, message):
    with pytest.raises(UserError, match=message):
        create_user(email, password, role)


def test_create_admin_command(app):
    from jobflow.auth.cli import register
    if "create-admin" not in app.cli.commands:   # jobflow/cli.py registers it in the app
        register(app)
    runner = app.test_cli_runner()
    assert "No admin user yet" in first_run_notice()
    result = runner.invoke(args=["create-admin", "Ops@Example.com", "--password", "s3cret-pass"])
    assert result.exit_code == 0, result.output
    assert "created admin ops@example.com" in result.output
    user = AdminUser.objects.get(email="ops@example.com")
    assert user.role == "admin" and user.passwordHash != "s3cret-pass"
    assert authenticate("ops@example.com", "s3cret-pass") is not None
    assert first_run_notice() is None
    # Prompted (hidden, confirmed) when --password is not given.
    result = runner.invoke(args=["create-admin", "view@example.com", "--role", "viewer"],
                           input="viewer-pass\nviewer-pass\n")
    assert result.exit_code == 0, result.output
    assert AdminUser.objects.get(email="view@example.com").role == "viewer"
    assert "viewer-pass" not in result.output
    again = runner.invoke(args=["create-admin", "ops@example.com", "--password", "another-pass"])
    assert again.exit_code != 0 and "already exists" in again.output and "--update" in again.output
    updated = runner.invoke(args=["create-admin", "ops@example.com", "--password", "another-pass", "--role",
                                  "viewer", "--update"])
    assert updated.exit_code == 0 and authenticate("ops@example.com", "another-pass").role == "viewer"
    short = runner.invoke(args=["create-admin", "x@example.com", "--password", "short"])
    assert short.exit_code != 0 and "at least 8" in short.output
    assert AuditEntry.objects(action="create-user").count() == 2
