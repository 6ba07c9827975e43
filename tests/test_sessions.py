"""Dashboard sessions can be ended: sign-out and a password change end every copy of a session cookie,
and the user (with their role) is read from the database on every request.

These tests build their own app and push no app context around the requests: the
``app`` fixture keeps one app context (and so one ``flask.g``) across all of a
test's requests, and Flask-Login caches the request's user in ``g``, so under it
a later request would see the user of an earlier one. Here, as in production,
every request gets its own context and loads its user afresh.
"""

import pytest

from jobflow.models import AdminUser, QueueItem
from jobflow.ops.users import authenticate, create_user, update_user
from jobflow.web.access import load_user
from tests.support.web import csrf_from

pytestmark = pytest.mark.usefixtures("fast_hashing")

PAGE = "/admin/embeddings"


@pytest.fixture
def app(make_app):
    """The app, with no app context pushed between requests."""
    return make_app()


def signed_in_browser(app, email="admin@example.com", password="correct horse", role="admin"):
    """A new browser signed in as ``email`` (created when missing); ``.token`` is its CSRF token."""
    if not AdminUser.objects(email=email).first():
        create_user(email, password, role)
    browser = app.test_client()
    browser.token = csrf_from(browser.get("/login").get_data(as_text=True))
    response = browser.post("/login", data={"email": email, "password": password, "csrf_token": browser.token})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert browser.get(PAGE).status_code == 200
    return browser


@pytest.fixture
def admin(app):
    return signed_in_browser(app)


def saved_cookie(client) -> str:
    """The session cookie as an attacker (or a second tab) would have copied it."""
    return client.get_cookie("session").value


def replay(app, cookie: str):
    """A fresh browser that holds only the copied cookie."""
    other = app.test_client()
    other.set_cookie("session", cookie)
    return other


def assert_signed_out(client):
    page = client.get(PAGE)
    assert page.status_code == 302 and page.headers["Location"].startswith("/login"), page.status_code
    api = client.get("/api/admin/embeddings/status")
    assert api.status_code == 401


def test_a_copied_cookie_stops_working_after_logout(app, admin):
    cookie = saved_cookie(admin)
    assert replay(app, cookie).get(PAGE).status_code == 200          # the copy works while signed in
    assert admin.post("/logout", data={"csrf_token": admin.token}).status_code == 302
    assert_signed_out(admin)
    assert_signed_out(replay(app, cookie))


def test_logout_ends_every_session_of_that_user_only(app, admin):
    laptop = signed_in_browser(app)
    colleague = signed_in_browser(app, "other@example.com", "other horse")
    admin.post("/logout", data={"csrf_token": admin.token})
    assert_signed_out(laptop)
    assert colleague.get(PAGE).status_code == 200
    # Signing in again works and starts a session that holds.
    again = signed_in_browser(app)
    assert again.get(PAGE).status_code == 200


def test_a_password_change_ends_the_old_sessions(app, admin):
    cookie = saved_cookie(admin)
    update_user("admin@example.com", "a new horse", "admin")
    assert_signed_out(admin)
    assert_signed_out(replay(app, cookie))
    assert authenticate("admin@example.com", "a new horse") is not None


def test_create_admin_update_ends_the_old_sessions(app, admin):
    from jobflow.cli import register
    if "create-admin" not in app.cli.commands:
        register(app)
    cookie = saved_cookie(admin)
    result = app.test_cli_runner().invoke(args=["create-admin", "admin@example.com", "--password", "changed-pass",
                                                "--update"])
    assert result.exit_code == 0, result.output
    assert_signed_out(replay(app, cookie))


def test_a_role_change_applies_to_the_next_request(app, admin):
    item = QueueItem(jobId="65a000000000000000000001", status="failed", lastError="boom")
    item.save()
    assert admin.post("/admin/embeddings/actions/retry-failed", data={"csrf_token": admin.token}).status_code == 200
    # Demoted behind the session's back (a database edit; create-admin --update ends the session anyway).
    AdminUser.objects(email="admin@example.com").update_one(set__role="viewer")
    response = admin.post(f"/admin/embeddings/queue/{item.id}/retry", data={"csrf_token": admin.token, "confirm": "yes"})
    assert response.status_code == 403
    api = admin.post("/api/admin/embeddings/retry-failed", json={}, headers={"X-CSRFToken": admin.token})
    assert api.status_code == 403
    assert QueueItem.objects.get(id=item.id).status == "failed"
    assert admin.get(PAGE).status_code == 200                         # a viewer may still look


def test_session_ids_without_the_current_token_load_no_user(app):
    user = create_user("a@example.com", "correct horse")
    assert user.get_id() == f"{user.id}:{user.sessionToken}" and len(user.sessionToken) >= 32
    assert load_user(user.get_id()).email == "a@example.com"
    for session_id in (str(user.id),                       # a session from before session tokens
                       f"{user.id}:",
                       f"{user.id}:{user.sessionToken}x",
                       f"{user.id}:wrong",
                       f"65a000000000000000000009:{user.sessionToken}",
                       f"not-an-id:{user.sessionToken}",
                       "", None):
        assert load_user(session_id) is None, session_id


def test_a_user_from_before_session_tokens_gets_one_at_sign_in(app):
    user = create_user("old@example.com", "correct horse")
    AdminUser.objects(id=user.id).update_one(unset__sessionToken=True)
    assert signed_in_browser(app, "old@example.com").get(PAGE).status_code == 200
    assert AdminUser.objects.get(id=user.id).sessionToken
