"""Bad input: no 500 ever, one error shape, markup escaped, no auth or CSRF bypass, no secret in a log or response.

Property-based (hypothesis) over every JSON endpoint with the Flask test client, then hand-picked cases:
oversize bodies, deep JSON, unpaired surrogates, wrong types, malformed ids, script in every field,
Bearer-token and CSRF bypass attempts, login brute force, and secrets through every error path.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobflow.jobs.store import FIELD_LIMITS, WRITABLE_FIELDS
from jobflow.models import Job
from tests.support.web import fresh_addr, seg, sign_in

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The same examples on every run (CI stays deterministic); JOBFLOW_FUZZ_RANDOM=1 explores new ones.
FUZZ = settings(max_examples=60, deadline=None, database=None, derandomize=not os.environ.get("JOBFLOW_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SCRIPT = '<script>alert("pwned")</script>'
NASTY = [SCRIPT, '"><img src=x onerror=alert(1)>', "{{7*7}}", "{% raw %}", "\u202eevil\u202c", "שלום עולם",
         "مرحبا بالعالم", "Zürich – Ελλάδα – 東京 – 🚀", "lone \ud800 surrogate", "\udfff", "a\u0000b",
         "line\r\nbreak", "x" * 400, " ", "", "null"]


def assert_answer(response, json_endpoint: bool = True) -> None:
    """Never a 5xx; every error is the one JSON shape; no traceback anywhere."""
    body = response.get_data(as_text=True)
    assert response.status_code < 500, f"{response.status_code}: {body[:500]}"
    assert "Traceback" not in body
    if response.status_code >= 400:
        assert response.mimetype == "application/json", (response.status_code, body[:300])
        data = response.get_json()
        assert set(data) == {"error"}, data
        error = data["error"]
        assert set(error) <= {"code", "message", "fields"}, error
        assert isinstance(error["code"], str) and error["code"], error
        assert isinstance(error["message"], str) and error["message"], error
        if "fields" in error:
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in error["fields"].items())
    elif 300 <= response.status_code < 400:
        assert response.headers["Location"]     # werkzeug folds "//" in a path with a redirect
    elif json_endpoint and response.status_code != 204:
        assert response.mimetype == "application/json", body[:300]
        json.loads(body)


# ----- strategies ----------------------------------------------------------------------------------------------

nasty_text = st.one_of(st.text(max_size=60), st.sampled_from(NASTY))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), nasty_text)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(nasty_text, inner, max_size=4), max_leaves=12)
field_names = st.one_of(st.sampled_from(WRITABLE_FIELDS), nasty_text)
job_bodies = st.one_of(json_values, st.dictionaries(field_names, st.one_of(nasty_text, json_values), max_size=8))
raw_bodies = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                       json_values.map(lambda v: json.dumps(v).encode()))
path_ids = st.one_of(st.text(min_size=1, max_size=40), st.from_regex(r"[0-9a-f]{24}", fullmatch=True),
                     st.sampled_from(["000000000000000000000000", "nope", "..", "%00", "null", "-1", "1e3"]))
query = st.dictionaries(st.sampled_from(["status", "category", "q", "limit", "after", "before", "task", "days",
                                         "dryRun", "range", "fragment", "token"]),
                        st.one_of(nasty_text, st.integers().map(str)), max_size=5)
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                 "application/x-www-form-urlencoded", "multipart/form-data", ""])


def qs(args: dict) -> str:
    return urlencode(args, errors="surrogatepass")


@pytest.fixture
def job_id(app):
    """An existing job to aim at."""
    job = Job(title="Target", description="Target job", status="active").save()
    return str(job.id)


# ----- properties: every JSON endpoint --------------------------------------------------------------------------

@FUZZ
@given(body=job_bodies, method=st.sampled_from(["POST", "PUT", "PATCH"]))
def test_job_writes_never_fail_on_any_json(client, job_id, body, method):
    path = "/api/jobs" if method == "POST" else f"/api/jobs/{job_id}"
    response = client.open(path, method=method, json=body, headers=AUTH, environ_base=fresh_addr())
    assert_answer(response)
    if response.status_code < 300:
        assert isinstance(body, dict)


text_fields = [name for name in WRITABLE_FIELDS if name != "status"]
plausible_jobs = st.fixed_dictionaries({"title": nasty_text, "description": nasty_text},
                                       optional={name: nasty_text for name in text_fields
                                                 if name not in ("title", "description")})


@FUZZ
@given(body=plausible_jobs)
def test_any_text_in_any_field_is_stored_and_shown_or_refused_cleanly(client, body):
    response = client.post("/api/jobs", json=body, headers=AUTH, environ_base=fresh_addr())
    assert_answer(response)
    if response.status_code != 201:
        assert response.status_code == 400 and response.get_json()["error"]["fields"]
        return
    created = response.get_json()
    stored = client.get(f"/api/jobs/{created['id']}")
    assert stored.status_code == 200 and stored.get_json()["title"] == created["title"]
    page = client.get(f"/jobs/{created['id']}")
    assert page.status_code == 200 and SCRIPT not in page.get_data(as_text=True)
    patched = client.patch(f"/api/jobs/{created['id']}", json={k: v for k, v in body.items() if k != "title"},
                           headers=AUTH, environ_base=fresh_addr())
    assert_answer(patched)


@FUZZ
@given(raw=raw_bodies, ctype=content_types, method=st.sampled_from(["POST", "PUT", "PATCH"]),
       admin_action=st.sampled_from(["", "recompute-all", "retry-failed", "clear-old-queue"]))
def test_raw_bodies_of_any_type_never_fail(client, job_id, raw, ctype, method, admin_action):
    if admin_action:
        path, method = f"/api/admin/embeddings/{admin_action}", "POST"
    else:
        path = "/api/jobs" if method == "POST" else f"/api/jobs/{job_id}"
    response = client.open(path, method=method, data=raw, content_type=ctype or None, headers=AUTH,
                           environ_base=fresh_addr())
    assert_answer(response)


@FUZZ
@given(ident=path_ids, method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE"]), limit=st.one_of(st.none(), nasty_text))
def test_any_job_id_in_any_path_is_a_clean_answer(client, ident, method, limit):
    for path in (f"/api/jobs/{seg(ident)}", f"/api/jobs/{seg(ident)}/similar"):
        if path.endswith("/similar") and method != "GET":
            continue
        if limit is not None:
            path += "?" + qs({"limit": limit})
        response = client.open(path, method=method, json={"title": "x"}, headers=AUTH, environ_base=fresh_addr())
        assert_answer(response)
        assert response.status_code in (200, 204, 308, 400, 404, 405, 409, 415), (path, response.status_code)


@FUZZ
@given(args=query, path=st.sampled_from(["/api/jobs", "/api/health/embeddings", "/api/openapi.json",
                                         "/api/admin/embeddings/status", "/api/admin/embeddings/queue",
                                         "/api/admin/embeddings/workers"]),
       authorized=st.booleans())
def test_any_query_string_on_every_get_endpoint(client, job_id, args, path, authorized):
    response = client.get(path + ("?" + qs(args) if args else ""), headers=AUTH if authorized else {},
                          environ_base=fresh_addr())
    assert_answer(response)
    if path.startswith("/api/admin") and not authorized:
        assert response.status_code == 401


@FUZZ
@given(body=json_values, action=st.sampled_from(["recompute-all", "retry-failed", "clear-old-queue"]),
       dry=st.booleans())
def test_admin_actions_never_fail_on_any_json(client, body, action, dry):
    path = f"/api/admin/embeddings/{action}" + ("?dryRun=1" if dry else "")
    response = client.post(path, json=body, headers=AUTH, environ_base=fresh_addr())
    assert_answer(response)


# ----- hand-picked bad input ------------------------------------------------------------------------------------

def test_oversize_bodies_answer_413(client, job_id):
    big = json.dumps({"title": "x", "description": "y" * (1024 * 1024 + 10)})
    for method, path in (("POST", "/api/jobs"), ("PUT", f"/api/jobs/{job_id}"), ("PATCH", f"/api/jobs/{job_id}"),
                         ("POST", "/api/admin/embeddings/recompute-all")):
        response = client.open(path, method=method, data=big, content_type="application/json", headers=AUTH,
                               environ_base=fresh_addr())
        assert response.status_code == 413, (path, response.status_code)
        assert_answer(response)


def test_a_field_over_its_limit_is_named(client):
    for name, limit in FIELD_LIMITS.items():
        body = {"title": "t", "description": "d", name: "x" * (limit + 1)}
        response = client.post("/api/jobs", json=body, headers=AUTH, environ_base=fresh_addr())
        assert response.status_code == 400 and "longer than" in response.get_json()["error"]["fields"][name]


@pytest.mark.parametrize("deep", ["[" * 10000 + "]" * 10000, '{"a":' * 10000 + "1" + "}" * 10000,
                                  '{"title": ' + "[" * 5000 + "]" * 5000 + ', "description": "d"}'])
def test_deeply_nested_json_is_invalid_json_not_a_crash(client, job_id, deep):
    for method, path in (("POST", "/api/jobs"), ("PUT", f"/api/jobs/{job_id}"), ("PATCH", f"/api/jobs/{job_id}"),
                         ("POST", "/api/admin/embeddings/retry-failed"),
                         ("POST", "/api/admin/embeddings/clear-old-queue")):
        response = client.open(path, method=method, data=deep, content_type="application/json", headers=AUTH,
                               environ_base=fresh_addr())
        assert response.status_code == 400, (path, response.status_code)
        assert_answer(response)
        assert response.get_json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("name", WRITABLE_FIELDS)
def test_wrong_types_and_unpaired_surrogates_are_named(client, job_id, name):
    for value in (1, 1.5, True, [], {}, ["a"], {"$gt": ""}):
        body = {"title": "t", "description": "d", name: value}
        response = client.post("/api/jobs", json=body, headers=AUTH, environ_base=fresh_addr())
        assert response.status_code == 400 and name in response.get_json()["error"]["fields"], (name, value)
    # JSON may carry an unpaired surrogate ("\ud800"); MongoDB cannot store it: a 400 naming the field.
    raw = '{"title": "t", "description": "d", "%s": "bad \\ud800 text"}' % name
    for method, path in (("POST", "/api/jobs"), ("PATCH", f"/api/jobs/{job_id}")):
        response = client.open(path, method=method, data=raw, content_type="application/json", headers=AUTH,
                               environ_base=fresh_addr())
        assert_answer(response)
        assert response.status_code == 400 and name in response.get_json()["error"]["fields"], (name, method)


def test_malformed_ids_answer_404_everywhere(client):
    for ident in ("nope", "0" * 23, "g" * 24, "0" * 25, "000000000000000000000000", "../../etc/passwd",
                  "%2e%2e", "😀" * 12, "6b0b2bd0e1c2a3b4c5d6e7f8", " " * 24):
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            response = client.open(f"/api/jobs/{seg(ident)}", method=method, json={"title": "x"}, headers=AUTH,
                                   environ_base=fresh_addr())
            assert_answer(response)
            assert response.status_code in (400, 404), (ident, method, response.status_code)
        response = client.get(f"/api/jobs/{seg(ident)}/similar")
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
        assert client.get(f"/jobs/{seg(ident)}").status_code == 404


# ----- markup and script, rendered ------------------------------------------------------------------------------

def markup_job(client) -> str:
    body = {name: f"{name} {SCRIPT} \u202e{NASTY[1]}"[:FIELD_LIMITS[name]] for name in WRITABLE_FIELDS
            if name != "status"}
    response = client.post("/api/jobs", json=body, headers=AUTH, environ_base=fresh_addr())
    assert response.status_code == 201, response.get_data(as_text=True)
    created = response.get_json()
    assert created["title"] == body["title"]          # stored as given: escaping is the renderer's job
    return created["id"]


def assert_escaped(html: str) -> None:
    assert SCRIPT not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html


def test_script_in_every_field_is_escaped_on_the_public_pages(client):
    job_id = markup_job(client)
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert_escaped(html)
    for name in ("title", "company", "location", "category", "description"):
        assert f"{name} &lt;script&gt;" in html, name
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    home = client.get("/").get_data(as_text=True)
    assert_escaped(home)
    api = client.get(f"/api/jobs/{job_id}")
    assert api.mimetype == "application/json" and api.headers["X-Content-Type-Options"] == "nosniff"


def test_script_in_every_field_is_escaped_on_the_admin_pages(client, fast_hashing):
    job_id = markup_job(client)
    sign_in(client, "escape@example.com", environ_base=fresh_addr())
    for path in (f"/admin/embeddings/jobs/{job_id}", f"/admin/embeddings/jobs?q={quote('title <script>')}",
                 "/admin/embeddings/queue"):
        response = client.get(path)
        assert response.status_code == 200, path
        html = response.get_data(as_text=True)
        assert SCRIPT not in html and "<img src=x" not in html, path
    assert "&lt;script&gt;alert(" in client.get(f"/admin/embeddings/jobs/{job_id}").get_data(as_text=True)


# ----- extreme keyset cursors (ids and times at the ends of their ranges) -------------------------------------------

OID_ZERO, OID_MAX = "0" * 24, "f" * 24


def queue_items_at(*times):
    """Pending queue items whose ids carry the given times (newest last); their ids as strings."""
    from bson import ObjectId

    from jobflow.models import QueueItem
    from jobflow.timeutil import utcnow
    ids = []
    for n, when in enumerate(times):
        oid = ObjectId(ObjectId.from_datetime(when).binary[:4] + n.to_bytes(8, "big"))
        QueueItem._get_collection().insert_one({"_id": oid, "jobId": ObjectId(), "taskType": "generate_embedding",
                                                "status": "pending", "priority": 10, "attempts": 0,
                                                "nextAttemptAt": utcnow(), "createdAt": utcnow(),
                                                "updatedAt": utcnow(), "errorHistory": []})
        ids.append(str(oid))
    return ids


def test_queue_cursors_at_the_ends_of_the_objectid_range_are_clamped(client, fast_hashing):
    from datetime import datetime, timedelta, timezone

    from jobflow.ops.queue_view import QueueFilter, queue_page
    from jobflow.timeutil import utcnow
    now = utcnow()
    ids = queue_items_at(datetime(1970, 1, 1, 0, 5, tzinfo=timezone.utc), now - timedelta(days=400),
                         now - timedelta(hours=1), now, datetime(2106, 2, 7, 6, 0, tzinfo=timezone.utc))
    newest_first = ids[::-1]

    def page(**cursor):
        return [str(d["_id"]) for d in queue_page(QueueFilter(), limit=3, **cursor).items]
    # 24 zeros: nothing is older, everything newer; 24 f's: everything is older, nothing newer.
    assert page(before=OID_ZERO) == []
    assert page(after=OID_MAX) == []
    assert page(before=OID_MAX) == newest_first[:3]
    assert page(after=OID_ZERO) == ids[:3][::-1]
    # Cursors next to the ends walk across them page by page.
    assert page(before=ids[1]) == [ids[0]] and page(after=ids[3]) == [ids[4]]
    for args in ({"before": OID_ZERO}, {"after": OID_MAX}, {"before": OID_MAX}, {"after": OID_ZERO}):
        response = client.get("/api/admin/embeddings/queue?" + qs(args), headers=AUTH, environ_base=fresh_addr())
        assert response.status_code == 200, (args, response.get_data(as_text=True)[:300])
        assert_answer(response)
    listed = client.get(f"/api/admin/embeddings/queue?before={OID_MAX}&limit=2", headers=AUTH,
                        environ_base=fresh_addr()).get_json()
    assert [i["id"] for i in listed["items"]] == newest_first[:2] and listed["next"]
    # The dashboard's queue page, as a viewer may reach it.
    sign_in(client, "viewer-cursor@example.com", role="viewer", environ_base=fresh_addr())
    for args in ({"before": OID_ZERO}, {"after": OID_MAX}, {"before": OID_MAX}, {"after": OID_ZERO},
                 {"before": OID_ZERO, "status": "pending"}, {"after": OID_MAX, "task": "generate_embedding"}):
        response = client.get("/admin/embeddings/queue?" + qs(args), environ_base=fresh_addr())
        assert response.status_code == 200, (args, response.status_code)
        assert "Traceback" not in response.get_data(as_text=True)
    html = client.get(f"/admin/embeddings/queue?before={OID_MAX}", environ_base=fresh_addr()).get_data(as_text=True)
    assert all(i in html for i in ids)


@pytest.mark.parametrize("args, field", [({"before": "nope"}, "before"), ({"after": "1" * 23}, "after"),
                                         ({"before": "g" * 24}, "before"), ({"after": "0" * 25}, "after"),
                                         ({"limit": "many"}, "limit"), ({"limit": "9" * 5000}, "limit"),
                                         ({"limit": "-1"}, "limit"), ({"limit": "201"}, "limit")])
def test_admin_queue_api_names_a_bad_cursor_or_limit(client, args, field):
    response = client.get("/api/admin/embeddings/queue?" + qs(args), headers=AUTH, environ_base=fresh_addr())
    assert response.status_code == 400, (args, response.status_code)
    assert_answer(response)
    assert response.get_json()["error"]["fields"] == {field: response.get_json()["error"]["fields"][field]}


@pytest.mark.parametrize("before", ["0001-01-01", "0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59",
                                    "9999-12-31", "9999-12-31T23:59:59.999999-01:00", "9999-12-31T23:59:59+00:00",
                                    "not a date", "2024-13-45", "", " ", "\x00", "2024-01-01\r\nX: y", "x" * 5000])
def test_audit_page_with_an_extreme_or_bad_before_shows_the_first_page(client, fast_hashing, before):
    from jobflow.models import AuditEntry
    from jobflow.ops.actions import recent_audit
    AuditEntry(actor="someone@example.com", via="cli", action="canary-action", target="t").save()
    first = [e.id for e in recent_audit()]
    assert len(first) == 1 and [e.id for e in recent_audit(before)] == first
    sign_in(client, "viewer-audit@example.com", role="viewer", environ_base=fresh_addr())
    response = client.get("/admin/embeddings/audit?" + qs({"before": before}), environ_base=fresh_addr())
    assert response.status_code == 200, response.status_code
    html = response.get_data(as_text=True)
    assert "canary-action" in html and "Traceback" not in html


def test_audit_pages_still_walk_back_in_time(app):
    from datetime import timedelta

    from jobflow.models import AuditEntry
    from jobflow.ops.actions import recent_audit
    from jobflow.timeutil import utcnow
    now = utcnow()
    for days in (0, 2, 40, 400, 4000):
        AuditEntry(actor="a", via="cli", action=f"act-{days}", at=now - timedelta(days=days)).save()
    assert [e.action for e in recent_audit(limit=2)] == ["act-0", "act-2"]
    older = recent_audit((now - timedelta(days=2)).isoformat(), limit=2)
    assert [e.action for e in older] == ["act-40", "act-400"]
    assert [e.action for e in recent_audit(older[-1].at.isoformat(), limit=2)] == ["act-4000"]


# ----- authentication and CSRF ------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Bearer wrong-token", f"Bearer {TOKEN}x",
                                    f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", f"Token {TOKEN}", TOKEN,
                                    "bearer wrong-token", f"Bearer\t{TOKEN}x", "Bearer ÿÿÿ", f"Bearer {TOKEN},x"])
def test_bad_bearer_tokens_are_refused(client, header):
    headers = {} if header is None else {"Authorization": header}
    for method, path in (("POST", "/api/jobs"), ("GET", "/api/admin/embeddings/status"),
                         ("POST", "/api/admin/embeddings/recompute-all"), ("GET", "/metrics")):
        response = client.open(path, method=method, json={"title": "t", "description": "d"}, headers=headers,
                               environ_base=fresh_addr())
        assert response.status_code == 401, (header, path, response.status_code)
        if path.startswith("/api/"):
            assert_answer(response)
            assert response.headers["WWW-Authenticate"] == "Bearer"
        assert TOKEN not in response.get_data(as_text=True)
    assert Job.objects.count() == 0


def test_the_scheme_is_case_insensitive_but_the_token_is_exact(client):
    # RFC 7235: the auth scheme is case-insensitive; only the exact token opens.
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = client.get("/api/admin/embeddings/status", headers={"Authorization": f"{scheme} {TOKEN}"},
                              environ_base=fresh_addr())
        assert response.status_code == 200, scheme
    assert client.get("/api/admin/embeddings/status", headers={"Authorization": f"Bearer {TOKEN.upper()}"},
                      environ_base=fresh_addr()).status_code == 401


def test_a_token_in_the_query_string_or_a_cookie_is_not_accepted(client):
    for name in ("token", "access_token", "api_key", "apiKey", "Authorization", "bearer"):
        response = client.get(f"/api/admin/embeddings/status?{name}={TOKEN}", environ_base=fresh_addr())
        assert response.status_code == 401, name
        response = client.post(f"/api/jobs?{name}={quote('Bearer ' + TOKEN)}", json={"title": "t", "description": "d"},
                               environ_base=fresh_addr())
        assert response.status_code == 401, name
        assert client.get(f"/metrics?{name}={TOKEN}", environ_base=fresh_addr()).status_code == 401
    client.set_cookie("Authorization", f"Bearer {TOKEN}")
    client.set_cookie("token", TOKEN)
    assert client.get("/api/admin/embeddings/status", environ_base=fresh_addr()).status_code == 401
    assert Job.objects.count() == 0


def test_admin_posts_from_a_session_need_the_csrf_token(client, fast_hashing):
    token = sign_in(client, "csrf@example.com", environ_base=fresh_addr())
    for action in ("recompute-all", "retry-failed", "clear-old-queue"):
        for headers in ({}, {"X-CSRFToken": "forged"}, {"X-CSRFToken": ""}):
            response = client.post(f"/api/admin/embeddings/{action}?dryRun=1", json={}, headers=headers,
                                   environ_base=fresh_addr())
            assert response.status_code == 400 and response.get_json()["error"]["code"] == "csrf_failed", headers
        ok = client.post(f"/api/admin/embeddings/{action}?dryRun=1", json={}, headers={"X-CSRFToken": token},
                         environ_base=fresh_addr())
        assert ok.status_code == 200, ok.get_data(as_text=True)
    # A token in the body or the query string is not the header: refused.
    assert client.post(f"/api/admin/embeddings/recompute-all?dryRun=1&csrf_token={token}", json={"csrf_token": token},
                       environ_base=fresh_addr()).status_code == 400
    # The dashboard's own forms: a POST without the form's token is refused and changes nothing.
    for path in ("/admin/embeddings/actions/recompute-all", "/admin/embeddings/actions/retry-failed",
                 "/admin/embeddings/actions/clear-old-queue"):
        response = client.post(path, data={"confirm": "yes"}, environ_base=fresh_addr())
        assert response.status_code == 400, path
        response = client.post(path, data={"confirm": "yes", "csrf_token": "forged"}, environ_base=fresh_addr())
        assert response.status_code == 400, path


def test_a_viewer_session_cannot_act_even_with_its_token(client, fast_hashing):
    token = sign_in(client, "viewer@example.com", role="viewer", environ_base=fresh_addr())
    response = client.post("/api/admin/embeddings/retry-failed", json={}, headers={"X-CSRFToken": token},
                           environ_base=fresh_addr())
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
    response = client.post("/admin/embeddings/actions/retry-failed", data={"csrf_token": token, "confirm": "yes"},
                           environ_base=fresh_addr())
    assert response.status_code == 403


def test_login_brute_force_is_rate_limited(client, fast_hashing):
    from jobflow.ops.users import create_user
    create_user("target@example.com", "the real password")
    attacker = {"REMOTE_ADDR": "203.0.113.66"}
    form = client.get("/login", environ_base=attacker).get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form).group(1)
    statuses = []
    for n in range(15):
        response = client.post("/login", data={"email": "target@example.com", "password": f"guess {n}",
                                               "csrf_token": token}, environ_base=attacker)
        statuses.append(response.status_code)
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}, statuses
    # Even the right password is refused while limited; another address is not affected.
    right = client.post("/login", data={"email": "target@example.com", "password": "the real password",
                                        "csrf_token": token}, environ_base=attacker)
    assert right.status_code == 429 and "Too many" in right.get_data(as_text=True)
    other = client.post("/login", data={"email": "target@example.com", "password": "the real password",
                                        "csrf_token": token}, environ_base={"REMOTE_ADDR": "203.0.113.67"})
    assert other.status_code == 302


# ----- no secret in any log line or response ---------------------------------------------------------------------

SECRETS = {"OPENAI_API_KEY": "sk-proj-Zq8XcanaryOPENAI7f3a9c1e5b2d4f6a8c0e",
           "ADMIN_API_TOKEN": "canary-admin-token-5b7d9f1a3c5e7a9b",
           "MAIL_PASSWORD": "canary-smtp-password-2e4a6c8e0f1b3d5f",
           "SECRET_KEY": "canary-secret-key-8c0e2a4c6e8a0c2e"}


def leaks(text: str) -> list[str]:
    """Secrets, or any 12 characters in a row of one, found in ``text``."""
    found = []
    for name, secret in SECRETS.items():
        if any(secret[i:i + 12] in text for i in range(len(secret) - 11)):
            found.append(name)
    return found


def test_no_secret_in_any_log_line_or_response(make_app, caplog, tmp_path):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from jobflow.alerts import send_test_email
    from jobflow.db import free_port
    from jobflow.jobs import queue
    from jobflow.worker.loop import Worker
    from tests.support.openai_server import EmbeddingsServer

    caplog.set_level(logging.DEBUG)
    responses: list[str] = []

    class Refuse:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    def refuse_login(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=False, handled=False)

    smtp = Controller(Refuse(), hostname="127.0.0.1", port=free_port(), authenticator=refuse_login,
                      auth_require_tls=False)
    smtp.start()
    try:
        with EmbeddingsServer(api_key="sk-the-right-key-is-not-ours-000") as provider:
            app = make_app(OPENAI_API_KEY=SECRETS["OPENAI_API_KEY"], ADMIN_API_TOKEN=SECRETS["ADMIN_API_TOKEN"],
                           SECRET_KEY=SECRETS["SECRET_KEY"], MAIL_PASSWORD=SECRETS["MAIL_PASSWORD"],
                           MAIL_USERNAME="alerts@example.com", MAIL_SERVER="127.0.0.1", MAIL_PORT=smtp.port,
                           MAIL_USE_TLS=False, MAIL_SUPPRESS_SEND=False, EMBEDDING_PROVIDER="openai",
                           OPENAI_BASE_URL=provider.base_url,
                           DEBUG_EMBEDDINGS=True, DEBUG_WORKER=True, DEBUG_QUEUE=True, PROPAGATE_EXCEPTIONS=False)
            client = app.test_client()
            with app.app_context():
                job = Job(title="Secret test", description="d", status="active").save()
                queue.enqueue(job.id)
                # The provider refuses our key (401), then says it again through a fault.
                worker = Worker.from_app(app)
                worker.start(scheduler=False)
                worker.process_queue()
                assert worker.state == "degraded" and "refused the API key" in worker.reason
                provider.api_key = SECRETS["OPENAI_API_KEY"]
                provider.fail_next(1, "bad_key")
                worker.blocked_until = 0
                worker.process_queue()
                worker.heartbeat()
                worker.stop(timeout=1)
                # The SMTP server refuses the login, then is down altogether.
                refused = send_test_email(app, "ops@example.com")
                smtp.stop()
                down = send_test_email(app, "ops@example.com")
                assert not refused.ok and not down.ok
                responses += [refused.message, down.message]
            # Bad, near-miss and right tokens; every read-only endpoint that describes the service.
            near = SECRETS["ADMIN_API_TOKEN"]
            for header in (f"Bearer {near}x", f"Bearer {near[:-1]}", f"Basic {near}", "Bearer wrong"):
                for path in ("/api/admin/embeddings/status", "/metrics"):
                    responses.append(client.get(path, headers={"Authorization": header},
                                                environ_base=fresh_addr()).get_data(as_text=True))
            good = {"Authorization": f"Bearer {near}"}
            for path in ("/api/admin/embeddings/status", "/api/admin/embeddings/workers", "/api/admin/embeddings/queue",
                         "/metrics", "/api/health/embeddings", "/api/openapi.json", "/api/jobs", "/", "/login"):
                response = client.get(path, headers=good, environ_base=fresh_addr())
                assert response.status_code < 500, path
                responses.append(response.get_data(as_text=True) + str(response.headers))
            responses.append(client.post("/api/jobs", data="{", content_type="application/json", headers=good,
                                         environ_base=fresh_addr()).get_data(as_text=True))
    finally:
        if smtp.loop.is_running():
            smtp.stop()
    lines = [caplog.text] + [record.getMessage() for record in caplog.records]
    assert "refused the API key" in caplog.text and "not sent" in caplog.text   # the errors were logged
    assert not leaks("\n".join(lines)), leaks("\n".join(lines))
    assert not leaks("\n".join(responses)), leaks("\n".join(responses))
    assert "Traceback" not in caplog.text


@pytest.mark.slow
def test_no_secret_in_a_worker_process_or_command_output(app, db_uri, tmp_path):
    from jobflow.jobs import queue
    from tests.support.openai_server import EmbeddingsServer
    job = Job(title="Secret test", description="d", status="active").save()
    queue.enqueue(job.id)
    with EmbeddingsServer(api_key="sk-the-right-key-is-not-ours-000") as provider:
        env = {**os.environ, "MONGODB_URI": db_uri, "EMBEDDING_PROVIDER": "openai",
               "OPENAI_BASE_URL": provider.base_url, "JOBFLOW_INSTANCE_PATH": str(tmp_path / "instance"),
               "DEMO_DATA": "false", "EMBEDDING_WORKER_INTERVAL": "200", "WORKER_HEARTBEAT_INTERVAL": "500",
               "LOG_LEVEL": "DEBUG", "MAIL_SERVER": "127.0.0.1", "MAIL_USERNAME": "a@example.com", **SECRETS}
        check = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "test-embeddings"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 1, check.stdout[-2000:] + check.stderr[-2000:]
        worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(4)
        finally:
            worker.terminate()
            output, _ = worker.communicate(timeout=40)
    assert worker.returncode == 0, output[-2000:]
    assert "WORKER STATS" in output and "refused the API key" in output
    everything = check.stdout + check.stderr + output
    assert "refused the API key" in check.stdout + check.stderr
    assert not leaks(everything), leaks(everything)
    assert "Traceback" not in everything
