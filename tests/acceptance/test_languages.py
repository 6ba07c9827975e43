"""Acceptance: similar jobs across languages in the running product (``python app.py``), seen from outside.

Bilingual postings (English and Albanian, the same eight roles) go in through the API; the worker embeds them
with the OpenAI provider (the loopback server), detects each language, fits the language correction when the
drain ends, stores it, and every list is recomputed. Checked through ``/api/jobs/<id>/similar``, the database
(``similaritycorrections``) and the log.
"""
from __future__ import annotations

import re

import pytest
from bson import ObjectId

from jobflow.db import free_port
from jobflow.embeddings.text import RECIPE
from tests.support.database import database
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output
from tests.support.seeding import BILINGUAL_ROLES, bilingual_postings
from tests.support.waiting import wait_until
from tests.support.web import api, http_get

from .conftest import APP, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

KEY = "sk-test-acceptance-languages-41c2"
TOKEN = "acc-languages-token-93d1e0"
SECRET_KEY = "acc-languages-secret-2f6a1b-77c0e4d9a3b8"


@pytest.fixture(scope="module")
def product(tmp_path_factory, module_db_uri):
    port = free_port()
    with EmbeddingsServer(api_key=KEY) as provider:
        product = Product(tmp_path_factory.mktemp("languages") / "jobflow")
        product.write_env({
            "MONGODB_URI": module_db_uri, "PORT": port, "DEMO_DATA": "false", "EMBEDDING_PROVIDER": "openai",
            "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": provider.base_url, "ADMIN_API_TOKEN": TOKEN,
            "SECRET_KEY": SECRET_KEY, "EMBEDDING_WORKER_INTERVAL": 500, "SIMILARITY_TOP_N": 3})
        app = product.start("app", APP)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until("python app.py to answer HTTP", lambda: http_get(base + "/api/jobs")[0] == 200, 90,
                       processes=[app])
            yield product, app, base, database(module_db_uri)
        finally:
            product.stop_all()


# The correction is kept per model and embedding recipe (README, "Upgrading the recipe").
HEADER = f"text-embedding-3-small {RECIPE}"


def test_lists_cross_languages_by_default_and_a_caller_can_ask_for_one(product):
    product_, app, base, db = product
    ids = []
    for posting in bilingual_postings():
        status, body = api("POST", base + "/api/jobs", posting, TOKEN)
        assert status == 201, body
        ids.append(body["id"])
    role = {job_id: n // 2 % len(BILINGUAL_ROLES) for n, job_id in enumerate(ids)}

    def balanced():
        head = db.similaritycorrections.find_one({"_id": HEADER}) or {}
        return head.get("version") and head.get("listsVersion") == head.get("version")
    wait_until("the language correction fitted and every list written with it", balanced, 120, processes=[app],
               seen=lambda: db.similaritycorrections.find_one({"_id": HEADER}))
    lists = {}
    for job_id in ids:
        status, body = api("GET", f"{base}/api/jobs/{job_id}/similar")
        assert status == 200 and body["cached"], body
        lists[job_id] = body["similarJobs"]
    language = {e["job"]["id"]: e["language"] for entries in lists.values() for e in entries}
    assert set(language.values()) == {"en", "sq"}                    # detected: the postings carry no language
    for job_id, entries in lists.items():
        mine = "en" if ids.index(job_id) % 2 == 0 else "sq"
        assert all(role[e["job"]["id"]] == role[job_id] for e in entries), entries
        assert any(e["language"] != mine for e in entries), f"{job_id}: no job in the other language"
    status, only = api("GET", f"{base}/api/jobs/{ids[1]}/similar?language=en")
    assert status == 200 and only["count"] >= 1 and {e["language"] for e in only["similarJobs"]} == {"en"}
    status, bad = api("GET", f"{base}/api/jobs/{ids[1]}/similar?language=12")
    assert status == 400 and "language" in bad["error"]["fields"]
    stored = db.jobs.find_one({"_id": ObjectId(ids[1])}, {"embedding.language": 1})
    assert stored["embedding"]["language"] == "sq"
    head = db.similaritycorrections.find_one({"_id": HEADER})
    assert head["counts"]["en"] >= 20 and head["counts"]["sq"] >= 20          # MIN_JOBS of each language
    assert re.search(r"language correction version \d+ fitted on \d+ jobs \(en \d+, sq \d+, \* \d+\)", app.output())
    assert re.search(r"recomputed \d+ similar-jobs lists in [\d.]+s \(language correction changed\)", app.output())
    assert_clean_output(app, secrets=(KEY, TOKEN, SECRET_KEY))
