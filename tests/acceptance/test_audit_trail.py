"""Issue 24 from outside: every state-changing command an operator types lands in the audit log, with the OS
user, the host, its arguments and its result (failures too), and the dashboard's audit page shows it; and a
``.env`` that other users could read is made private by every entry point, with one line saying so.

The commands run as processes of a copy of the product (``flask --app app ...``); the log is read through
pymongo and through the audit page of a signed-in admin, over HTTP from gunicorn.
"""
from __future__ import annotations

import os
import pwd
import socket
import stat
from datetime import datetime, timezone

import pytest

from jobflow.db import free_port
from tests.support.database import database
from tests.support.seeding import write_jobs
from tests.support.waiting import wait_until
from tests.support.web import Browser, http_get

from .conftest import APP, FLASK, GUNICORN, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

ADMIN = ("auditor@example.com", "granite-lantern-orbit-7")
OS_USER = pwd.getpwuid(os.geteuid()).pw_name
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def product(tmp_path_factory, module_db_uri):
    made = Product(tmp_path_factory.mktemp("audit") / "jobflow")
    made.write_env({"MONGODB_URI": module_db_uri, "PORT": free_port(), "DEMO_DATA": "false",
                    "EMBEDDING_PROVIDER": "local", "ADMIN_API_TOKEN": "acc-audit-token-61c2e0",
                    "SECRET_KEY": "acc-audit-secret-9f1e7d-3b5a0c8e2d46"})
    yield made
    made.stop_all()


def test_every_state_changing_command_is_in_the_audit_log_and_on_its_page(product, module_db_uri, tmp_path):
    db = database(module_db_uri)
    old = datetime(2020, 1, 1, tzinfo=timezone.utc)
    db.jobqueues.insert_many([{"jobId": f"old-{n}", "status": "completed", "createdAt": old, "finishedAt": old}
                              for n in range(170)])
    db.jobqueues.insert_many([{"jobId": f"failed-{n}", "status": "failed", "createdAt": old, "attempts": 3,
                               "lastError": "provider error 500"} for n in range(3)])
    nested = tmp_path / "nested.jsonl"
    nested.write_text("[" * 50_000 + "]" * 50_000 + "\n")
    # (arguments, extra environment, exit code, action, target's start, result, count)
    commands = [
        (["import-jobs", str(write_jobs(tmp_path / "jobs.jsonl", 12, "aud"))], None, 0, "import-jobs",
         str(tmp_path / "jobs.jsonl"), "ok", 12),
        (["import-jobs", str(nested)], None, 1, "import-jobs", f"{nested}: failed: cannot import", "failed", 0),
        (["load-demo"], None, 0, "load-demo", "", "ok", 164),
        (["retry-failed"], None, 0, "retry-failed", "", "ok", 3),
        (["clear-old-queue", "--days", "0"], None, 0, "clear-old-queue", "--days 0", "ok", 170),
        (["recompute-all"], None, 0, "recompute-all", "", "ok", 0),
        (["rollback", "--level", "1", "--dry-run"], None, 0, None, None, None, None),      # changes nothing
        (["rollback", "--level", "1"], None, 0, "rollback", "--level 1", "ok", 0),
        (["rollback", "--reenable"], None, 0, "rollback", "--reenable", "ok", 0),
        (["rollback", "--level", "2"], None, 0, "rollback", "--level 2", "ok", 0),
        (["rollback", "--level", "3", "--confirm", "not-it"], None, 1, "rollback",
         "--level 3 --confirm not-it: failed: confirmation 'not-it' does not match", "failed", 0),
        (["rollback", "--level", "3", "--confirm", db.name], None, 0, "rollback", f"--level 3 --confirm {db.name}",
         "ok", 0),
        (["rollback", "--reenable"], None, 0, "rollback", "--reenable", "ok", 0),
        # Level 3 dropped the queue: every active job is queued again.
        (["migrate-embeddings", "--yes"], None, 0, "migrate-embeddings", "--yes", "ok", 12 + 164),
        (["create-admin", ADMIN[0]], {"JOBFLOW_ADMIN_PASSWORD": "password1234"}, 1, "create-user",
         f"{ADMIN[0]} (admin): failed: the password is too easy to guess", "failed", 0),
        (["create-admin", ADMIN[0]], {"JOBFLOW_ADMIN_PASSWORD": ADMIN[1]}, 0, "create-user", f"{ADMIN[0]} (admin)",
         "ok", 1),
    ]
    for args, extra, code, *_ in commands:
        done = product.run(FLASK + args, extra_env=extra, name=args[0])
        assert done.returncode == code, f"{args}: {done.text[-2000:]}"
        assert "Traceback" not in done.text, done.text[-3000:]

    entries = list(db.auditlog.find({}, sort=[("at", 1), ("_id", 1)]))
    expected = [c for c in commands if c[3]]
    assert [(e["action"], e["detail"]["result"]) for e in entries] == [(c[3], c[5]) for c in expected]
    for entry, (args, _, _, action, target, result, count) in zip(entries, expected):
        assert (entry["actor"], entry["via"], entry["ip"], entry["detail"]["host"]) == (OS_USER, "cli", HOST, HOST)
        assert entry["target"].startswith(target), (args, entry["target"])
        assert count is None or entry["count"] == count, (args, entry["count"])
        assert (result == "failed") == bool(entry["detail"].get("error")), entry
    migrated = entries[[c[3] for c in expected].index("migrate-embeddings")]
    assert migrated["detail"]["arguments"] == {"--yes": True} and migrated["detail"]["migrationId"]
    assert "password1234" not in str(entries) and ADMIN[1] not in str(entries)

    web = product.start("gunicorn", GUNICORN)
    base = f"http://127.0.0.1:{product.settings['PORT']}"
    wait_until("gunicorn answers", lambda: http_get(base + "/api/health/embeddings")[0] in (200, 503),
               processes=[web])
    try:
        browser = Browser(base)
        browser.sign_in(*ADMIN)
        status, page, _ = browser.get("/admin/embeddings/audit")
    finally:
        web.stop()
    assert status == 200
    row = next(line for line in page.split("<tr>") if "clear-old-queue" in line)
    for shown in (OS_USER, ">cli<", "--days 0", ">170<", HOST):
        assert shown in row, (shown, row)
    assert "failed: confirmation &#39;not-it&#39; does not match" in page


@pytest.mark.parametrize("name,args", [("flask --app app env-example", FLASK + ["env-example"]),
                                       ("gunicorn -c gunicorn.conf.py", GUNICORN), ("python app.py", APP)])
def test_a_dotenv_others_can_read_is_made_private_by_every_entry_point(product, name, args):
    env = product.folder / ".env"
    env.chmod(0o644)                                        # as `cp .env.example .env` leaves it
    warning = f"jobflow: warning: {env} was readable by other users: changed its mode to 600"
    proc = product.start(name, args)
    try:
        wait_until(f"{name} says it made .env private", lambda: warning in proc.output(), timeout=60)
        assert stat.S_IMODE(env.stat().st_mode) == 0o600
        if name.startswith("gunicorn"):                     # its web processes find it private: nothing more to say
            base = f"http://127.0.0.1:{product.settings['PORT']}"
            wait_until("gunicorn answers", lambda: http_get(base + "/api/health/embeddings")[0] in (200, 503))
    finally:
        proc.stop()
    assert proc.output().count("readable by other users") == 1, proc.tail()
