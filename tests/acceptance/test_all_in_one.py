"""``python app.py``, the whole product in one process, with alert emails on, watched from outside.

One product runs for the whole module (web, worker thread, a database of the session's SecantusDB
server through ``MONGODB_URI``, the loopback OpenAI-compatible provider, a real SMTP server). The tests
run in order, each one a phase an operator would live through: a backlog (queue and coverage alerts,
the drain seen on ``/metrics``), jobs that fail for good (failures alert, the runbook query), then the
minute samples and the dashboard's overview they feed.
"""
from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from jobflow.db import free_port
from tests.support.database import database
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output
from tests.support.seeding import write_jobs
from tests.support.waiting import wait_until
from tests.support.web import Browser, api, http_get, metric_values

from .conftest import APP, FLASK, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

KEY = "sk-test-acceptance-7d3f9a1c52"
TOKEN = "acc-admin-token-5b8e2f90d1"
SECRET_KEY = "acc-session-secret-c41d77e3-5a0f92b6e1d8"
ADMIN_EMAIL, ADMIN_PASSWORD = "ops@example.com", "acc-Passw0rd-e8a1"
ALERTS_TO = "oncall@example.com"
REMINDER_S = 5
QUEUE_LIMIT = 50
FAILURE_LIMIT = 3
BACKLOG = 400
POISON = 5
MAX_ATTEMPTS = 1
MAX_INPUT_TOKENS = 100      # the loopback provider answers 400 to a longer input: a job it can never embed
SAMPLE_GRACE = timedelta(seconds=15)   # "within about 10 s of the minute's end", with room for a loaded CI


class AllInOne:
    """The running product and what the module's tests share."""

    def __init__(self, product: Product, base: str, provider: EmbeddingsServer, inbox, db_uri: str):
        self.product = product
        self.base = base
        self.provider = provider
        self.inbox = inbox
        self.db = database(db_uri)
        self.app = None
        self.started_at = datetime.now(timezone.utc)
        self.scrapes: list[tuple[float, dict]] = []
        self.poison: list[str] = []
        self._stop = threading.Event()

    def scrape(self) -> dict:
        request = urllib.request.Request(self.base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return metric_values(response.read().decode())

    def keep_scraping(self) -> None:
        """What a Prometheus server would do: scrape /metrics every two seconds."""
        while not self._stop.wait(2):
            try:
                self.scrapes.append((time.monotonic(), self.scrape()))
            except (OSError, urllib.error.URLError):
                pass


@pytest.fixture(scope="module")
def aio(tmp_path_factory, module_db_uri, inbox):
    port = free_port()
    with EmbeddingsServer(api_key=KEY, max_input_tokens=MAX_INPUT_TOKENS) as provider:
        product = Product(tmp_path_factory.mktemp("all-in-one") / "jobflow")
        product.write_env({
            "MONGODB_URI": module_db_uri, "PORT": port, "DEMO_DATA": "false",
            "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": provider.base_url,
            "ADMIN_API_TOKEN": TOKEN, "SECRET_KEY": SECRET_KEY, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "EMBEDDING_WORKER_INTERVAL": 500, "EMBEDDING_MAX_CONCURRENT": 1, "WORKER_HEARTBEAT_INTERVAL": 1000,
            "WORKER_DEAD_THRESHOLD": 5000, "QUEUE_MAX_ATTEMPTS": MAX_ATTEMPTS, "SIMILARITY_MIN_SCORE": "0.0",
            "ALERT_EMAIL_ENABLED": "true", "ALERT_EMAIL_TO": ALERTS_TO, "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": inbox.port, "MAIL_USE_TLS": "false", "ALERT_CHECK_INTERVAL": 1000,
            "ALERT_REMINDER_INTERVAL": REMINDER_S * 1000, "ALERT_THRESHOLD_QUEUE_SIZE": QUEUE_LIMIT,
            "ALERT_THRESHOLD_FAILURES": FAILURE_LIMIT, "ALERT_COVERAGE_MIN": "0.95"})
        state = AllInOne(product, f"http://127.0.0.1:{port}", provider, inbox, module_db_uri)
        state.app = product.start("app", APP)
        scraper = threading.Thread(target=state.keep_scraping, daemon=True)
        try:
            wait_until("python app.py to answer HTTP", lambda: http_get(state.base + "/api/jobs")[0] == 200, 90,
                       processes=[state.app])
            scraper.start()
            yield state
        finally:
            state._stop.set()
            product.stop_all()
            state.db.client.close()


def jobs_embedded(aio: AllInOne) -> int:
    return aio.db.jobs.count_documents({"embedding.status": "completed"})


def numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text.replace(",", ""))]


