"""Dashboard access: sign-in, roles enforced on the server, CSRF, rate limit, cookies, CSP, create-admin."""
import re

import pytest

from jobflow.models import AdminUser, AuditEntry, QueueItem
from jobflow.ops.users import UserError, authenticate, create_user, first_run_notice
from tests.support.web import sign_in

pytestmark = pytest.mark.usefixtures("fast_hashing")


def csrf_token(client, path="/login"):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)


def session_token(client):
    """The CSRF token of the client's current session: each sign-in starts a new one."""
    return csrf_token(client, "/admin/embeddings/audit" if client.get("/login").status_code == 302 else "/login")


def test_pages_need_a_sign_in(client):
    response = client.get("/admin/embeddings/queue")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")
    sign_in(client)
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
                                               "csrf_token": session_token(client), "next": target})
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
    create_user("admin@example.com", "correct horse", "admin")
    response = client.post("/login", data={"email": "admin@example.com", "password": "correct horse",
                                           "csrf_token": csrf_token(client)})
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
    sign_in(client, "viewer@example.com", "viewer password", role="viewer")
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
    sign_in(client)
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400          # no token
    token = csrf_token(client, "/admin/embeddings")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/embeddings").status_code == 302


@pytest.mark.parametrize("email,password,role,message", [
    ("not-an-email", "long enough?", "admin", "not an email"),
    ("a@example.com", "short", "admin", "at least 12"),
    ("a@example.com", "long enough?", "owner", "role must be"),
])
def test_create_user_refuses_bad_values(app, email, password, role, message):
    with pytest.raises(UserError, match=message):
        create_user(email, password, role)


def test_create_admin_command(app):
    from jobflow.cli import register
    if "create-admin" not in app.cli.commands:   # jobflow/cli/ registers it in the app
        register(app)
    runner = app.test_cli_runner()
    assert "No admin user yet" in first_run_notice()
    result = runner.invoke(args=["create-admin", "Ops@Example.com", "--password-stdin"], input="s3cret-pass-Kq9\n")
    assert result.exit_code == 0, result.output
    assert "created admin ops@example.com" in result.output
    user = AdminUser.objects.get(email="ops@example.com")
    assert user.role == "admin" and user.passwordHash != "s3cret-pass-Kq9"
    assert authenticate("ops@example.com", "s3cret-pass-Kq9") is not None
    assert first_run_notice() is None
    # Prompted (hidden, confirmed) when neither standard input nor the environment is named.
    result = runner.invoke(args=["create-admin", "view@example.com", "--role", "viewer"],
                           input="viewer-pass-Kq9\nviewer-pass-Kq9\n")
    assert result.exit_code == 0, result.output
    assert AdminUser.objects.get(email="view@example.com").role == "viewer"
    assert "viewer-pass-Kq9" not in result.output
    again = runner.invoke(args=["create-admin", "ops@example.com"], env={"JOBFLOW_ADMIN_PASSWORD": "another-pass-Kq9"})
    assert again.exit_code != 0 and "already exists" in again.output and "--update" in again.output
    updated = runner.invoke(args=["create-admin", "ops@example.com", "--role", "viewer", "--update"],
                            env={"JOBFLOW_ADMIN_PASSWORD": "another-pass-Kq9"})
    assert updated.exit_code == 0 and authenticate("ops@example.com", "another-pass-Kq9").role == "viewer"
    short = runner.invoke(args=["create-admin", "x@example.com", "--password-stdin"], input="short\n")
    assert short.exit_code != 0 and "at least 12" in short.output
    assert AuditEntry.objects(action="create-user", __raw__={"detail.result": "ok"}).count() == 2


# --- where a sign-in goes next: never another site, never a 500 ---

UNSAFE_NEXT = ["/\r\nSet-Cookie:x=1", "/\nx", "/\tx", "/\t/evil.example", "http://[::1",
               "//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example", " //evil.example",
               "https:evil.example", "https://evil.example/", "evil.example", "/x\x00y", "/\x7f", "/a b", "/\u2028x", "/\u202e",
               "/" + "a" * 3000]


