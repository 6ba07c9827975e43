"""A new embedding recipe: found by the migration as another model's embeddings are, and the board keeps serving
every job's stored list until the new ones are as long."""
import numpy as np
import pytest
from bson import ObjectId

from jobflow.embeddings import text
from jobflow.embeddings.text import job_text, text_hash
from jobflow.models import Job
from jobflow.models.fields import vector_to_bson
from jobflow.ops import migration
from jobflow.similarity.answer import similar_jobs
from jobflow.similarity.lists import SimilarLists
from jobflow.timeutil import utcnow

MODEL = "test-model"
DIM = 16
TOP_N = 5


def old_board(n: int, rng) -> dict:
    """Active jobs as the first recipe left them: embeddings without a recipe, full lists written by it."""
    docs, vectors = [], {}
    for i in range(n):
        doc = {"_id": ObjectId(), "title": f"Job {i}", "description": "d", "status": "active",
               "createdAt": utcnow(), "updatedAt": utcnow()}
        vectors[doc["_id"]] = rng.standard_normal(DIM).astype(np.float32)
        doc["embedding"] = {"status": "completed", "model": MODEL, "vector": vector_to_bson(vectors[doc["_id"]]),
                            "textHash": text_hash(job_text(doc)), "dimensions": DIM}
        docs.append(doc)
    Job._get_collection().insert_many(docs)
    lists = SimilarLists(DIM, TOP_N, -1.0, MODEL)
    lists.load()
    lists.recompute_all()
    return vectors


CURRENT = text.RECIPE


@pytest.fixture(autouse=True)
def previous_release(monkeypatch):
    """The board as the release before the current recipe ran it: the first recipe, written nowhere."""
    monkeypatch.setattr(text, "RECIPE", text.LEGACY_RECIPE)


def upgrade(monkeypatch):
    """The product upgraded to the current recipe."""
    monkeypatch.setattr(text, "RECIPE", CURRENT)


def stored_lengths() -> dict:
    return {d["_id"]: len(d.get("similarJobs") or []) for d in Job._get_collection().find({}, {"similarJobs": 1})}


def test_the_migration_finds_the_jobs_of_an_older_recipe(app, monkeypatch):
    old_board(12, np.random.default_rng(3))
    assert migration.plan(MODEL).current == 12
    upgrade(monkeypatch)
    found = migration.plan(MODEL)
    assert (found.older_recipe, found.current, len(found.to_queue)) == (12, 0, 12)
    assert found.text_changed == 0 and found.other_model == 0


def test_every_job_keeps_a_stored_list_until_the_new_ones_are_as_long(app, monkeypatch):
    rng = np.random.default_rng(4)
    vectors = old_board(40, rng)
    assert set(stored_lengths().values()) == {TOP_N}
    upgrade(monkeypatch)
    lists = SimilarLists(DIM, TOP_N, -1.0, MODEL)
    assert lists.load() == 0, "the older recipe's vectors never enter the new index"
    ids = list(vectors)
    for start in range(0, len(ids), 2):       # the worker re-embeds the board, a batch at a time
        batch = ids[start:start + 2]
        Job._get_collection().update_many({"_id": {"$in": batch}}, {"$set": {"embedding.recipe": text.RECIPE}})
        lists.on_embedded(batch, [rng.standard_normal(DIM).astype(np.float32) for _ in batch],
                          [f"h{i}" for i in batch])
        assert min(stored_lengths().values()) == TOP_N, f"after {start + len(batch)} jobs"
        for job_id in ids[:3]:
            answer = similar_jobs(str(job_id), 10)
            assert answer["cached"] and answer["count"] == TOP_N
    lists.upgrading()
    lists._upgrade = (0.0, True)          # as the next look, UPGRADE_CHECK later, finds the upgrade over
    assert not lists.upgrading()
    meta = {d["_id"]: d["similarityMetadata"] for d in Job._get_collection().find({}, {"similarityMetadata": 1})}
    assert {m.get("recipe") for m in meta.values()} == {CURRENT}, "every list now made by the new recipe"
    assert not lists.held


def test_lists_kept_through_an_upgrade_are_written_by_the_index_sync_once_it_is_over(app, monkeypatch):
    """The last write of a re-embedding may come before its end is seen; the lists it kept are written
    by the worker's periodic index sync, even when no other list is written again."""
    rng = np.random.default_rng(5)
    ids = list(old_board(12, rng))
    upgrade(monkeypatch)
    lists = SimilarLists(DIM, TOP_N, -1.0, MODEL)
    lists.load()
    first = ids[:3]
    Job._get_collection().update_many({"_id": {"$in": first}}, {"$set": {"embedding.recipe": text.RECIPE}})
    lists.on_embedded(first, [rng.standard_normal(DIM).astype(np.float32) for _ in first], [f"h{i}" for i in first])
    assert lists.held == set(first), "two entries each where the old lists had five: the old ones are kept"
    # The other jobs of the old kind close: no job of the old kind is left, and nothing more is embedded.
    Job._get_collection().update_many({"_id": {"$in": ids[3:]}}, {"$set": {"status": "closed"}})
    lists.sync()
    assert lists.held == set(first), "the end of the upgrade is looked for UPGRADE_CHECK after the last look"
    lists._upgrade = (0.0, True)          # UPGRADE_CHECK later
    lists.sync()
    meta = {d["_id"]: d["similarityMetadata"].get("recipe") for d in Job._get_collection().find(
        {"_id": {"$in": first}}, {"similarityMetadata": 1})}
    assert meta == {i: CURRENT for i in first}
    assert {stored_lengths()[i] for i in first} == {2}
    assert not lists.held
