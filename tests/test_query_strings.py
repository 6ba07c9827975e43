"""Every query string of every GET route: never a 5xx, never a traceback, whoever asks.

The routes come from ``app.url_map`` (a new GET route is fuzzed without touching this file); the
query keys are those the routes read (found in ``jobflow/`` by ``args.get("…")``, ``values.get("…")``
and ``int_arg("…")``) plus the usual suspects; path parameters get the real ids of seeded objects
(a job, a queue item, a worker, a failure signature) or junk. Every generated query goes to every GET
route as four callers: anonymous, with the Bearer token, signed in as a viewer and as an admin.

At the end of the run one line gives the figures, e.g. ``QUERY FUZZ routes=21 cases=4704 5xx=0``
(pytest's terminal summary, with or without ``-s``).
"""
from __future__ import annotations

import itertools
import os
import re
import traceback
from collections import Counter
from datetime import timedelta, timezone
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"Authorization": "Bearer test-token"}
ROLES = ("anonymous", "token", "viewer", "admin")
# Deterministic like tests/test_bad_input.py (JOBFLOW_FUZZ_RANDOM=1 draws new examples). Every example
# is one query sent to every GET route as every role: about 85 requests.
FUZZ = settings(max_examples=int(os.environ.get("JOBFLOW_QUERY_FUZZ_EXAMPLES", "45")), deadline=None,
                database=None, derandomize=not os.environ.get("JOBFLOW_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck))
ADDRESSES = (f"192.0.2.{n}" for n in itertools.cycle(range(1, 255)))   # TEST-NET-1, in-process only
STATS: dict = {"routes": set(), "cases": 0, "5xx": 0, "statuses": Counter(), "failures": []}


def fresh_addr() -> dict:
    return {"REMOTE_ADDR": next(ADDRESSES)}


# ----- what the routes read --------------------------------------------------------------------------------------

READ_PATTERNS = (re.compile(r"""\b(?:args|values|form)\.get\(\s*["']([^"']+)["']"""),
                 re.compile(r"""\bint_arg\(\s*["']([^"']+)["']"""))
USUAL_KEYS = ("before", "after", "limit", "status", "task", "q", "range", "days", "signature", "next", "fragment",
              "category", "dryRun", "page", "offset", "sort", "id", "worker", "workerId", "jobId", "format",
              "token", "callback")


def keys_read_by_the_code() -> set[str]:
    """Every name the app reads from a request's arguments (query string or form)."""
    found = set()
    for path in (ROOT / "jobflow").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in READ_PATTERNS:
            found.update(pattern.findall(text))
    return found


QUERY_KEYS = sorted(keys_read_by_the_code() | set(USUAL_KEYS))

HOSTILE = [
    # ObjectId extremes: times 1970-01-01 and 2106-02-07, sign-bit edges, upper case.
    "0" * 24, "f" * 24, "F" * 24, "7fffffff" + "f" * 16, "80000000" + "0" * 16, "ffffffff" + "0" * 16,
    "00000000" + "f" * 16, "0" * 23, "f" * 25,
    # dates at and beyond the ends of datetime, with and without offsets
    "0001-01-01", "9999-12-31", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999-01:00",
    "0000-00-00", "1969-12-31T23:59:59Z", "2106-02-07T06:28:16", "2038-01-19T03:14:08", "10000-01-01",
    # numbers
    "-1", "0", "1", "-0", "201", "101", "3651", "-3650", "9" * 30, "9" * 5000, "-9223372036854775809",
    "18446744073709551616", "1e309", "1e3", "NaN", "inf", "-inf", "0x10", "١٢", "1_000", " 5 ",
    # control characters, encodings, markup, redirects
    "\x00", "a\x00b", "\r\nSet-Cookie: pwned=1", "/admin/embeddings\r\nX-Evil: 1", "\ud800", "\udfff",
    "🚀" * 20, "שלום", "\u202eevil", "<script>alert(1)</script>", "{{7*7}}", "%00", "%", "../../etc/passwd",
    "//evil.example", "/\\evil.example", "\\\\evil.example", "https://evil.example/", "javascript:alert(1)",
    "/login?next=/login", "/" + "a" * 3000, " ", "", "x" * 5000, "[]", "{}", "null", "true",
    # values the routes accept, so the other arguments are reached
    "pending", "processing", "failed", "completed", "skipped", "generate_embedding", "3h", "24h", "7d", "30d",
    "live", "active", "closed", "/admin/embeddings/workers",
]
RAW_TAILS = ["", "%", "%zz", "%ff%fe", "&&", "=", "==&=", ";", "before", "before=&before=1", "a=%C0%AF", "%E2%80%AE"]


def seg(value: str) -> str:
    """A path segment; unpaired surrogates go as the invalid UTF-8 bytes a client could send."""
    return quote(value, safe="", errors="surrogatepass")


def build_query(pairs: list[tuple[str, str]], tail: str) -> str:
    text = urlencode(pairs, errors="surrogatepass")
    return "&".join(part for part in (text, tail) if part)


# ----- the seeded world ------------------------------------------------------------------------------------------

@pytest.fixture
def world(app, fast_hashing):
    """Jobs, queue items in every state, workers, a failure group, alerts, audit entries; four callers."""
    from jobflow import queue
    from jobflow.auth.users import create_user
    from jobflow.models import Alert, AuditEntry, Job, QueueItem, WorkerStatus
    from jobflow.ops.failures import error_signature
    from jobflow.timeutil import utcnow

    now = utcnow()
    job = Job(title="Fuzz target", description="A job to aim at", company="Acme", category="IT",
              status="active").save()
    closed = Job(title="Closed one", description="Gone", status="closed").save()
    queue.enqueue(job.id)
    pending = QueueItem._get_collection().find_one({"jobId": job.id})["_id"]
    error = f"provider error 500: upstream timeout after 30000 ms for {closed.id}"
    items = {"pending": pending}
    for n, state in enumerate(("failed", "completed", "processing", "skipped")):
        doc = {"_id": ObjectId.from_datetime(now - timedelta(days=n * 20, minutes=n)), "jobId": closed.id,
               "taskType": "generate_embedding", "status": state, "priority": 10, "attempts": 3,
               "nextAttemptAt": now, "createdAt": now, "updatedAt": now, "metadata": {"source": "api"},
               "lockedBy": "fuzz-host:4242:abc" if state == "processing" else None,
               "errorHistory": [{"at": now, "attempt": 1, "error": error, "owner": "fuzz-host:4242:abc"}]}
        if state != "processing":
            doc["finishedAt"] = now - timedelta(days=n * 20)
        if state == "failed":
            doc["lastError"] = error
        items[state] = QueueItem._get_collection().insert_one(doc).inserted_id
    worker_id = "fuzz-host:4242:abc"
    WorkerStatus(workerId=worker_id, host="fuzz-host", pid=4242, state="running", lastHeartbeat=now,
                 startedAt=now - timedelta(hours=1), processed=3, failed=1, memory={"rss": 2**28, "fraction": 0.1},
                 currentBatch={"size": 1, "startedAt": now}).save()
    WorkerStatus(workerId="gone-host:1:dead", host="gone-host", pid=1, state="running",
                 lastHeartbeat=now - timedelta(days=3), startedAt=now - timedelta(days=4)).save()
    Alert(key="queue", title="Queue is long", severity="warning", status="open", openedAt=now, checkedAt=now,
          summary="500 pending", page="/admin/embeddings/queue", figures={"pending": 500},
          history=[{"at": now, "event": "opened", "figures": {"pending": 500}}]).save()
    Alert(key="workers", title="No live worker", status="resolved", openedAt=now - timedelta(days=2),
          resolvedAt=now - timedelta(days=1), history=[{"at": now, "event": "resolved"}]).save()
    for days in (0, 3, 40, 400):
        AuditEntry(actor="fuzz@example.com", via="cli", action="retry-failed", target="all failed items",
                   count=days, at=now - timedelta(days=days)).save()

    clients = {"anonymous": (app.test_client(), {}), "token": (app.test_client(), AUTH)}
    for role in ("viewer", "admin"):
        client = app.test_client()
        email = f"fuzz-{role}@example.com"
        create_user(email, "correct horse battery", role)
        with app.app_context():
            form = client.get("/login", environ_base=fresh_addr()).get_data(as_text=True)
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form).group(1)
        with app.app_context():
            signed = client.post("/login", data={"email": email, "password": "correct horse battery",
                                                 "csrf_token": csrf}, environ_base=fresh_addr())
        assert signed.status_code == 302, signed.get_data(as_text=True)[:300]
        clients[role] = (client, {})

    static = sorted(p.name for p in (ROOT / "static").iterdir() if p.is_file())
    real = {"job_id": [str(job.id), str(closed.id)], "item_id": [str(i) for i in items.values()],
            "worker_id": [worker_id, "gone-host:1:dead"], "signature": [error_signature(error)],
            "filename": static}
    routes = sorted((r for r in app.url_map.iter_rules() if "GET" in r.methods), key=lambda r: r.rule)
    return {"app": app, "clients": clients, "real": real, "routes": routes}


# ----- one request, checked ----------------------------------------------------------------------------------------

PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def concrete(rule, values: dict[str, str]) -> str:
    return PARAM.sub(lambda m: seg(values[m.group(1)]), rule.rule)


def check(world, rule, path: str, query: str, role: str) -> None:
    client, headers = world["clients"][role]
    url = path + ("?" + query if query else "")
    STATS["routes"].add(rule.rule)
    STATS["cases"] += 1
    try:
        # An app context of its own per request: the test's context would keep flask-login's user in ``g``
        # from one client's request to the next client's.
        with world["app"].app_context():
            response = client.get(url, headers=headers, environ_base=fresh_addr())
    except Exception:   # under TESTING the exception propagates: in production it is a 500
        STATS["5xx"] += 1
        STATS["statuses"]["exception"] += 1
        STATS["failures"].append((role, url[:300], "exception"))
        pytest.fail(f"{role} GET {url!r} raised (a 500 in production):\n{traceback.format_exc()}")
    body = response.get_data(as_text=True)
    STATS["statuses"][response.status_code] += 1
    if response.status_code >= 500:
        STATS["5xx"] += 1
        STATS["failures"].append((role, url[:300], response.status_code))
    assert response.status_code < 500, f"{role} GET {url!r}: {response.status_code}\n{body[:800]}"
    assert "Traceback" not in body and 'File "/' not in body, f"{role} GET {url!r}: traceback in the body"
    # Who may not look still may not look, whatever the query says.
    if role == "anonymous" and rule.rule.startswith(("/admin", "/api/admin")) and response.status_code < 300:
        pytest.fail(f"anonymous GET {url!r} answered {response.status_code}")
    if role == "anonymous" and rule.rule.startswith("/api/admin"):
        assert response.status_code in (401, 404, 308), (url, response.status_code)


def junk_ids():
    return st.one_of(st.text(min_size=1, max_size=30), st.from_regex(r"[0-9a-f]{24}", fullmatch=True),
                     st.sampled_from(["0" * 24, "f" * 24, "nope", "..", "%00", "-1", "a/b", " ", "\x00",
                                      "\ud800", "🚀"]))


def query_values(world):
    real = [v for values in world["real"].values() for v in values]
    return st.one_of(
        st.sampled_from(HOSTILE + real),
        st.text(max_size=40),
        st.integers(min_value=-2**80, max_value=2**80).map(str),
        st.from_regex(r"[0-9a-f]{24}", fullmatch=True),
        st.dates().map(lambda d: d.isoformat()),
        st.datetimes().map(lambda d: d.isoformat()),
        st.datetimes(timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=14)),
                                                timezone(timedelta(hours=-12))])).map(lambda d: d.isoformat()),
    )


