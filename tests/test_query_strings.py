"""Every query string of every GET route: never a 5xx, never a traceback, whoever asks.

The routes come from ``app.url_map``, so a new GET route is fuzzed without touching this file. The
query keys each route reads are learned by calling it once with a recording request class (every
``request.args``/``request.values`` look-up is noted per route); to those come the names found in
``jobflow/`` (``args.get("…")``, ``values.get("…")``, ``int_arg("…")``), the usual suspects and
hypothesis text. Values are hostile: ObjectIds at the ends of their time range, dates at the ends of
``datetime``, huge and negative numbers, NUL, CR/LF, unicode, markup, redirects. Path parameters get
the real ids of seeded objects (a job, a queue item, a worker, a failure signature) or junk. Each
example draws one query per route and sends it as four callers: anonymous, with the Bearer token,
signed in as a viewer and as an admin.

Besides that property, every name a route reads is sent, one at a time, each extreme value (about
2,000 requests; nothing else in the query can mask a bad value). At the end of the run one line gives
the figures, e.g. ``QUERY FUZZ routes=24 cases=5376 5xx=0`` (pytest's terminal summary, with or
without ``-s``); 5xx counts exceptions too (under TESTING they propagate; in production they are 500s).
"""
from __future__ import annotations

import os
import re
import traceback
from collections import Counter
from datetime import timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

import pytest
from bson import ObjectId
from flask import Request, has_request_context, request
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import ImmutableMultiDict

