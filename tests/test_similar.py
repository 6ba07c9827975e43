"""Similar-jobs lists: correct, kept current as jobs arrive, change and close; the endpoint and fallback."""
import numpy as np
import pytest
from bson import ObjectId

from jobflow.embeddings.text import RECIPE
from jobflow.jobs import store
from jobflow.models import Job
from jobflow.models.fields import vector_to_bson
from jobflow.similarity.answer import similar_jobs
from jobflow.similarity.lists import SimilarLists
from jobflow.timeutil import utcnow

MODEL = "test-model"
DIM = 16
TOP_N = 5
MIN_SCORE = 0.2


def insert_jobs(n, rng, category="Software Development", location="Tirana"):
    """Active jobs with completed embeddings of random vectors; returns {id: vector}."""
    docs, vectors = [], {}
    for i in range(n):
        vector = rng.standard_normal(DIM).astype(np.float32)
        _id = ObjectId()
        vectors[_id] = vector
        docs.append({"_id": _id, "title": f"Job {i}", "description": "d", "status": "active", "category": category,
                     "location": location, "createdAt": utcnow(), "updatedAt": utcnow(),
                     "embedding": {"status": "completed", "model": MODEL, "vector": vector_to_bson(vector),
                                   "textHash": f"h{i}", "dimensions": DIM, "recipe": RECIPE}})
    Job._get_collection().insert_many(docs)
    return vectors


def reference(vectors, top_n=TOP_N, min_score=MIN_SCORE):
    """Brute-force top-N lists: every pair's cosine, sorted."""
    ids = list(vectors)
    unit = {i: v / np.linalg.norm(v) for i, v in vectors.items()}
    out = {}
    for a in ids:
        scores = sorted(((float(unit[a] @ unit[b]), b) for b in ids if b != a), key=lambda p: (-p[0], p[1]))
        out[a] = [b for s, b in scores if s >= min_score][:top_n]
    return out


def stored_lists():
    return {d["_id"]: [s["jobId"] for s in d.get("similarJobs", [])]
            for d in Job._get_collection().find({}, {"similarJobs": 1})}


def make_lists():
    return SimilarLists(DIM, TOP_N, MIN_SCORE, MODEL, block_size=37)


def computed_lists():
    """Lists loaded from the database and all computed once, as a worker that has run a while holds them."""
    lists = make_lists()
    lists.load()
    lists.recompute_all()
    return lists


def assert_matches(expected, actual):
    for job_id, ids in expected.items():
        assert actual[job_id] == ids, f"list of {job_id}"
        assert job_id not in actual[job_id]  # never itself


@pytest.mark.parametrize("seed", [1, 2])
def test_recompute_all_matches_brute_force(app, seed):
    vectors = insert_jobs(150, np.random.default_rng(seed))
    lists = make_lists()
    assert lists.load() == 150
    assert lists.recompute_all() == 150
    assert_matches(reference(vectors), stored_lists())


def test_a_job_taken_out_while_a_full_recompute_runs_comes_back_in_no_list(app):
    """The index sync (another thread) takes a closed job out between a block's computation and its write: the
    block is written without it."""
    vectors = insert_jobs(150, np.random.default_rng(5))
    lists = computed_lists()
    blocks = lists.index.all_top_k
    closed: list = []

    def racing(*args, **kwargs):
        for block_ids, block_lists in blocks(*args, **kwargs):
            if not closed:
                closed.append(block_lists[0][0][0])      # a job this block's first list names
                Job._get_collection().update_one({"_id": closed[0]}, {"$set": {"status": "closed"}})
                lists.remove(closed)
            yield block_ids, block_lists
    lists.index.all_top_k = racing
    assert lists.recompute_all() == 149
    held = [job_id for job_id, ids in stored_lists().items() if closed[0] in ids and job_id != closed[0]]
    assert held == []
    expected = reference({k: v for k, v in vectors.items() if k != closed[0]})
    assert all(stored_lists()[k] == expected[k] for k in expected if len(stored_lists()[k]) == TOP_N)


def test_incremental_arrivals_keep_every_list_exact(app):
    """Jobs embedded one batch at a time: each arrival updates the lists it enters (reverse updates)."""
    rng = np.random.default_rng(3)
    lists = make_lists()
    lists.load()
    vectors = {}
    for batch in range(12):
        new = insert_jobs(10, rng)
        vectors.update(new)
        lists.on_embedded(list(new), list(new.values()), [None] * len(new))
    assert_matches(reference(vectors), stored_lists())


