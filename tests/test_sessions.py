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
from tests.support.seeding import add_items
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
    form = csrf_from(browser.get("/login").get_data(as_text=True))
    response = browser.post("/login", data={"email": email, "password": password, "csrf_token": form})
    assert response.status_code == 302, response.get_data(as_text=True)
    page = browser.get(PAGE)
    assert page.status_code == 200
    browser.token = csrf_from(page.get_data(as_text=True))     # the new session's token (sign-in replaced the form's)
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
    colleague = signed_in_browser(app, "other@example.com", "another horse")
    admin.post("/logout", data={"csrf_token": admin.token})
    assert_signed_out(laptop)
    assert colleague.get(PAGE).status_code == 200
    # Signing in again works and starts a session that holds.
    again = signed_in_browser(app)
    assert again.get(PAGE).status_code == 200


def test_a_password_change_ends_the_old_sessions(app, admin):
    cookie = saved_cookie(admin)
    update_user("admin@example.com", "a new brown horse", "admin")
    assert_signed_out(admin)
    assert_signed_out(replay(app, cookie))
    assert authenticate("admin@example.com", "a new brown horse") is not None


def test_create_admin_update_ends_the_old_sessions(app, admin):
    from jobflow.cli import register
    if "create-admin" not in app.cli.commands:
        register(app)
    cookie = saved_cookie(admin)
    result = app.test_cli_runner().invoke(args=["create-admin", "admin@example.com", "--password-stdin", "--update"],
                                          input="changed-pass-Kq9\n")
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


# --- sign-in starts a new session; sessions end when idle or old (SESSION_IDLE_MINUTES, SESSION_MAX_HOURS) ---

def test_sign_in_starts_a_new_session_with_a_new_csrf_token(app):
    """Session fixation: an attacker plants a session cookie (and knows its CSRF token) before the admin signs in."""
    create_user("admin@example.com", "correct horse", "admin")
    attacker = app.test_client()
    planted_token = csrf_from(attacker.get("/login").get_data(as_text=True))
    planted = saved_cookie(attacker)
    victim = replay(app, planted)                              # the admin's browser holds the planted cookie
    signed = victim.post("/login", data={"email": "admin@example.com", "password": "correct horse",
                                         "csrf_token": planted_token})
    assert signed.status_code == 302
    assert saved_cookie(victim) != planted
    (item,) = add_items(1, "failed", "boom")
    api = victim.post("/api/admin/embeddings/retry-failed", json={}, headers={"X-CSRFToken": planted_token})
    assert api.status_code == 400 and api.get_json()["error"]["code"] == "csrf_failed"
    form = victim.post(f"/admin/embeddings/queue/{item}/retry", data={"csrf_token": planted_token, "confirm": "yes"})
    assert form.status_code == 400
    assert QueueItem.objects.get(id=item).status == "failed"
    assert replay(app, planted).get(PAGE).status_code == 302          # the planted cookie itself signs nobody in
    # The new session's own token works.
    token = csrf_from(victim.get(PAGE).get_data(as_text=True))
    assert token != planted_token
    ok = victim.post("/api/admin/embeddings/retry-failed", json={}, headers={"X-CSRFToken": token})
    assert ok.status_code == 200 and ok.get_json()["count"] == 1


def set_times(browser, signed_in_ago: int | None = None, seen_ago: int | None = None) -> None:
    """Put the session's sign-in and last-use times ``..._ago`` seconds in the past (None: drop the time)."""
    import time

    from jobflow.web.access import SEEN_AT, SIGNED_IN_AT
    with browser.session_transaction() as session:
        for key, ago in ((SIGNED_IN_AT, signed_in_ago), (SEEN_AT, seen_ago)):
            if ago is None:
                session.pop(key, None)
            else:
                session[key] = int(time.time()) - ago


def assert_expired(app, browser):
    """The session's admin API call is a 401 naming the expiry; its page goes to the sign-in page, which says so."""
    copy = replay(app, saved_cookie(browser))
    api = copy.get("/api/admin/embeddings/status")
    assert api.status_code == 401 and api.get_json()["error"]["code"] == "session_expired"
    assert copy.get("/api/admin/embeddings/status").status_code == 401               # signed out for good
    page = browser.get(PAGE + "/queue?status=failed")
    assert page.status_code == 302 and page.headers["Location"] == "/login?next=/admin/embeddings/queue?status%3Dfailed"
    assert "Your session expired" in browser.get(page.headers["Location"]).get_data(as_text=True)
    assert browser.get(PAGE).status_code == 302
    assert browser.get("/").status_code == 200                                        # public pages stay open


def test_an_idle_session_is_signed_out(app, admin):
    set_times(admin, signed_in_ago=31 * 60, seen_ago=31 * 60)                         # SESSION_IDLE_MINUTES=30
    assert_expired(app, admin)


def test_a_session_ends_after_its_maximum_age_even_in_use(app, admin):
    set_times(admin, signed_in_ago=12 * 3600 + 5, seen_ago=5)                         # SESSION_MAX_HOURS=12
    assert_expired(app, admin)


def test_a_session_from_before_lifetimes_is_signed_out(app, admin):
    set_times(admin)
    assert_expired(app, admin)


def test_use_keeps_a_session_alive_within_the_set_lifetimes(make_app):
    from jobflow.web.access import SEEN_AT
    app = make_app(SESSION_IDLE_MINUTES=2, SESSION_MAX_HOURS=1)
    browser = signed_in_browser(app)
    for _ in range(3):                      # 6 minutes of use, a request every 100 s: never idle for 2 minutes
        set_times(browser, signed_in_ago=600, seen_ago=100)
        assert browser.get(PAGE).status_code == 200
        with browser.session_transaction() as session:
            import time
            assert time.time() - session[SEEN_AT] < 5                                   # the use was noted
    set_times(browser, signed_in_ago=600, seen_ago=121)
    assert_expired(app, browser)
    hour = signed_in_browser(app)
    set_times(hour, signed_in_ago=3601, seen_ago=1)
    assert_expired(app, hour)