@pytest.mark.parametrize("target", UNSAFE_NEXT)
def test_an_unsafe_next_in_the_form_goes_to_the_dashboard(client, target):
    create_user("a@example.com", "correct horse")
    response = client.post("/login", data={"email": "a@example.com", "password": "correct horse",
                                           "csrf_token": csrf_token(client), "next": target})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/embeddings"
    assert "Set-Cookie:x" not in str(response.headers) and "x=1" not in response.headers.getlist("Set-Cookie")


def test_an_unsafe_next_in_the_query_goes_to_the_dashboard(client):
    sign_in(client)
    for query in ("/%0d%0aSet-Cookie:x=1", "%2F%0aSet-Cookie:x=1", "http://[::1", "//evil.example", "/%5Cevil"):
        response = client.get("/login?next=" + query)
        assert response.status_code == 302 and response.headers["Location"] == "/admin/embeddings", query
    assert client.get("/login?next=/admin/embeddings/queue%3Fstatus%3Dfailed").headers["Location"] == \
        "/admin/embeddings/queue?status=failed"


def test_the_form_carries_only_a_safe_next(client):
    page = client.get("/login?next=/%0d%0aSet-Cookie:x=1").get_data(as_text=True)
    assert 'name="next"' not in page
    page = client.get("/login?next=/admin/embeddings/workers").get_data(as_text=True)
    assert 'name="next" value="/admin/embeddings/workers"' in page


def test_the_next_of_a_login_redirect_survives_sign_in(client):
    create_user("a@example.com", "correct horse")
    first = client.get("/admin/embeddings/queue?status=failed&q=%C3%A9")
    next_url = re.search(r"next=([^&]+)", first.headers["Location"]).group(1)
    from urllib.parse import unquote
    response = client.post("/login", data={"email": "a@example.com", "password": "correct horse",
                                           "csrf_token": csrf_token(client), "next": unquote(next_url)})
    assert response.headers["Location"] == "/admin/embeddings/queue?status=failed&q=%C3%A9"


# --- the sign-in limit is one count per client, shared by every process ---

def wrong_passwords(app, count, address="127.0.0.1", email="a@example.com"):
    """Post ``count`` wrong passwords to ``app`` from ``address``; their status codes."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    token = csrf_token(client)
    return [client.post("/login", data={"email": email, "password": "nope", "csrf_token": token}).status_code
            for _ in range(count)]


# Posts wrong passwords from a process of its own, with an app of its own on the same database.
OTHER_PROCESS = """
import json, re, sys
from jobflow import create_app
config, count = json.loads(sys.argv[1]), int(sys.argv[2])
client = create_app(config).test_client()
token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
print(json.dumps([client.post("/login", data={"email": "a@example.com", "password": "nope", "csrf_token": token}
                              ).status_code for _ in range(count)]))