def test_a_sync_leaves_vectors_being_stored_to_their_own_batch(app):
    """A sync that reads back vectors this worker is still storing does not rank them as another process's
    (reading stored lists and writing them at once): the batch's on_embedded ranks them, for its flush."""
    rng = np.random.default_rng(11)
    vectors = insert_jobs(30, rng)
    lists = computed_lists()
    written, write = [], lists.write

    def counted(ids):
        ids = list(ids)
        written.extend(ids)
        return write(ids)
    lists.write = counted
    arriving = {}
    with lists.store(ids := [ObjectId() for _ in range(10)]):
        for _id in ids:                                 # the batch's vector write
            arriving[_id] = rng.standard_normal(DIM).astype(np.float32)
            Job._get_collection().insert_one({
                "_id": _id, "title": "New", "status": "active", "createdAt": utcnow(), "updatedAt": utcnow(),
                "embedding": {"status": "completed", "model": MODEL, "vector": vector_to_bson(arriving[_id]),
                              "textHash": f"n{_id}", "generatedAt": utcnow(), "dimensions": DIM,
                              "recipe": RECIPE}})
        lists.sync()                                    # the index sync runs between the write and the ranking
        assert written == [] and not any(i in lists.index for i in ids)
        lists.on_embedded(ids, list(arriving.values()), [f"n{i}" for i in ids], defer=True)
    assert written == [] and set(ids) <= lists.dirty
    lists.flush()
    assert_matches(reference({**vectors, **arriving}), stored_lists())


def test_new_close_job_enters_an_existing_list(app):
    rng = np.random.default_rng(4)
    vectors = insert_jobs(30, rng)
    lists = computed_lists()
    target = next(iter(vectors))
    twin = insert_jobs(1, rng)
    twin_id = next(iter(twin))
    twin_vector = vectors[target] + 0.01 * rng.standard_normal(DIM).astype(np.float32)
    Job._get_collection().update_one({"_id": twin_id}, {"$set": {"embedding.vector": vector_to_bson(twin_vector)}})
    lists.on_embedded([twin_id], [twin_vector], ["h"])
    assert stored_lists()[target][0] == twin_id
    assert stored_lists()[twin_id][0] == target
    meta = Job._get_collection().find_one({"_id": target})["similarityMetadata"]
    assert meta["model"] == MODEL and meta["comparedWith"] == 31 and meta["computedAt"]


def test_a_list_an_earlier_version_flagged_for_refill_is_refilled_after_a_load(app):
    """Earlier versions flagged a list when a job left it, for the next sync; the flag is honoured at load."""
    vectors = insert_jobs(30, np.random.default_rng(8))
    computed_lists()
    flagged = next(iter(vectors))
    full = stored_lists()[flagged]
    Job._get_collection().update_one({"_id": flagged}, {"$set": {"similarJobs": [], "similarityMetadata.refill": True}})
    lists = make_lists()
    lists.load()
    lists.flush()
    doc = Job._get_collection().find_one({"_id": flagged})
    assert [s["jobId"] for s in doc["similarJobs"]] == full
    assert "refill" not in doc["similarityMetadata"]


def test_closing_and_deleting_refill_lists(app):
    rng = np.random.default_rng(5)
    vectors = insert_jobs(60, rng)
    lists = computed_lists()
    popular = max(vectors, key=lambda j: sum(j in ids for ids in stored_lists().values()))
    assert sum(popular in ids for ids in stored_lists().values()) > 0
    holder = next(j for j, ids in stored_lists().items() if popular in ids)
    store.update_job(popular, {"status": "closed"})           # through the API's own path
    # The answer leaves it out at once; the index sync takes it out of every stored list.
    assert popular not in [e["job"]["id"] for e in similar_jobs(str(holder), 10)["similarJobs"]]
    lists.sync()
    assert all(popular not in ids for ids in stored_lists().values())
    doomed = next(j for j in vectors if j != popular and any(j in ids for ids in stored_lists().values()))
    store.delete_job(doomed)
    lists.sync()                                                   # the deletion's note, no reconcile needed
    assert all(doomed not in ids for ids in stored_lists().values())
    remaining = {j: v for j, v in vectors.items() if j not in (popular, doomed)}
    actual = stored_lists()
    assert_matches(reference(remaining), {j: actual[j] for j in remaining})


def test_reconcile_drops_jobs_removed_behind_its_back_across_pages(app, monkeypatch):
    from jobflow.similarity import sync
    monkeypatch.setattr(sync, "RECONCILE_PAGE", 7)     # 40 jobs: six pages, the last one short
    rng = np.random.default_rng(9)
    vectors = insert_jobs(40, rng)
    lists = computed_lists()
    ids = sorted(vectors)
    gone, closed = ids[6:9], ids[-1]                            # across a page boundary, and the very last
    Job._get_collection().delete_many({"_id": {"$in": gone}})  # another application deletes and closes
    Job._get_collection().update_one({"_id": closed}, {"$set": {"status": "closed"}})
    assert lists.reconcile() == 4
    assert sorted(lists.index.ids()) == [i for i in ids if i not in gone and i != closed]
    assert lists.reconcile() == 0