def assert_opened_once_resolved_once(aio, key: str) -> None:
    """The emails about alert ``key``: one on opening, one on resolving (the last), reminders no closer than
    ALERT_REMINDER_INTERVAL (one second of slack)."""
    mails = aio.inbox.about(key)
    kinds = [m.kind for m in mails]
    assert kinds.count("opened") == 1 and kinds.count("resolved") == 1, [m.subject for m in mails]
    assert kinds[-1] == "resolved", [m.subject for m in mails]
    for before, after in zip(mails, mails[1:]):
        if after.kind == "reminder":
            assert after.at - before.at >= REMINDER_S - 1, [m.subject for m in mails]


# ----- a backlog: queue and coverage alerts ---------------------------------------------------------------------

def test_a_backlog_over_the_threshold_opens_one_queue_alert_reminds_and_resolves_once_drained(aio):
    aio.provider.latency = 6.0      # a slow provider: the backlog stays over the threshold for a while
    path = write_jobs(aio.product.folder.parent / "backlog.jsonl", BACKLOG, "backlog")
    imported = aio.product.run(FLASK + ["import-jobs", str(path)], timeout=120)
    assert imported.returncode == 0 and f"imported: {BACKLOG}" in imported.text, imported.text[-2000:]

    try:
        opened = aio.inbox.wait_for("queue", "opened", 60, processes=[aio.app])[0]
        assert opened.recipients == [ALERTS_TO]
        assert any(n > QUEUE_LIMIT for n in numbers(opened.subject)), f"no pending figure in {opened.subject!r}"
        assert aio.base + "/admin/embeddings" in opened.text, opened.text   # a link to the figures (PUBLIC_BASE_URL)
        reminder = aio.inbox.wait_for("queue", "reminder", REMINDER_S + 45, processes=[aio.app])[0]
        assert reminder.at - opened.at >= REMINDER_S - 1, (opened.subject, reminder.subject)
    finally:
        aio.provider.latency = 0.0      # the provider recovers: the backlog drains
    resolved = aio.inbox.wait_for("queue", "resolved", 120, processes=[aio.app])[0]
    wait_until("every job of the backlog embedded", lambda: jobs_embedded(aio) == BACKLOG, 120,
               processes=[aio.app], seen=lambda: jobs_embedded(aio))
    assert_opened_once_resolved_once(aio, "queue")
    assert "queue" in resolved.text.lower() or "pending" in resolved.text.lower(), resolved.text[:500]


def test_coverage_below_the_floor_alerts_while_jobs_wait_and_resolves_when_they_are_embedded(aio):
    opened = aio.inbox.wait_for("coverage", "opened", 30)
    assert len(opened) == 1, aio.inbox.subjects()
    assert re.search(r"\d+(\.\d+)?%", opened[0].subject), f"no coverage figure in {opened[0].subject!r}"
    aio.inbox.wait_for("coverage", "reminder", 30)
    aio.inbox.wait_for("coverage", "resolved", 60, processes=[aio.app])
    assert_opened_once_resolved_once(aio, "coverage")


# ----- jobs the provider refuses: failures alert and the runbook query ----------------------------------------------

def test_jobs_failing_for_good_open_one_failures_alert_with_a_reminder(aio):
    long_text = " ".join(f"requirement{n}" for n in range(150))     # over the provider's input limit: 400
    for i in range(POISON):
        status, body = api("POST", aio.base + "/api/jobs", {
            "title": f"Warehouse Picker {i}", "category": "Logistics", "location": "Fier",
            "description": f"Night shifts, posting {i}. {long_text}"}, TOKEN)
        assert status == 201, body
        aio.poison.append(body["id"])
    for i in range(2):
        status, body = api("POST", aio.base + "/api/jobs", {
            "title": f"Forklift Driver {i}", "category": "Logistics", "location": "Fier",
            "description": f"Day shifts, posting {i}."}, TOKEN)
        assert status == 201, body

    opened = aio.inbox.wait_for("failures", "opened", 60, processes=[aio.app])[0]
    assert any(n > FAILURE_LIMIT for n in numbers(opened.subject)), f"no failure figure in {opened.subject!r}"
    reminder = aio.inbox.wait_for("failures", "reminder", REMINDER_S + 45, processes=[aio.app])[0]
    assert reminder.at - opened.at >= REMINDER_S - 1