# ----- the properties ----------------------------------------------------------------------------------------------

def test_every_path_parameter_has_real_ids_to_aim_at(world):
    """A new path parameter needs a seeded object above, or the fuzz would only ever send it junk."""
    params = {name for rule in world["routes"] for name in rule.arguments}
    assert params <= set(world["real"]), f"seed real values for {sorted(params - set(world['real']))}"
    assert {"before", "after", "limit", "status", "task", "q", "range", "next", "fragment"} <= set(QUERY_KEYS)


def test_the_four_callers_are_who_they_say(world):
    """Otherwise the fuzz below would only ever see login redirects and 401s."""
    expected = {"/admin/embeddings": {"anonymous": 302, "token": 302, "viewer": 200, "admin": 200},
                "/api/admin/embeddings/status": {"anonymous": 401, "token": 200, "viewer": 200, "admin": 200},
                f"/admin/embeddings/jobs/{world['real']['job_id'][0]}": {"anonymous": 302, "viewer": 200, "admin": 200},
                f"/admin/embeddings/queue/{world['real']['item_id'][1]}": {"viewer": 200, "admin": 200}}
    for url, answers in expected.items():
        for role, status in answers.items():
            client, headers = world["clients"][role]
            with world["app"].app_context():
                assert client.get(url, headers=headers, environ_base=fresh_addr()).status_code == status, (url, role)


