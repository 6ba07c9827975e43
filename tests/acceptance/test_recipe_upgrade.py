"""A board that upgrades to a new embedding recipe keeps serving a stored list on every active job throughout the
re-embedding (README, "Similarity quality": recipe versions), seen through HTTP while ``migrate-embeddings`` and
the worker of ``python app.py`` re-embed the board."""
from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from jobflow.db import free_port
from jobflow.embeddings.text import LEGACY_RECIPE, RECIPE
from tests.support.database import database
from tests.support.openai_server import EmbeddingsServer
from tests.support.processes import assert_clean_output
from tests.support.waiting import wait_until
from tests.support.web import http_get

from .conftest import APP, FLASK, Product

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]

KEY = "sk-test-acceptance-recipe-81c2"
TOKEN = "acc-recipe-token-4d0b7e19"
SECRET_KEY = "acc-recipe-secret-7a1f3c-55d0e9b2c4a8"
ROLES = ["Nurse", "Python Developer", "Accountant", "Truck Driver", "Chef", "Electrician", "Teacher", "Sales Agent"]
JOBS = 60


def test_every_job_serves_a_stored_list_throughout_a_recipe_upgrade(tmp_path, module_db_uri):
    db = database(module_db_uri)
    now = datetime.now(timezone.utc)
    ids = [str(i) for i in db.jobs.insert_many([
        {"title": f"{ROLES[n % 8]} {n}", "description": f"{ROLES[n % 8]} wanted: team {n % 9}, shift {n % 4}.",
         "company": f"Company {n % 5}", "location": "Vlore", "status": "active", "createdAt": now, "updatedAt": now}
        for n in range(JOBS)]).inserted_ids]
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def answers() -> list[dict]:
        return [http_get(f"{base}/api/jobs/{i}/similar")[1] for i in ids]

    with EmbeddingsServer(api_key=KEY) as provider:
        product = Product(tmp_path / "jobflow")
        product.write_env({"MONGODB_URI": module_db_uri, "PORT": port, "HOST": "127.0.0.1", "DEMO_DATA": "false",
                           "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": provider.base_url,
                           "ADMIN_API_TOKEN": TOKEN, "SECRET_KEY": SECRET_KEY, "SIMILARITY_MIN_SCORE": "0.0"})
        try:
            assert product.run(FLASK + ["migrate-embeddings", "--yes"]).returncode == 0
            app = product.start("app", APP)
            wait_until("every job's stored list", lambda: all(a["cached"] and a["count"] for a in answers()),
                       180, processes=[app])
            assert app.stop() == 0
            # What the previous release left: embeddings and lists without a recipe (the first one). Where the
            # current recipe is still the first, an older one is named instead.
            older = ({"$unset": {"embedding.recipe": "", "similarityMetadata.recipe": ""}} if RECIPE != LEGACY_RECIPE
                     else {"$set": {"embedding.recipe": "older/0", "similarityMetadata.recipe": "older/0"}})
            db.jobs.update_many({}, older)
            embedded_before = provider.embedded.copy()

            app = product.start("app", APP)
            migrated = product.run(FLASK + ["migrate-embeddings", "--yes"])
            assert migrated.returncode == 0 and "made by an earlier recipe:" in migrated.text, migrated.text[-2000:]
            assert f"queued {JOBS} jobs" in migrated.text, migrated.text[-2000:]

            seen: list[tuple[str, dict]] = []
            done = threading.Event()

            def watch():
                while not done.is_set():
                    seen.extend(zip(ids, answers()))

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            current = {"embedding.recipe": RECIPE, "similarityMetadata.recipe": RECIPE}
            wait_until("every job re-embedded and its list made by the new recipe",
                       lambda: db.jobs.count_documents(current) == JOBS, 240, processes=[app],
                       seen=lambda: f"{db.jobs.count_documents(current)} of {JOBS}")
            done.set()
            watcher.join(60)
            assert len(seen) >= JOBS * 2, "the answers were watched through the re-embedding"
            short = [(job_id, a.get("cached"), a.get("count")) for job_id, a in seen
                     if not (a.get("cached") and a.get("count"))]
            assert short == [], f"{len(short)} of {len(seen)} answers without a stored list: {short[:5]}"
            assert all(a["cached"] and a["count"] for a in answers())
            assert sum(provider.embedded.values()) > sum(embedded_before.values()), "the texts were embedded again"
            assert app.stop() == 0
            assert_clean_output(app, migrated, secrets=(KEY, TOKEN, SECRET_KEY))
        finally:
            product.stop_all()
            db.client.close()