def test_the_runbook_query_finds_the_jobs_that_failed_for_good(aio):
    assert aio.poison, "the previous test created no failing jobs"
    wait_until("every refused job's queue item failed",
               lambda: aio.db.jobqueues.count_documents({"status": "failed"}) == POISON, 60, processes=[aio.app],
               seen=lambda: list(aio.db.jobqueues.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}])))
    # The runbook: db.jobs.find({"embedding.retries": {"$gte": QUEUE_MAX_ATTEMPTS}})
    found = {str(d["_id"]) for d in aio.db.jobs.find({"embedding.retries": {"$gte": MAX_ATTEMPTS}}, {"_id": 1})}
    assert found == set(aio.poison), {
        "found": sorted(found), "failed jobs": sorted(aio.poison),
        "their embedding": [d.get("embedding") for d in aio.db.jobs.find(
            {"_id": {"$in": [d["jobId"] for d in aio.db.jobqueues.find({"status": "failed"})]}},
            {"embedding.status": 1, "embedding.retries": 1, "embedding.error": 1})]}


def test_the_failures_alert_resolves_once_the_cause_is_fixed_and_the_items_retried(aio):
    """Runbook, problem 8: fix the cause, then ``flask --app app retry-failed``."""
    aio.provider.max_input_tokens = 8192            # the provider takes the long postings now
    retried = aio.product.run(FLASK + ["retry-failed"])
    assert retried.returncode == 0, retried.text[-2000:]
    aio.inbox.wait_for("failures", "resolved", 60, processes=[aio.app])
    wait_until("the retried jobs embedded", lambda: aio.db.jobs.count_documents(
        {"_id": {"$in": [ObjectId(i) for i in aio.poison]}, "embedding.status": "completed"}) == len(aio.poison),
        60, processes=[aio.app])
    assert_opened_once_resolved_once(aio, "failures")


# ----- minute samples, /metrics and the overview ------------------------------------------------------------------

def test_metrics_last_minute_figures_move_while_a_backlog_drains(aio):
    assert http_get(aio.base + "/metrics")[0] == 401       # the token is needed (METRICS_PUBLIC=false)
    completed = "jobflow_completed_last_minute"
    wait_until(f"{completed} above 0 on /metrics", lambda: any(s.get(completed, 0) > 0 for _, s in aio.scrapes),
               100, processes=[aio.app], seen=lambda: [s.get(completed) for _, s in aio.scrapes][-10:])
    first_busy = next(n for n, (_, s) in enumerate(aio.scrapes) if s.get(completed, 0) > 0)
    before = [s.get(completed) for _, s in aio.scrapes[:first_busy]]
    assert before and all(v in (None, 0) for v in before), before
    assert any(s.get(completed) == 0 for _, s in aio.scrapes[:first_busy]), \
        f"{completed} was never 0 before the drain (is the start sample there?): {before[:10]}"
    pending = [s.get('jobflow_queue_items{status="pending"}') for _, s in aio.scrapes]
    assert max(p or 0 for p in pending) > QUEUE_LIMIT and pending[-1] == 0, pending
    assert "jobflow_queue_latency_p50_ms" in aio.scrapes[-1][1], sorted(aio.scrapes[-1][1])


def test_the_worker_writes_a_sample_for_every_minute_that_ended(aio):
    samples = aio.db.metricsamples
    start_minute = aio.started_at.replace(second=0, microsecond=0)

    def two_in_a_row():
        times = sorted(d["time"] for d in samples.find({"span": "1m", "done": True}, {"time": 1}))
        return any(b - a == timedelta(minutes=1) for a, b in zip(times, times[1:]))
    wait_until("two consecutive one-minute samples", two_in_a_row, 100, processes=[aio.app],
               seen=lambda: list(samples.find({"span": "1m"}, {"_id": 0, "time": 1, "done": 1})))
    now = datetime.now(timezone.utc)
    written = {d["time"]: d for d in samples.find({"span": "1m"})}
    done = sorted(t for t, d in written.items() if d.get("done"))
    # At start the worker writes the sample of the minute that just ended: the one before the start's minute,
    # or the start's own minute when the worker got going after the next minute began.
    assert done and done[0] <= start_minute, f"no sample written at start ({aio.started_at}): {done}"
    due = []
    minute = done[0]
    while minute + timedelta(minutes=1) + SAMPLE_GRACE <= now:
        due.append(minute)
        minute += timedelta(minutes=1)
    missing = [m.isoformat() for m in due if not written.get(m, {}).get("done")]
    assert not missing, f"minutes without a finished sample: {missing}; present: {sorted(written)}"
    busy = [d for d in written.values() if d.get("completed")]
    assert busy and sum(d.get("tokens") or 0 for d in busy) > 0, busy


