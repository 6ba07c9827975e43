"""Alerts from the production layout: ``gunicorn -c gunicorn.conf.py`` for the API and ``flask --app app worker``
processes, on ``MONGODB_URI``, emailing a real SMTP server; and the README's cron line,
``flask --app app check-alerts``.

The module follows an operator's afternoon: embedding switched off (``EMBEDDING_WORKER_ENABLED=false``: the
worker claims nothing, still checks alerts and samples, and nobody embeds, so the workers alert opens); a
second worker started with a key the provider refuses (provider alert; the workers alert resolves); the key
fixed in ``.env`` and the worker restarted (provider alert resolves); every worker stopped, and cron's
``check-alerts`` tells (workers alert again, its reminder, and its resolution once a worker is back).
"""
from __future__ import annotations

import re

import pytest

from jobflow.db import free_port
from tests.support.database import database
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output, assert_one_line_per_event
from tests.support.waiting import wait_until
from tests.support.web import api, http_get

from .conftest import FLASK, GUNICORN, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

KEY = "sk-test-acceptance-fleet-8b1e44"
WRONG_KEY = "sk-test-refused-key-77f3a0c2"
TOKEN = "acc-fleet-token-2c5d81e6"
SECRET_KEY = "acc-fleet-secret-93ab07-4e1c8d2a6f90b3"
REMINDER_S = 5
DEAD_MS = 3000
JOBS = 5


class Fleet:
    def __init__(self, product: Product, base: str, provider: EmbeddingsServer, inbox, db_uri: str):
        self.product, self.base, self.provider, self.inbox = product, base, provider, inbox
        self.db = database(db_uri)
        self.web = None
        self.disabled = None        # the worker started with EMBEDDING_WORKER_ENABLED=false
        self.worker = None          # the worker that embeds (once there is one)
        self.jobs: list[str] = []

    def processes(self):
        return [p for p in (self.web, self.disabled, self.worker) if p is not None and p.alive()]

    def status_of(self, proc) -> dict:
        return self.db.workerstatuses.find_one({"pid": proc.pid}) or {}

    def check_alerts(self):
        run = self.product.run(FLASK + ["check-alerts"], timeout=60)
        assert run.returncode == 0, run.text[-2000:]
        return run


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, module_db_uri, inbox):
    port = free_port()
    with EmbeddingsServer(api_key=KEY) as provider:
        product = Product(tmp_path_factory.mktemp("fleet") / "jobflow")
        product.write_env({
            "MONGODB_URI": module_db_uri, "PORT": port, "HOST": "127.0.0.1", "WEB_CONCURRENCY": 1,
            "DEMO_DATA": "false", "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": provider.base_url, "ADMIN_API_TOKEN": TOKEN, "SECRET_KEY": SECRET_KEY,
            "EMBEDDING_WORKER_ENABLED": "false", "EMBEDDING_WORKER_INTERVAL": 500,
            "WORKER_HEARTBEAT_INTERVAL": 1000, "WORKER_DEAD_THRESHOLD": DEAD_MS, "SIMILARITY_MIN_SCORE": "0.0",
            "ALERT_EMAIL_ENABLED": "true", "ALERT_EMAIL_TO": "oncall@example.com", "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": inbox.port, "MAIL_USE_TLS": "false", "ALERT_CHECK_INTERVAL": 1000,
            "ALERT_REMINDER_INTERVAL": REMINDER_S * 1000, "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"})
        state = Fleet(product, f"http://127.0.0.1:{port}", provider, inbox, module_db_uri)
        try:
            state.web = product.start("gunicorn", GUNICORN)
            state.disabled = product.start("worker-disabled", FLASK + ["worker"])
            wait_until("gunicorn to answer", lambda: http_get(state.base + "/api/jobs")[0] == 200, 90,
                       processes=[state.web, state.disabled])
            yield state
        finally:
            product.stop_all()
            state.db.client.close()


def mentions(proc, word: str) -> list[str]:
    """The worker's own lines naming ``word`` (alert lines quote the setting too: they are not the worker's word)."""
    return [line for line in proc.output().splitlines() if word in line and "jobflow.alerts" not in line]


def test_a_disabled_worker_claims_nothing_over_several_heartbeats_and_says_so_once(fleet):
    for i in range(JOBS):
        code, body = api("POST", fleet.base + "/api/jobs", {"title": f"Registered Nurse {i}", "category": "Healthcare",
                                                            "location": "Tirana", "description": f"Ward {i}."}, TOKEN)
        assert code == 201, body
        fleet.jobs.append(body["id"])
    beats = set()

    def heartbeats():
        beats.add(fleet.status_of(fleet.disabled).get("lastHeartbeat"))
        return len(beats - {None}) >= 5
    wait_until("five heartbeats of the disabled worker", heartbeats, 60, every=0.3,
               processes=fleet.processes(), seen=lambda: fleet.status_of(fleet.disabled))
    items = list(fleet.db.jobqueues.find({}, {"_id": 0, "status": 1, "attempts": 1}))
    assert len(items) == JOBS and all(i["status"] == "pending" and not i.get("attempts") for i in items), items
    assert fleet.provider.requests == 0, "the disabled worker called the provider"
    assert fleet.status_of(fleet.disabled).get("state") == "stopped", fleet.status_of(fleet.disabled)
    said = mentions(fleet.disabled, "EMBEDDING_WORKER_ENABLED")
    assert len(said) == 1, said or fleet.disabled.tail()