def test_every_query_string_of_every_get_route_as_every_caller(world):
    routes = world["routes"]
    params = sorted({name for rule in routes for name in rule.arguments})
    path_values = st.fixed_dictionaries({name: st.one_of(st.sampled_from(world["real"][name]), junk_ids())
                                         for name in params})
    keys = st.one_of(st.sampled_from(QUERY_KEYS), st.text(max_size=12))
    pairs = st.lists(st.tuples(keys, query_values(world)), max_size=6)

    def real_ids(**override):
        return {name: world["real"][name][0] for name in params} | override

    @FUZZ
    @given(pairs=pairs, tail=st.sampled_from(RAW_TAILS), ids=path_values)
    # The security review's cases, and their neighbours, always run.
    @example(pairs=[("before", "0" * 24)], tail="", ids=real_ids())
    @example(pairs=[("after", "f" * 24)], tail="", ids=real_ids())
    @example(pairs=[("before", "f" * 24), ("status", "failed")], tail="", ids=real_ids())
    @example(pairs=[("after", "0" * 24), ("task", "generate_embedding")], tail="", ids=real_ids())
    @example(pairs=[("before", "0001-01-01")], tail="", ids=real_ids())
    @example(pairs=[("before", "9999-12-31T23:59:59.999999-01:00")], tail="", ids=real_ids())
    @example(pairs=[("limit", "9" * 5000), ("days", "-1"), ("range", "\x00")], tail="%", ids=real_ids())
    @example(pairs=[("next", "/admin/embeddings\r\nX-Evil: 1"), ("fragment", "live")], tail="",
             ids=real_ids(job_id="f" * 24, item_id="0" * 24))
    @example(pairs=[("next", "\x00"), ("q", "\ud800")], tail="%ff%fe", ids=real_ids())
    @example(pairs=[("signature", world["real"]["signature"][0]), ("q", world["real"]["job_id"][0])], tail="",
             ids=real_ids())
    def run(pairs, tail, ids):
        query = build_query(pairs, tail)
        for rule in routes:
            path = concrete(rule, ids)
            for role in ROLES:
                check(world, rule, path, query, role)

    run()
    assert STATS["routes"] == {rule.rule for rule in routes}


@pytest.fixture(scope="module", autouse=True)
def query_fuzz_summary(pytestconfig):
    """Print the figures in pytest's terminal summary (shown with or without -s)."""
    class Summary:
        @staticmethod
        def pytest_terminal_summary(terminalreporter):
            if not STATS["cases"]:
                return
            statuses = " ".join(f"{code}:{n}" for code, n in sorted(STATS["statuses"].items(), key=str))
            terminalreporter.write_line(f"QUERY FUZZ routes={len(STATS['routes'])} cases={STATS['cases']} "
                                        f"5xx={STATS['5xx']} (statuses {statuses})")
            for role, url, code in STATS["failures"][:10]:
                terminalreporter.write_line(f"QUERY FUZZ 5xx: {code} {role} GET {url!r}")

    name = "jobflow-query-fuzz-summary"
    if not pytestconfig.pluginmanager.has_plugin(name):
        pytestconfig.pluginmanager.register(Summary(), name)
    yield