def test_the_overview_shows_chart_points_and_the_tokens_spent(aio):
    made = aio.product.run(FLASK + ["create-admin", ADMIN_EMAIL], extra_env={"JOBFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD})
    assert made.returncode == 0, made.text[-2000:]
    browser = Browser(aio.base)
    browser.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD)

    def page_with_tokens():
        status, page, _ = browser.get("/admin/embeddings")
        assert status == 200, page[:500]
        usage = page[page.find("Tokens and cost"):]
        today = re.search(r"<b>([\d,]+)</b>\s*tokens", usage)
        return page if today and int(today.group(1).replace(",", "")) > 0 else None
    page = wait_until("the overview's tokens panel above 0", page_with_tokens, 100, processes=[aio.app])
    assert "no samples in this range yet" not in page
    shown = re.search(r"([\d,]+) samples in the last", page)
    assert shown and int(shown.group(1).replace(",", "")) >= 2, shown
    for secret in (KEY, TOKEN, SECRET_KEY, ADMIN_PASSWORD):
        assert secret not in page


def test_deleting_a_job_takes_its_queue_items_with_it(aio):
    """README, JSON API: DELETE takes the job's queue items with it, every answer leaves it out at once, and the
    worker rewrites the lists that held it within seconds."""
    aio.provider.max_input_tokens = MAX_INPUT_TOKENS        # the provider refuses long postings again
    status, body = api("POST", aio.base + "/api/jobs", {
        "title": "Night Porter", "category": "Hospitality & Tourism", "location": "Durres",
        "description": " ".join(f"duty{n}" for n in range(150))}, TOKEN)
    assert status == 201, body
    gone = ObjectId(body["id"])
    wait_until("the refused job's queue item failed", lambda: aio.db.jobqueues.find_one(
        {"jobId": gone, "status": "failed"}), 60, processes=[aio.app])
    status, body = api("DELETE", f"{aio.base}/api/jobs/{gone}", token=TOKEN)
    assert status == 204, body
    assert api("GET", f"{aio.base}/api/jobs/{gone}")[0] == 404
    left = list(aio.db.jobqueues.find({"jobId": gone}, {"_id": 0, "status": 1, "lastError": 1}))
    assert left == [], f"queue items of the deleted job: {left}"

    # An embedded job that other lists hold: every answer leaves it out at once, and the worker's index sync
    # rewrites the stored lists that held it.
    holder = aio.db.jobs.find_one({"status": "active", "similarJobs.0": {"$exists": True}})
    listed = holder["similarJobs"][0]["jobId"]
    status, body = api("DELETE", f"{aio.base}/api/jobs/{listed}", token=TOKEN)
    assert status == 204, body
    status, body = api("GET", f"{aio.base}/api/jobs/{holder['_id']}/similar")
    assert status == 200 and str(listed) not in [e["job"]["id"] for e in body["similarJobs"]], body
    wait_until("no stored list holds the deleted job", lambda: aio.db.jobs.count_documents(
        {"similarJobs.jobId": listed}) == 0, 60, processes=[aio.app])


def test_each_alert_was_emailed_once_open_and_once_resolved_and_the_logs_are_clean(aio):
    for rule in ("queue", "coverage", "failures"):
        kinds = [m.kind for m in aio.inbox.about(rule)]
        assert kinds.count("opened") == 1 and kinds.count("resolved") == 1, (rule, aio.inbox.subjects())
    # The worker thread was alive and the provider answered throughout.
    assert not aio.inbox.about("workers") and not aio.inbox.about("provider"), aio.inbox.subjects()
    assert all(m.kind and m.rule for m in aio.inbox.mails), aio.inbox.subjects()
    assert aio.app.stop() == 0, aio.app.tail()
    assert_clean_output(*aio.product.running, secrets=(KEY, TOKEN, SECRET_KEY, ADMIN_PASSWORD))
