"""Starting up as the README says: the install step's ``.env``, the units in ``deploy/``, bad settings, an
unreachable database, and the migration's dry run. Each test has its own copy of the product; the three
entry points (``python app.py``, ``flask --app app worker``, ``gunicorn -c gunicorn.conf.py``) run side by side.
"""
from __future__ import annotations

import re
import shlex
from datetime import datetime, timezone

import pytest

from jobflow.db import free_port
from tests.support import ROOT
from tests.support.database import database
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output, assert_one_line_per_event
from tests.support.seeding import write_jobs
from tests.support.waiting import wait_until
from tests.support.web import http_get

from .conftest import APP, FLASK, GUNICORN, README, SETTING_NAMES, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

KEY = "sk-test-acceptance-start-5a90c1"
TOKEN = "acc-start-token-d7e210"
SECRET_KEY = "acc-start-secret-4b3c8f-1d9e6a2c7b05f4"
ENTRY_POINTS = [("python app.py", APP), ("flask --app app worker", FLASK + ["worker"]),
                ("gunicorn -c gunicorn.conf.py", GUNICORN)]


@pytest.fixture
def product(tmp_path):
    made = Product(tmp_path / "jobflow")
    yield made
    made.stop_all()


def valid_settings(db_uri: str, base_url: str = "http://127.0.0.1:9/v1", **extra) -> dict:
    return {"MONGODB_URI": db_uri, "PORT": free_port(), "DEMO_DATA": "false", "EMBEDDING_PROVIDER": "openai",
            "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": base_url, "ADMIN_API_TOKEN": TOKEN, "SECRET_KEY": SECRET_KEY,
            **extra}


def assert_one_line_each(run, *patterns: str) -> None:
    """The run printed exactly one line matching each pattern, no traceback."""
    lines = run.lines()
    for pattern in patterns:
        matching = [line for line in lines if re.search(pattern, line)]
        assert len(matching) == 1, f"{run.name}: lines matching {pattern!r}: {matching}\n{run.text[-3000:]}"
    assert "Traceback" not in run.text, f"{run.name} printed a traceback:\n{run.text[-3000:]}"


# ----- files the README points at ------------------------------------------------------------------------------

def test_env_example_comments_out_every_setting():
    """README, install: ``cp .env.example .env`` changes nothing until a line is uncommented."""
    text = (ROOT / ".env.example").read_text()
    assigned = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert assigned == [], f"lines of .env.example that set something: {assigned[:10]}"
    missing = [name for name in SETTING_NAMES if not re.search(rf"^#\s*{name}=", text, re.M)]
    assert not missing, f"settings of the README without a '# NAME=value' line in .env.example: {missing}"


def test_deploy_holds_the_template_worker_unit_and_memory_limits():
    """README: ``systemctl start jobflow-worker@2`` with a templated unit; raise the unit's ``MemoryMax=``."""
    assert "jobflow-worker@2" in README and "MemoryMax=" in README
    template = ROOT / "deploy" / "jobflow-worker@.service"
    assert template.exists(), sorted(p.name for p in (ROOT / "deploy").iterdir())
    for unit in (ROOT / "deploy" / "jobflow-worker.service", template):
        text = unit.read_text()
        assert re.search(r"^MemoryMax=\S+", text, re.M), f"{unit.name} has no MemoryMax="
        assert re.search(r"^ExecStart=.*flask --app app worker", text, re.M), f"{unit.name} does not run the worker"
        assert re.search(r"^EnvironmentFile=.*\.env", text, re.M), f"{unit.name} does not read .env"


def unit_environment(unit_text: str, env_file_text: str) -> dict:
    """What systemd gives the service: ``Environment=``, then ``EnvironmentFile=`` (whose settings override it)."""
    env = {}
    for line in unit_text.splitlines():
        if line.startswith("Environment="):
            env.update(item.split("=", 1) for item in shlex.split(line[len("Environment="):]))
    for line in env_file_text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")) and "=" in line:
            name, value = line.split("=", 1)
            env[name.strip()] = value.strip().strip("'\"")
    return env


