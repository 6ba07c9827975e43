"""The admin API's limits are one count per client address, shared by every process (issue 24, #11):
30 writes a minute, and 10 requests with a wrong API token a minute (50 an hour), then 429 with Retry-After.

Before, the write limit was flask-limiter's in-memory count (30 a minute in each gunicorn process) and
wrong tokens were never limited. Each test proves the sharing with a second OS process and an app of its
own on the same database, as a second gunicorn process (or host) would be.
"""
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from jobflow.models import RequestCounts
from jobflow.ops.request_limit import WRITE_LIMITS, WRONG_TOKEN_LIMITS, token_refused, wrong_token
from jobflow.timeutil import utcnow

ROOT = Path(__file__).resolve().parent.parent
ADDRESS = "203.0.113.20"
WRONG = {"Authorization": "Bearer not-the-admin-token"}
RIGHT = {"Authorization": "Bearer test-token"}
STATUS, DRY_RUN = "/api/admin/embeddings/status", "/api/admin/embeddings/retry-failed?dryRun=1"

# Sends ``count`` requests from ``address`` to an app of its own (same database), in a process of its own.
SECOND_PROCESS = """
import json, sys
from jobflow import create_app
config, method, path, headers, address, count = json.loads(sys.argv[1])
client = create_app(config).test_client()
print(json.dumps([client.open(path, method=method, headers=headers, environ_base={"REMOTE_ADDR": address}).status_code
                  for _ in range(count)]))
"""


def statuses_from_another_process(app, method, path, headers, count, address=ADDRESS) -> list[int]:
    config = {key: app.config[key] for key in ("TESTING", "MONGODB_URI", "EMBEDDING_PROVIDER", "OPENAI_API_KEY",
                                              "SECRET_KEY", "ADMIN_API_TOKEN", "DEMO_DATA", "READ_MODEL")}
    config["INSTANCE_PATH"] = app.instance_path
    args = json.dumps([config, method, path, headers, address, count])
    result = subprocess.run([sys.executable, "-c", SECOND_PROCESS, args], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def statuses_here(app, method, path, headers, count, address=ADDRESS) -> list[int]:
    client = app.test_client()
    return [client.open(path, method=method, headers=headers, environ_base={"REMOTE_ADDR": address}).status_code
            for _ in range(count)]


def assert_too_many(response, what: str) -> None:
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    error = response.get_json()["error"]
    assert error["code"] == "too_many_requests" and what in error["message"]
    assert "test-token" not in response.get_data(as_text=True)


def test_wrong_tokens_are_limited_and_then_even_the_right_one_waits(make_app):
    app = make_app()
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ADDRESS
    assert [client.get(STATUS, headers=WRONG).status_code for _ in range(10)] == [401] * 10
    assert_too_many(client.get(STATUS, headers=WRONG), "wrong API token")
    # Refused before the token is compared: a right guess now gets nothing either, on any route.
    assert_too_many(client.get(STATUS, headers=RIGHT), "wrong API token")
    assert client.post("/api/jobs", json={"title": "t", "description": "d"}, headers=RIGHT).status_code == 429
    assert client.get("/api/jobs", headers=WRONG).status_code == 429
    # Without a token the public API still answers; other addresses are not affected.
    assert client.get("/api/jobs").status_code == 200
    assert statuses_here(app, "GET", STATUS, RIGHT, 1, address="198.51.100.30") == [200]
    assert statuses_here(app, "GET", STATUS, WRONG, 1, address="198.51.100.31") == [401]


def test_wrong_tokens_on_public_routes_count_and_basic_credentials_do_not(make_app):
    app = make_app()
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ADDRESS
    # Basic credentials (a proxy's, in front of the app) are not a wrong API token.
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert [client.get("/api/jobs", headers=basic).status_code for _ in range(15)] == [200] * 15
    # A wrong Bearer token on a public route gets the anonymous answer, and counts.
    assert [client.get("/api/jobs", headers=WRONG).status_code for _ in range(10)] == [200] * 10
    assert_too_many(client.get("/api/jobs", headers=WRONG), "wrong API token")


def test_two_app_processes_share_one_wrong_token_limit(make_app):
    first, second = make_app(), make_app()
    assert statuses_from_another_process(first, "GET", STATUS, WRONG, 6) == [401] * 6
    assert statuses_here(second, "GET", STATUS, WRONG, 5) == [401] * 4 + [429]
    assert statuses_from_another_process(first, "GET", STATUS, RIGHT, 1) == [429]


def test_two_app_processes_share_one_write_limit(make_app):
    first, second = make_app(), make_app()
    assert WRITE_LIMITS == ((30, 60),)
    assert statuses_from_another_process(first, "POST", DRY_RUN, RIGHT, 20) == [200] * 20
    assert statuses_here(second, "POST", DRY_RUN, RIGHT, 11) == [200] * 10 + [429]
    assert statuses_from_another_process(first, "POST", DRY_RUN, RIGHT, 1) == [429]
    client = second.test_client()
    assert_too_many(client.post(DRY_RUN, headers=RIGHT, environ_base={"REMOTE_ADDR": ADDRESS}), "admin API writes")
    # Reads are not writes, and another client has a count of its own.
    assert statuses_here(second, "GET", STATUS, RIGHT, 1) == [200]
    assert statuses_here(second, "POST", DRY_RUN, RIGHT, 1, address="198.51.100.32") == [200]


def test_writes_refused_without_the_token_use_up_nothing(make_app):
    app = make_app()
    assert statuses_here(app, "POST", DRY_RUN, {}, 40) == [401] * 40
    assert statuses_here(app, "POST", DRY_RUN, RIGHT, 30) == [200] * 30


def test_wrong_token_windows_minute_and_hour(app):
    assert WRONG_TOKEN_LIMITS == ((10, 60), (50, 3600))
    start = utcnow()
    at = lambda seconds: start + timedelta(seconds=seconds)
    wrong = lambda seconds: wrong_token("203.0.113.9", at(seconds))
    refused = lambda seconds: token_refused("203.0.113.9", at(seconds))
    assert [wrong(i) for i in range(10)] == [None] * 10
    assert refused(30) == 30                                  # the minute opened at the first wrong token
    assert refused(60) is None                                # the next minute
    # 50 an hour: 10 a minute for four more minutes, then refused until the hour is over.
    for minute in range(1, 5):
        assert [wrong(60 * minute + i) for i in range(10)] == [None] * 10
    assert refused(300) == 3600 - 300
    assert refused(3600) is None
    assert RequestCounts._get_collection().index_information()["expire"]["expireAfterSeconds"] == 0


@pytest.mark.parametrize("address,same", [("2001:db8:1:2::1", "2001:db8:1:2::ffff"),
                                          ("::ffff:203.0.113.9", "203.0.113.9")])
def test_wrong_tokens_count_by_client_like_sign_in(app, address, same):
    """By IPv4 address, or by the /64 network of an IPv6 address (as the sign-in limit)."""
    now = utcnow()
    for _ in range(10):
        wrong_token(address, now)
    assert token_refused(same, now) is not None
    assert token_refused("198.51.100.9", now) is None