def test_reconcile_takes_at_most_a_fiftieth_of_the_time(app, monkeypatch):
    """Reading every indexed job back is a backstop: after one that took 40 ms the next waits 2 s or more."""
    import time

    from jobflow.similarity import sync
    monkeypatch.setattr(sync, "RECONCILE_EVERY", 0.0)
    insert_jobs(10, np.random.default_rng(10))
    lists = computed_lists()
    still, runs = sync.still_qualifying, []

    def slow(lists, ids):
        runs.append(len(ids))
        time.sleep(0.04)
        return still(lists, ids)
    monkeypatch.setattr(sync, "still_qualifying", slow)
    lists.sync()
    assert runs == [10] and lists.reconcile_every >= 0.04 / sync.RECONCILE_SHARE
    lists.sync()                                                # right after: not again
    assert runs == [10]


def test_reconcile_adds_jobs_the_sync_passed_by_and_reads_changed_vectors_again(app, monkeypatch):
    """A vector stored by another process well after its stamp is outside the sync's look back (seconds): the
    reconcile, looking back to its last run and a minute more, finds the job missing (or indexed with an older
    text) and ranks it; the lists it enters are written."""
    from datetime import timedelta

    from jobflow.similarity import sync
    monkeypatch.setattr(sync, "RECONCILE_PAGE", 7)
    rng = np.random.default_rng(12)
    vectors = insert_jobs(30, rng)
    lists = computed_lists()
    lists.sync()                                                # the first sync's reconcile: nothing to do
    assert lists.reconcile() == 0
    late = utcnow() - timedelta(seconds=30)                     # stamped half a minute before it landed
    newcomer = insert_jobs(1, rng)
    [(new_id, new_vector)] = newcomer.items()
    changed = next(iter(vectors))
    moved = rng.standard_normal(DIM).astype(np.float32)
    coll = Job._get_collection()
    coll.update_many({"_id": {"$in": [new_id, changed]}}, {"$set": {"updatedAt": late, "embedding.generatedAt": late}})
    coll.update_one({"_id": changed}, {"$set": {"embedding.vector": vector_to_bson(moved), "embedding.textHash": "new"}})
    lists.sync()                                                # looks a few seconds back: passes both by
    assert new_id not in lists.index and lists.hashes[changed] != "new"
    assert lists.reconcile() == 2
    assert new_id in lists.index and lists.hashes[changed] == "new"
    vectors.update({new_id: new_vector, changed: moved})
    actual = stored_lists()
    assert_matches(reference(vectors), {j: actual[j] for j in vectors})
    assert lists.reconcile() == 0


def test_endpoint_serves_the_list_without_closed_jobs(app, client):
    rng = np.random.default_rng(6)
    vectors = insert_jobs(20, rng)
    computed_lists()
    job_id = next(iter(vectors))
    expected = reference(vectors)[job_id]
    body = client.get(f"/api/jobs/{job_id}/similar").get_json()
    assert body["cached"] is True and body["computedAt"]
    assert [item["job"]["id"] for item in body["similarJobs"]] == [str(i) for i in expected]
    assert body["count"] == len(expected)
    scores = [item["score"] for item in body["similarJobs"]]
    assert scores == sorted(scores, reverse=True) and all(s >= MIN_SCORE for s in scores)
    Job.objects(id=expected[0]).update(set__status="closed")
    body = client.get(f"/api/jobs/{job_id}/similar?limit=2").get_json()
    assert [item["job"]["id"] for item in body["similarJobs"]] == [str(i) for i in expected[1:3]]


def test_fallback_same_category_then_location_newest_first(app, client, auth_headers):
    def create(title, category, location):
        return client.post("/api/jobs", json={"title": title, "description": "x", "category": category,
                                               "location": location}, headers=auth_headers).get_json()["id"]
    nurse_old = create("Nurse A", "Healthcare", "Vlorë")
    nurse_new = create("Nurse B", "Healthcare", "Durrës")
    local = create("Waiter", "Hospitality & Tourism", "Tirana")
    create("Chef", "Hospitality & Tourism", "Shkodër")
    target = create("Nurse C", "Healthcare", "Tirana")
    response = client.get(f"/api/jobs/{target}/similar")
    body = response.get_json()
    assert body["cached"] is False and body["computedAt"] is None
    assert [i["job"]["id"] for i in body["similarJobs"]] == [nurse_new, nurse_old, local]
    assert all(i["score"] is None for i in body["similarJobs"])
    assert "max-age" in response.headers["Cache-Control"]