def test_env_example_as_dotenv_leaves_the_worker_units_debug_logs_off(product, db_uri):
    """The install step (``cp .env.example .env``, then set MONGODB_URI, the key, the token) under the worker unit."""
    with EmbeddingsServer(api_key=KEY) as provider:
        edits = {"MONGODB_URI": db_uri, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": provider.base_url,
                 "ADMIN_API_TOKEN": TOKEN, "SECRET_KEY": SECRET_KEY}
        env_file = product.write_env(edits, text=(product.folder / ".env.example").read_text())
        jobs = write_jobs(product.folder.parent / "jobs.jsonl", 3, "install")
        imported = product.run(FLASK + ["import-jobs", str(jobs)])
        assert imported.returncode == 0, imported.text[-2000:]
        unit = (product.folder / "deploy" / "jobflow-worker.service").read_text()
        assert "DEBUG_WORKER=false" in unit
        worker = product.start("worker-unit", FLASK + ["worker"], unit_environment(unit, env_file.read_text()))
        db = database(db_uri)
        wait_until("the three imported jobs embedded", lambda: db.jobs.count_documents(
            {"embedding.status": "completed"}) == 3, 60, processes=[worker])
        status = db.workerstatuses.find_one({"pid": worker.pid}) or {}
        assert status.get("model") == "text-embedding-3-small", status          # the default model
        assert worker.stop() == 0, worker.tail()
        db.client.close()
    debug = [line for line in worker.output().splitlines() if " DEBUG " in line]
    assert not debug, f"DEBUG lines under the unit's Environment=DEBUG_*=false: {debug[:5]}"
    assert_clean_output(*product.running, secrets=(KEY, TOKEN, SECRET_KEY))
    assert_one_line_per_event(worker)


# ----- bad settings and an unreachable database ------------------------------------------------------------------

def test_bad_settings_stop_every_entry_point_with_one_line_for_each(product, mongo_server):
    settings = valid_settings(f"{mongo_server}/acc_unused")
    # ALERT_CHECK_INTERVAL: at least 1000 ms.
    product.write_env({**settings, "MAIL_USE_TLS": "maybe", "PORT": "abc", "ALERT_CHECK_INTERVAL": 500})
    runs = product.run_all([(name, args, None) for name, args in ENTRY_POINTS], timeout=90)
    for run in runs:
        assert run.returncode != 0, f"{run.name} exited 0:\n{run.text[-3000:]}"
        assert_one_line_each(run, r"MAIL_USE_TLS", r"(?<![A-Z_])PORT\b", r"ALERT_CHECK_INTERVAL")
        assert run.seconds < 60, (run.name, run.seconds)
    assert_clean_output(*runs, secrets=(KEY, TOKEN, SECRET_KEY))


def test_an_unknown_name_in_dotenv_is_named_with_the_likely_setting_and_the_product_starts(product, db_uri):
    settings = valid_settings(db_uri)
    product.write_env({**settings, "MAIL_HOST": "smtp.example.com"})
    app = product.start("app", APP)
    wait_until("python app.py to answer", lambda: http_get(f"http://127.0.0.1:{settings['PORT']}/api/jobs")[0] == 200,
               60, processes=[app])
    assert app.stop() == 0, app.tail()
    warned = [line for line in app.output().splitlines() if "MAIL_HOST" in line]
    assert len(warned) == 1 and "MAIL_SERVER" in warned[0], warned or app.tail()
    assert_clean_output(app, secrets=(KEY, TOKEN, SECRET_KEY))


def test_an_unreachable_database_is_named_in_one_line_without_its_password(product):
    closed = free_port()         # nothing listens there
    product.write_env(valid_settings(f"mongodb://jobflow:s3cret@127.0.0.1:{closed}/x"))
    runs = product.run_all([(name, args, None) for name, args in ENTRY_POINTS], timeout=90)
    for run in runs:
        assert run.returncode != 0, f"{run.name} exited 0:\n{run.text[-3000:]}"
        assert_one_line_each(run, rf"127\.0\.0\.1:{closed}\b")
        assert run.seconds < 30, (run.name, run.seconds)
    assert_clean_output(*runs, secrets=("s3cret", KEY, TOKEN, SECRET_KEY))


# ----- the migration ------------------------------------------------------------------------------------------------

def test_migration_dry_run_queues_nothing_and_the_real_run_queues_every_active_job(product, db_uri):
    db = database(db_uri)
    now = datetime.now(timezone.utc)
    # Postings of the board as the original application left them: no embedding, nothing queued.
    db.jobs.insert_many([{"title": f"Sales Agent {i}", "description": f"Retail sales, store {i}.", "category": "Sales",
                          "location": "Korce", "status": "closed" if i == 6 else "active", "createdAt": now,
                          "updatedAt": now} for i in range(7)])
    product.write_env(valid_settings(db_uri))
    dry = product.run(FLASK + ["migrate-embeddings"], extra_env={"DRY_RUN": "true"})
    assert dry.returncode == 0, dry.text[-2000:]
    assert "dry run" in dry.text.lower(), dry.text[-2000:]
    assert db.jobqueues.count_documents({}) == 0, list(db.jobqueues.find({}, {"_id": 0, "status": 1}))

    real = product.run(FLASK + ["migrate-embeddings"])          # stdin is not a terminal: no countdown
    assert real.returncode == 0, real.text[-2000:]
    assert db.jobqueues.count_documents({"status": "pending"}) == 6, real.text[-2000:]
    helped = product.run(FLASK + ["migrate-embeddings", "--help"])
    assert helped.returncode == 0 and "--yes" in helped.text, helped.text
    db.client.close()
    assert_clean_output(dry, real, secrets=(KEY, TOKEN, SECRET_KEY))

