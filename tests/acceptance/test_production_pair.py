"""The production pair on the embedded database: ``gunicorn -c gunicorn.conf.py`` and ``flask --app app worker``,
both reading ``.env`` in the project folder, ``MONGODB_URI`` unset (data under ``instance/``).

One pair runs for the module: gunicorn's bind and process count come from ``.env``; coverage counts active
jobs only; gunicorn restarts while the worker keeps running on the same database; the last process to exit
stops the database.
"""
from __future__ import annotations

import signal

import psutil
import pytest

from jobflow.db import free_port, ping
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output, assert_one_line_per_event
from tests.support.waiting import wait_until
from tests.support.web import api, http_get

from .conftest import FLASK, GUNICORN, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

KEY = "sk-test-acceptance-pair-31c0e5"
TOKEN = "acc-pair-token-0a9b7c44"
SECRET_KEY = "acc-pair-secret-6e2d19-8b4f0a7c3e51d2"
WEB_CONCURRENCY = 3      # not gunicorn.conf.py's default (2): the count must come from .env

JOBS = [("Registered Nurse", "Healthcare", "Tirana", "Night shifts in the emergency department."),
        ("Emergency Nurse", "Healthcare", "Durres", "Emergency department nursing, night shifts."),
        ("Python Developer", "Software Development", "Tirana", "Flask APIs and MongoDB services."),
        ("Backend Engineer", "Software Development", "Vlore", "Python services, Docker and AWS."),
        ("Hotel Receptionist", "Hospitality & Tourism", "Sarande", "Front desk, check-in and guest care."),
        ("Accountant", "Finance", "Tirana", "Monthly closing, VAT returns and payroll.")]


class Pair:
    def __init__(self, product: Product, port: int):
        self.product = product
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.web = None
        self.worker = None

    def start_web(self):
        self.web = self.product.start("gunicorn", GUNICORN)
        wait_until(f"gunicorn to answer on port {self.port} (PORT from .env)",
                   lambda: http_get(self.base + "/api/jobs")[0] == 200, 90, processes=[self.web])
        return self.web


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    port = free_port()
    with EmbeddingsServer(api_key=KEY) as provider:
        product = Product(tmp_path_factory.mktemp("pair") / "jobflow")
        product.write_env({
            "PORT": port, "HOST": "127.0.0.1", "WEB_CONCURRENCY": WEB_CONCURRENCY, "DEMO_DATA": "false",
            "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": provider.base_url,
            "ADMIN_API_TOKEN": TOKEN, "SECRET_KEY": SECRET_KEY, "EMBEDDING_WORKER_INTERVAL": 500,
            "WORKER_HEARTBEAT_INTERVAL": 1000, "WORKER_DEAD_THRESHOLD": 5000, "SIMILARITY_MIN_SCORE": "0.0"})
        state = Pair(product, port)
        try:
            state.start_web()
            state.worker = product.start("worker", FLASK + ["worker"])
            yield state
        finally:
            product.stop_all()


def post_job(pair: Pair, title, category, location, description, status="active") -> str:
    code, body = api("POST", pair.base + "/api/jobs", {"title": title, "category": category, "location": location,
                                                       "description": description, "status": status}, TOKEN)
    assert code == 201, body
    return body["id"]


def gunicorn_workers(master_pid: int) -> list[psutil.Process]:
    """The web processes gunicorn forked (not the embedded database it may have started)."""
    children = psutil.Process(master_pid).children()
    return [c for c in children if "secantus" not in " ".join(c.cmdline())]


def test_gunicorn_binds_host_port_and_process_count_from_dotenv(pair):
    status, body, _, _ = http_get(pair.base + "/api/jobs")
    assert status == 200, body
    wait_until(f"{WEB_CONCURRENCY} gunicorn worker processes", lambda: len(gunicorn_workers(pair.web.pid)) ==
               WEB_CONCURRENCY, 60, processes=[pair.web],
               seen=lambda: [" ".join(c.cmdline()) for c in psutil.Process(pair.web.pid).children()])
    listening = [c.laddr for c in psutil.Process(pair.web.pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", pair.port)], listening


def test_health_coverage_counts_active_jobs_only(pair):
    """17 jobs, 4 of them closed, every active one embedded: 100.00% over 13 active jobs."""
    active = [post_job(pair, f"{t} {i}", c, loc, f"{d} Opening {i}.")
              for i in range(13) for t, c, loc, d in [JOBS[i % len(JOBS)]]]
    for i in range(4):
        t, c, loc, d = JOBS[i]
        post_job(pair, f"{t} (filled) {i}", c, loc, f"{d} Filled {i}.", status="closed")

    def embedded():
        return all((api("GET", f"{pair.base}/api/jobs/{i}")[1].get("embedding") or {}).get("status") == "completed"
                   for i in active)
    wait_until("the 13 active jobs embedded", embedded, 90, processes=[pair.web, pair.worker])

    def report():
        return http_get(pair.base + "/api/health/embeddings")[1]
    health = wait_until("coverage 100.00% on /api/health/embeddings",
                        lambda: report()["metrics"]["coverage"] == "100.00%" and report(), 60,
                        processes=[pair.web, pair.worker], seen=report)
    assert health["metrics"].get("activeJobs") == 13, health


def test_restarting_gunicorn_leaves_the_worker_on_the_same_database(pair):
    before = pair.product.database_state()
    assert before.get("port"), "instance/secantus.json names no port"
    assert pair.web.stop() == 0, pair.web.tail()
    assert pair.worker.alive(), pair.worker.tail()
    pair.start_web()
    after = pair.product.database_state()
    assert after.get("port") == before["port"], (before, after)

    job = post_job(pair, "Intensive Care Nurse", "Healthcare", "Tirana", "Night shifts in intensive care.")

    def similar():
        code, body = api("GET", f"{pair.base}/api/jobs/{job}/similar")
        return code == 200 and body["cached"] and body["similarJobs"] and body
    listed = wait_until("the job created after the restart embedded and its similar list served", similar, 90,
                        processes=[pair.web, pair.worker], seen=lambda: api("GET", f"{pair.base}/api/jobs/{job}"))
    assert listed["similarJobs"][0]["job"]["category"] == "Healthcare", listed


def test_the_last_process_to_exit_stops_the_embedded_database(pair):
    state = pair.product.database_state()
    uri = f"mongodb://127.0.0.1:{state['port']}"
    assert pair.web.stop() == 0, pair.web.tail()
    assert psutil.pid_exists(state["pid"]) and ping(uri), "the database stopped while the worker still uses it"
    assert pair.worker.stop(signal.SIGTERM) == 0, pair.worker.tail()
    wait_until("the embedded database to stop after its last user exited",
               lambda: not psutil.pid_exists(state["pid"]) or psutil.Process(state["pid"]).status() ==
               psutil.STATUS_ZOMBIE, 40, seen=lambda: pair.product.database_state())
    assert not ping(uri, 500)
    assert_clean_output(*pair.product.running, secrets=(KEY, TOKEN, SECRET_KEY))
    assert_one_line_per_event(*pair.product.running)