"""


def wrong_passwords_in_another_process(app, count):
    import json
    import subprocess
    import sys
    from pathlib import Path
    config = {key: app.config[key] for key in ("TESTING", "MONGODB_URI", "EMBEDDING_PROVIDER", "OPENAI_API_KEY",
                                              "SECRET_KEY", "ADMIN_API_TOKEN", "DEMO_DATA")}
    config["INSTANCE_PATH"] = app.instance_path
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", OTHER_PROCESS, json.dumps(config), str(count)], cwd=root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_app_processes_share_one_limit(make_app):
    # Two apps on the same database, as two gunicorn workers (or two hosts) would have: one in this
    # process, one in a process of its own (in one process, flask-limiter's in-memory count was shared).
    first, second = make_app(), make_app()
    create_user("a@example.com", "correct horse")
    assert wrong_passwords_in_another_process(first, 6) == [401] * 6
    assert wrong_passwords(second, 5) == [401] * 4 + [429]
    for app in (first, second):
        client = app.test_client()
        ok = client.post("/login", data={"email": "a@example.com", "password": "correct horse",
                                         "csrf_token": csrf_token(client)})
        assert ok.status_code == 429 and 1 <= int(ok.headers["Retry-After"]) <= 60
        assert "Too many sign-in attempts" in ok.get_data(as_text=True)
    assert wrong_passwords_in_another_process(first, 1) == [429]
    # Another client address has a count of its own.
    assert wrong_passwords(second, 1, address="198.51.100.7") == [401]


def test_right_passwords_do_not_use_up_the_limit(client):
    create_user("a@example.com", "correct horse")
    post = lambda password: client.post("/login", data={"email": "a@example.com", "password": password,
                                                        "csrf_token": session_token(client)}).status_code
    assert [post("nope") for _ in range(9)] == [401] * 9
    assert [post("correct horse") for _ in range(5)] == [302] * 5
    assert [post("nope"), post("nope")] == [401, 429]


def test_limit_windows_minute_and_hour(app):
    from datetime import timedelta

    from jobflow.ops.login_limit import take_attempt
    from jobflow.timeutil import utcnow
    start = utcnow()
    at = lambda seconds: take_attempt("203.0.113.9", start + timedelta(seconds=seconds)).retry_after
    assert [at(i) for i in range(10)] == [None] * 10
    assert at(30) == 30                                       # the minute opened at the first attempt
    assert at(60) is None                                     # the next minute
    # 50 an hour: 10 a minute for four more minutes, then refused until the hour is over.
    assert [at(60 * m + i) for m in range(1, 5) for i in range(1, 10)] == [None] * 36
    assert at(300) is None and at(301) is None and at(302) is None
    assert at(303) == 3600 - 303
    assert at(3600) is None


def test_limit_counts_by_client_and_ipv6_network(make_app):
    app = make_app()   # no app context around the requests: each client gets its own CSRF token
    from jobflow.ops.login_limit import client_key
    assert client_key("203.0.113.9") == "203.0.113.9"
    assert client_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key(None) == client_key("") == "unknown"
    create_user("a@example.com", "correct horse")
    assert wrong_passwords(app, 10, address="2001:db8:1:2::1") == [401] * 10
    assert wrong_passwords(app, 1, address="2001:db8:1:2::99") == [429]      # same /64
    assert wrong_passwords(app, 1, address="2001:db8:1:3::1") == [401]
    assert wrong_passwords(app, 1, address="203.0.113.9") == [401]


def test_limit_counts_concurrent_attempts_exactly(app):
    from concurrent.futures import ThreadPoolExecutor
    from datetime import timedelta

    from jobflow.models import LoginAttempts
    from jobflow.timeutil import utcnow
    now = utcnow()
    with ThreadPoolExecutor(8) as pool:
        counts = sorted(c for c, _ in pool.map(lambda _: LoginAttempts.hit("192.0.2.1", 60, now), range(40)))
    assert counts == list(range(1, 41))
    later = now + timedelta(seconds=61)                 # all at once as the next window opens
    with ThreadPoolExecutor(8) as pool:
        counts = sorted(c for c, _ in pool.map(lambda _: LoginAttempts.hit("192.0.2.1", 60, later), range(20)))
    assert counts == list(range(1, 21))
    assert LoginAttempts.attempts("192.0.2.1", 60, later) == 20
    index = LoginAttempts._get_collection().index_information()["expire"]
    assert index["expireAfterSeconds"] == 0


def test_a_head_request_is_no_sign_in_attempt(client, caplog):
    """``curl -I /login`` shows the form's headers; it neither logs a failed sign-in nor uses up the limit."""
    import logging
    caplog.set_level(logging.INFO)
    for _ in range(12):
        assert client.head("/login").status_code == 200
    assert "failed sign-in" not in caplog.text
    page = client.get("/login")
    assert page.status_code == 200