def test_text_change_stops_serving_the_old_list(app, client, auth_headers):
    vectors = insert_jobs(10, np.random.default_rng(7))
    computed_lists()
    job_id = str(next(iter(vectors)))
    assert client.get(f"/api/jobs/{job_id}/similar").get_json()["cached"] is True
    client.patch(f"/api/jobs/{job_id}", json={"salaryRange": "1000 EUR"}, headers=auth_headers)
    assert client.get(f"/api/jobs/{job_id}/similar").get_json()["cached"] is True  # text unchanged
    client.patch(f"/api/jobs/{job_id}", json={"title": "Something else entirely"}, headers=auth_headers)
    body = client.get(f"/api/jobs/{job_id}/similar").get_json()
    assert body["cached"] is False  # the fallback answers until the new list is computed


def test_unknown_id_and_bad_limit(app, client):
    assert client.get("/api/jobs/000000000000000000000000/similar").status_code == 404
    assert client.get("/api/jobs/nope/similar").get_json()["error"]["code"] == "not_found"
    insert_jobs(2, np.random.default_rng(8))
    job_id = str(Job.objects.first().id)
    response = client.get(f"/api/jobs/{job_id}/similar?limit=11")
    assert response.status_code == 400 and "limit" in response.get_json()["error"]["fields"]


def test_cors_for_configured_origins(make_app):
    app = make_app(CORS_ORIGINS=["https://board.example.com"])
    client = app.test_client()
    with app.app_context():
        insert_jobs(1, np.random.default_rng(9))
        job_id = str(Job.objects.first().id)
    allowed = client.get(f"/api/jobs/{job_id}/similar", headers={"Origin": "https://board.example.com"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://board.example.com"
    other = client.get(f"/api/jobs/{job_id}/similar", headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_recompute_runs_when_asked_then_waits_for_the_interval(app):
    """The admin action asks; one worker recomputes under the lease; the next check does nothing."""
    from jobflow.ops import recompute
    from jobflow.worker.loop import Worker
    vectors = insert_jobs(25, np.random.default_rng(11))
    worker = Worker({**app.config, "SIMILARITY_MIN_SCORE": MIN_SCORE, "SIMILARITY_TOP_N": TOP_N},
                    provider=type("P", (), {"dimensions": DIM, "model": MODEL, "max_concurrent": 1,
                                            "max_batch_inputs": 8, "name": "test",
                                            "describe": lambda self: "test"})(), worker_id="w-recompute")
    worker.start(scheduler=False)
    assert worker.recompute_if_due() == 0            # first check only notes the time
    assert all(not ids for ids in stored_lists().values())
    recompute.request()
    assert worker.recompute_if_due() == 25
    assert_matches(reference(vectors), stored_lists())
    state = recompute.state()
    assert state["lastCount"] == 25 and state["lastRunAt"] >= state["requestedAt"]
    assert worker.recompute_if_due() == 0            # not due again until SIMILARITY_RECOMPUTE_INTERVAL


def test_a_language_that_names_no_language_is_a_400(app, client):
    """README: ``?language=`` keeps one language's jobs; a value that names no language is a 400 naming it."""
    job = str(next(iter(insert_jobs(3, np.random.default_rng(3)))))
    computed_lists()
    for value in ("xx", "qq-GB", "xyz", "Klingon", "und", "12", "<b>", "e" * 300):
        response = client.get(f"/api/jobs/{job}/similar", query_string={"language": value})
        assert response.status_code == 400, value
        error = response.get_json()["error"]
        assert error["code"] == "invalid_input" and set(error["fields"]) == {"language"}, value
        assert "language=" in error["message"] and value[:40] in error["message"], value
    # A language the product knows, with no job of it in the list, is an empty list (200).
    for value in ("de", "en-GB", "eng", "English", "yue", "sq"):
        response = client.get(f"/api/jobs/{job}/similar", query_string={"language": value})
        assert response.status_code == 200, value
    assert client.get(f"/api/jobs/{job}/similar?language=de").get_json()["similarJobs"] == []


def test_the_known_languages_cover_everything_a_job_can_be_given():
    """Every code py3langid can give a job, and every code normalise() maps a name or ISO 639-2 code to."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from jobflow.embeddings import language
    from jobflow.embeddings.language import KNOWN_LANGUAGES
    detected = set(LanguageIdentifier.from_model_file(MODEL_FILE).nb_classes)
    assert detected <= KNOWN_LANGUAGES
    assert set(language._NAMES.values()) | set(language._THREE.values()) <= KNOWN_LANGUAGES
    assert len(KNOWN_LANGUAGES) == 184 + 26        # ISO 639-1, and py3langid's 3-letter codes