from tests.support.web import fresh_addr, seg

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"Authorization": "Bearer test-token"}
ROLES = ("anonymous", "token", "viewer", "admin")
# Deterministic like tests/test_bad_input.py (JOBFLOW_FUZZ_RANDOM=1 draws new examples). Every example
# sends a query to every GET route as every caller (24 routes x 4 = 96 requests). The file takes about
# 50 s on 2 cores.
FUZZ = settings(max_examples=int(os.environ.get("JOBFLOW_QUERY_FUZZ_EXAMPLES", "25")), deadline=None,
                database=None, derandomize=not os.environ.get("JOBFLOW_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck))
STATS: dict = {"routes": set(), "cases": 0, "5xx": 0, "statuses": Counter(), "failures": []}


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
LEARNING: dict = {"role": None, "reads": {}}   # (route, caller) -> names it looked up, while learning


class RecordingArgs(ImmutableMultiDict):
    """Query arguments that note which names the route handling the request looks up (while learning)."""

    def _note(self, key) -> None:
        role = LEARNING["role"]
        if role and has_request_context() and request.url_rule is not None and isinstance(key, str):
            LEARNING["reads"].setdefault((request.url_rule.rule, role), set()).add(key)

    def __contains__(self, key):
        self._note(key)
        return super().__contains__(key)

    def __getitem__(self, key):
        self._note(key)
        return super().__getitem__(key)

    def get(self, key, default=None, type=None):
        self._note(key)
        return super().get(key, default, type)

    def getlist(self, key, type=None):
        self._note(key)
        return super().getlist(key, type)


class RecordingRequest(Request):
    parameter_storage_class = RecordingArgs

# ObjectIds at the ends of their time range (1970-01-01 and 2106-02-07), sign-bit edges, upper case, near misses
EXTREME_IDS = ["0" * 24, "f" * 24, "F" * 24, "7fffffff" + "f" * 16, "80000000" + "0" * 16, "ffffffff" + "0" * 16,
               "00000000" + "f" * 16, "0" * 23, "f" * 25]
# dates at and beyond the ends of datetime, with and without offsets
EXTREME_DATES = ["0001-01-01", "9999-12-31", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999-01:00",
                 "0000-00-00", "1969-12-31T23:59:59Z", "2106-02-07T06:28:16", "2038-01-19T03:14:08", "10000-01-01"]
EXTREME_NUMBERS = ["-1", "0", "1", "-0", "201", "101", "3651", "-3650", "9" * 30, "9" * 5000, "-9223372036854775809",
                   "18446744073709551616", "1e309", "1e3", "NaN", "inf", "-inf", "0x10", "١٢", "1_000", " 5 "]
# control characters, encodings, markup, redirects
NASTY_TEXT = ["\x00", "a\x00b", "\r\nSet-Cookie: pwned=1", "/admin/embeddings\r\nX-Evil: 1", "\ud800", "\udfff",
              "🚀" * 20, "שלום", "\u202eevil", "<script>alert(1)</script>", "{{7*7}}", "%00", "%", "../../etc/passwd",
              "//evil.example", "/\\evil.example", "\\\\evil.example", "https://evil.example/", "javascript:alert(1)",
              "/login?next=/login", "/" + "a" * 3000, " ", "", "x" * 5000, "[]", "{}", "null", "true"]
# values the routes accept, so that the other arguments are reached
ACCEPTED = ["pending", "processing", "failed", "completed", "skipped", "generate_embedding", "3h", "24h", "7d", "30d",
            "live", "active", "closed", "/admin/embeddings/workers"]
HOSTILE = EXTREME_IDS + EXTREME_DATES + EXTREME_NUMBERS + NASTY_TEXT + ACCEPTED
RAW_TAILS = ["", "%", "%zz", "%ff%fe", "&&", "=", "==&=", ";", "before", "before=&before=1", "a=%C0%AF", "%E2%80%AE"]


def build_query(pairs: list[tuple[str, str]], tail: str) -> str:
    text = urlencode(pairs, errors="surrogatepass")
    return "&".join(part for part in (text, tail) if part)


# ----- the seeded world ------------------------------------------------------------------------------------------

@pytest.fixture
def world(app, fast_hashing):
    """Jobs, queue items in every state, workers, a failure group, alerts, audit entries; four callers."""
    from jobflow.jobs import queue
    from jobflow.models import Alert, AuditEntry, Job, QueueItem, WorkerStatus
    from jobflow.ops.failures import error_signature
    from jobflow.ops.users import create_user
    from jobflow.timeutil import utcnow

    app.request_class = RecordingRequest
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
    world = {"app": app, "clients": clients, "real": real, "routes": routes}
    # Learn which names each route reads: every route once with real ids, by each caller.
    LEARNING["reads"] = {}
    try:
        for rule in routes:
            for role in ROLES:
                client, headers = clients[role]
                LEARNING["role"] = role
                with app.app_context():
                    client.get(concrete(rule, {name: values[0] for name, values in real.items()}), headers=headers,
                               environ_base=fresh_addr())
    finally:
        LEARNING["role"] = None
    world["reads_by_caller"] = dict(LEARNING["reads"])
    world["reads"] = {}
    for (rule, _), keys in LEARNING["reads"].items():
        world["reads"].setdefault(rule, set()).update(keys)
    return world


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
    """Hostile values, each kind about as likely as the others."""
    real = [v for values in world["real"].values() for v in values]
    return st.one_of(
        st.sampled_from(EXTREME_IDS), st.sampled_from(EXTREME_DATES), st.sampled_from(EXTREME_NUMBERS),
        st.sampled_from(NASTY_TEXT), st.sampled_from(ACCEPTED), st.sampled_from(real),
        st.text(max_size=40),
        st.integers(min_value=-2**80, max_value=2**80).map(str),
        st.from_regex(r"[0-9a-f]{24}", fullmatch=True),
        st.dates().map(lambda d: d.isoformat()),
        st.datetimes(timezones=st.sampled_from([None, timezone.utc, timezone(timedelta(hours=14)),
                                                timezone(timedelta(hours=-12))])).map(lambda d: d.isoformat()),
    )


def route_queries(world, rule):
    """Query strings for one route: mostly the names it reads, then any the app reads, then any text."""
    read = sorted(world["reads"].get(rule.rule, ())) or QUERY_KEYS
    keys = st.one_of(st.sampled_from(read), st.sampled_from(read), st.sampled_from(QUERY_KEYS),
                     st.text(max_size=12))
    return st.builds(build_query, st.lists(st.tuples(keys, query_values(world)), max_size=5),
                     st.sampled_from(RAW_TAILS))


# ----- the properties ----------------------------------------------------------------------------------------------

def test_the_fuzz_aims_where_it_should(world):
    """Real ids for every path parameter, callers who are who they say, and the names each route reads."""
    # A new path parameter needs a seeded object above, or the fuzz would only ever send it junk.
    params = {name for rule in world["routes"] for name in rule.arguments}
    assert params <= set(world["real"]), f"seed real values for {sorted(params - set(world['real']))}"
    assert {"before", "after", "limit", "status", "task", "q", "range", "next", "fragment"} <= set(QUERY_KEYS)
    # Otherwise the fuzz would only ever see login redirects and 401s.
    expected = {"/admin/embeddings": {"anonymous": 302, "token": 302, "viewer": 200, "admin": 200},
                "/api/admin/embeddings/status": {"anonymous": 401, "token": 200, "viewer": 200, "admin": 200},
                f"/admin/embeddings/jobs/{world['real']['job_id'][0]}": {"anonymous": 302, "viewer": 200, "admin": 200},
                f"/admin/embeddings/queue/{world['real']['item_id'][1]}": {"viewer": 200, "admin": 200}}
    for url, answers in expected.items():
        for role, status in answers.items():
            client, headers = world["clients"][role]
            with world["app"].app_context():
                assert client.get(url, headers=headers, environ_base=fresh_addr()).status_code == status, (url, role)
    reads = world["reads"]
    assert {"before", "after", "status", "task", "q", "fragment"} <= reads["/admin/embeddings/queue"], reads
    assert {"before", "after", "status", "task", "q", "limit"} <= reads["/api/admin/embeddings/queue"], reads
    assert {"before"} <= reads["/admin/embeddings/audit"] and {"range"} <= reads["/admin/embeddings"], reads
    assert {"next"} <= reads["/login"] and {"limit"} <= reads["/api/jobs/<job_id>/similar"], reads


# The sharpest of NASTY_TEXT, for the one-name-at-a-time sweep.
SWEEP_TEXT = ["\x00", "\r\nSet-Cookie: pwned=1", "/admin/embeddings\r\nX-Evil: 1", "\ud800", "🚀" * 20, "%", "//evil.example", "x" * 5000, " "]


def test_every_name_a_route_reads_with_every_extreme_value(world):
    """Boundary values, one name at a time, where a route reads that name: nothing else can mask them.

    Each (route, name) goes to one signed-in caller (a viewer, the weakest who gets that far), to the
    token holder and to an anonymous caller, where their requests read it; a name read by the layout
    of every page goes to one page. The property below sends everything to all four callers.
    """
    routes = {rule.rule: rule for rule in world["routes"]}
    ids = {name: values[0] for name, values in world["real"].items()}
    reads = world["reads_by_caller"]
    values = EXTREME_IDS + EXTREME_DATES + EXTREME_NUMBERS + SWEEP_TEXT
    readers = Counter(key for (route, role), keys in reads.items() if role == "viewer" for key in keys)
    swept: set[tuple[str, str]] = set()
    failures: list[str] = []
    for (route, role), keys in sorted(reads.items()):
        if role == "admin" and (route, "viewer") in reads:
            continue
        rule = routes[route]
        for key in sorted(keys):
            # A name every page reads through the layout (``fragment``) is swept on one page only.
            if readers[key] >= 5 and (key, role) in swept:
                continue
            swept.add((key, role))
            for value in values:
                try:
                    check(world, rule, concrete(rule, ids), build_query([(key, value)], ""), role)
                except (AssertionError, pytest.fail.Exception) as exc:   # go on: one run names every failure
                    failures.append(str(exc))
    assert not failures, f"{len(failures)} bad answers:\n" + "\n\n".join(failures[:10])


def test_every_query_string_of_every_get_route_as_every_caller(world):
    routes = world["routes"]
    params = sorted({name for rule in routes for name in rule.arguments})
    path_values = st.fixed_dictionaries({name: st.one_of(st.sampled_from(world["real"][name]), junk_ids())
                                         for name in params})
    queries = st.fixed_dictionaries({rule.rule: route_queries(world, rule) for rule in routes})

    def everywhere(query: str) -> dict:
        return {rule.rule: query for rule in routes}

    real_ids = {name: world["real"][name][0] for name in params}

    @FUZZ
    @given(queries=queries, ids=path_values)
    # The security review's cases, and their neighbours, always run, on every route.
    @example(queries=everywhere("before=" + "0" * 24), ids=real_ids)
    @example(queries=everywhere("after=" + "f" * 24), ids=real_ids)
    @example(queries=everywhere("before=" + "f" * 24 + "&status=failed"), ids=real_ids)
    @example(queries=everywhere("after=" + "0" * 24 + "&task=generate_embedding"), ids=real_ids)
    @example(queries=everywhere("before=0001-01-01"), ids=real_ids)
    @example(queries=everywhere(build_query([("before", "9999-12-31T23:59:59.999999-01:00")], "")), ids=real_ids)
    @example(queries=everywhere(build_query([("limit", "9" * 5000), ("days", "-1"), ("range", "\x00")], "%")),
             ids=real_ids)
    @example(queries=everywhere(build_query([("next", "/admin/embeddings\r\nX-Evil: 1"), ("fragment", "live")], "")),
             ids={**real_ids, "job_id": "f" * 24, "item_id": "0" * 24})
    @example(queries=everywhere(build_query([("next", "\x00"), ("q", "\ud800")], "%ff%fe")), ids=real_ids)
    @example(queries=everywhere(build_query([("signature", world["real"]["signature"][0]),
                                             ("q", world["real"]["job_id"][0])], "")), ids=real_ids)
    def run(queries, ids):
        for rule in routes:
            path = concrete(rule, ids)
            for role in ROLES:
                check(world, rule, path, queries[rule.rule], role)

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
            for role, url, code in STATS["failures"][:25]:
                terminalreporter.write_line(f"QUERY FUZZ 5xx: {code} {role} GET {url!r}")

    name = "jobflow-query-fuzz-summary"
    if not pytestconfig.pluginmanager.has_plugin(name):
        pytestconfig.pluginmanager.register(Summary(), name)
    yield