def test_with_only_a_disabled_worker_the_workers_alert_opens_and_reminds(fleet):
    opened = fleet.inbox.wait_for("workers", "opened", 60, processes=fleet.processes())[0]
    assert re.search(r"\d|never", opened.subject), f"no figure in {opened.subject!r}"
    reminder = fleet.inbox.wait_for("workers", "reminder", REMINDER_S + 45, processes=fleet.processes())[0]
    assert reminder.at - opened.at >= REMINDER_S - 1
    # The disabled worker also writes the minute samples (gunicorn never runs the scheduler).
    wait_until("a finished one-minute sample", lambda: fleet.db.metricsamples.find_one({"span": "1m", "done": True}),
               75, processes=fleet.processes())


def test_a_worker_with_a_refused_key_opens_the_provider_alert_and_the_workers_alert_resolves(fleet):
    fleet.product.update_env(EMBEDDING_WORKER_ENABLED="true", OPENAI_API_KEY=WRONG_KEY)
    fleet.worker = fleet.product.start("worker-refused-key", FLASK + ["worker"])
    opened = fleet.inbox.wait_for("provider", "opened", 90, processes=fleet.processes())[0]
    assert "key" in opened.subject.lower(), f"the reason is not in {opened.subject!r}"
    reminder = fleet.inbox.wait_for("provider", "reminder", REMINDER_S + 45, processes=fleet.processes())[0]
    assert reminder.at - opened.at >= REMINDER_S - 1
    assert fleet.status_of(fleet.worker).get("state") == "degraded", fleet.status_of(fleet.worker)
    # A degraded worker is alive: the workers alert of the previous test resolves, once. (When that test
    # failed because the alert never opened, it says so; nothing is left to resolve here.)
    if fleet.inbox.about("workers", "opened"):
        fleet.inbox.wait_for("workers", "resolved", 60, processes=fleet.processes())
        kinds = [m.kind for m in fleet.inbox.about("workers")]
        assert kinds.count("opened") == 1 and kinds.count("resolved") == 1 and kinds[-1] == "resolved", \
            fleet.inbox.subjects()


def test_fixing_the_key_in_dotenv_and_restarting_the_worker_resolves_the_provider_alert(fleet):
    fleet.product.update_env(OPENAI_API_KEY=KEY)
    assert fleet.worker.stop() == 0, fleet.worker.tail()
    fleet.worker = fleet.product.start("worker", FLASK + ["worker"])
    fleet.inbox.wait_for("provider", "resolved", 90, processes=fleet.processes())
    wait_until("the waiting jobs embedded", lambda: fleet.db.jobqueues.count_documents({"status": "completed"}) == JOBS,
               60, processes=fleet.processes())
    kinds = [m.kind for m in fleet.inbox.about("provider")]
    assert kinds.count("opened") == 1 and kinds.count("resolved") == 1 and kinds[-1] == "resolved", \
        fleet.inbox.subjects()


def test_cron_check_alerts_tells_when_no_worker_runs_and_when_one_is_back(fleet):
    already = len(fleet.inbox.about("workers"))
    assert fleet.worker.stop() == 0, fleet.worker.tail()
    assert fleet.disabled.stop() == 0, fleet.disabled.tail()
    said = mentions(fleet.disabled, "EMBEDDING_WORKER_ENABLED")
    assert len(said) == 1, said

    def cron(kind):
        fleet.check_alerts()
        return [m for m in fleet.inbox.about("workers")[already:] if m.kind == kind]
    opened = wait_until("check-alerts to open the workers alert", lambda: cron("opened"), 60,
                        seen=fleet.inbox.subjects)[0]
    wait_until("check-alerts to send the reminder", lambda: cron("reminder"), REMINDER_S + 60,
               seen=fleet.inbox.subjects)
    fleet.worker = fleet.product.start("worker-back", FLASK + ["worker"])
    wait_until("the worker back and running", lambda: fleet.status_of(fleet.worker).get("state") == "running", 60,
               processes=fleet.processes())
    wait_until("check-alerts to resolve the workers alert", lambda: cron("resolved"), 60, seen=fleet.inbox.subjects)
    kinds = [m.kind for m in fleet.inbox.about("workers")[already:]]
    assert kinds.count("opened") == 1 and kinds.count("resolved") == 1, fleet.inbox.subjects()
    assert "never" in opened.subject or re.search(r"\d", opened.subject), opened.subject


def test_the_processes_stop_cleanly_and_never_print_a_traceback_or_a_secret(fleet):
    for proc in fleet.processes():
        assert proc.stop() == 0, proc.tail()
    assert_clean_output(*fleet.product.running, secrets=(KEY, WRONG_KEY, TOKEN, SECRET_KEY))
    assert_one_line_per_event(*[p for p in fleet.product.running if p.name.startswith(("worker", "gunicorn"))])
