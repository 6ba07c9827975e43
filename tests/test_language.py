"""Language-balanced similarity: each job's language, the correction, its stored state, and lists across languages."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from bson import ObjectId

from jobflow.embeddings import provider_model
from jobflow.embeddings.language import detect, job_language, normalise
from jobflow.embeddings.text import RECIPE
from jobflow.jobs import queue
from jobflow.models import CorrectionHeader, Job, QueueItem
from jobflow.models.fields import vector_to_bson
from jobflow.ops import recompute
from jobflow.ops.importer import DEMO_DIR
from jobflow.similarity import stored_correction
from jobflow.similarity.balance import REFIT_MOVEMENT
from jobflow.similarity.correction import KEEP_MEAN, MIN_JOBS, LanguageCorrection
from jobflow.similarity.lists import SimilarLists
from jobflow.timeutil import utcnow
from jobflow.worker.loop import Worker
from tests.support.seeding import BILINGUAL_ROLES, bilingual_postings

MODEL = "test-model"
DIM = 24
TOP_N = 5
KEY = "sk-test-loopback"


# ----- a job's language ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("given, expected", [("en", "en"), ("EN-gb", "en"), ("eng", "en"), ("English", "en"),
                                             ("shqip", "sq"), ("sq_AL", "sq"), ("alb", "sq"), ("de", "de"),
                                             ("", None), ("  ", None), ("und", None), ("??", None),
                                             ("the English one", None), (None, None), (3, None)])
def test_language_field_is_normalised_or_ignored(given, expected):
    assert normalise(given) == expected


def test_detection_reads_every_demo_posting_right_and_the_field_wins():
    rows = []
    for path in sorted(DEMO_DIR.glob("*.jsonl")):
        rows += [("sq" if "_sq" in path.name else "en", json.loads(line)) for line in path.open()]
    wrong = [(row["title"], job_language(row)) for lang, row in rows if job_language(row) != (lang, True)]
    assert not wrong and len(rows) == 164
    albanian = next(row for lang, row in rows if lang == "sq")
    assert job_language({**albanian, "language": "English"}) == ("en", False)


def test_the_detector_is_let_go_and_loaded_again_when_needed():
    from jobflow.embeddings import language
    assert detect("Ingénieur logiciel senior pour notre équipe à Paris, télétravail possible") == "fr"
    assert language.release() is True and language._identifier is None
    assert language.release() is False
    assert detect("Senior software engineer for our team in London, remote possible") == "en"


def test_too_little_text_is_undetermined():
    assert detect("Data Engineer") == "und"
    assert detect("") == "und"
    assert detect("Zhvillues Android me përvojë në Kotlin dhe në ekipe të vogla") == "sq"


# ----- the correction -------------------------------------------------------------------------------------------
def bilingual(rng, per_topic=4, topics=8, shift=2.5):
    """Unit vectors where language outweighs topic: topic + a large per-language offset and stretch."""
    centres = rng.standard_normal((topics, DIM))
    offsets = {"en": rng.standard_normal(DIM) * shift, "sq": rng.standard_normal(DIM) * shift}
    stretch = {"en": np.ones(DIM), "sq": np.linspace(0.5, 1.5, DIM)}
    vectors, languages, labels = [], [], []
    for lang in ("en", "sq"):
        for t in range(topics):
            for _ in range(per_topic):
                vectors.append((centres[t] + 0.3 * rng.standard_normal(DIM)) * stretch[lang] + offsets[lang])
                languages.append(lang)
                labels.append(t)
    vectors = np.array(vectors)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), languages, np.array(labels)


def nearest(vectors: np.ndarray) -> np.ndarray:
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    return np.argmax(scores, axis=1)


def test_correction_finds_the_same_topic_in_the_other_language():
    vectors, languages, topics = bilingual(np.random.default_rng(1))
    langs = np.array(languages)
    raw_nearest = nearest(vectors)
    assert (langs[raw_nearest] == langs).all()                       # raw: language first
    correction = LanguageCorrection.fit([(vectors, languages)], version=1)
    corrected, lengths, keys = correction.apply(vectors, languages)
    best = nearest(corrected.astype(np.float64))
    assert (topics[best] == topics).mean() >= 0.95                   # corrected: the topic first
    scores = corrected @ corrected.T
    other = np.array([[scores[i, j] for j in range(len(langs)) if langs[j] != langs[i] and topics[j] == topics[i]]
                      for i in range(len(langs))])
    unrelated = np.array([[scores[i, j] for j in range(len(langs)) if topics[j] != topics[i]]
                          for i in range(len(langs))])
    assert other.mean() > unrelated.mean() + 0.5                     # same topic across languages scores high
    back = correction.invert(corrected, lengths, keys)
    np.testing.assert_allclose(back, vectors, atol=1e-5)             # the raw vectors can be had back


def test_one_language_is_only_moved_from_the_common_mean_and_few_jobs_are_not_corrected():
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((60, DIM)) + 3
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    correction = LanguageCorrection.fit([(vectors, ["en"] * 60)], version=1)
    centred = vectors - (1 - KEEP_MEAN) * vectors.mean(axis=0)
    np.testing.assert_allclose(correction.apply(vectors, ["en"] * 60)[0],
                               centred / np.linalg.norm(centred, axis=1, keepdims=True), atol=1e-5)
    assert not LanguageCorrection.fit([(vectors[:MIN_JOBS - 1], ["en"] * (MIN_JOBS - 1))], version=1).active
    undetermined, _, keys = correction.apply(vectors[:3], ["und", "fr", "und"])   # read as the nearest language
    assert keys.tolist() == ["en"] * 3
    np.testing.assert_allclose(undetermined, centred[:3] / np.linalg.norm(centred[:3], axis=1, keepdims=True),
                               atol=1e-5)


def test_undetermined_jobs_are_corrected_as_the_language_they_read_as():
    vectors, languages, topics = bilingual(np.random.default_rng(10))
    correction = LanguageCorrection.fit([(vectors, languages)], version=1)
    keys = correction.apply(vectors, ["und"] * len(vectors))[2]
    assert keys.tolist() == languages                                # every bare vector named by its language
    np.testing.assert_array_equal(correction.apply(vectors, ["und"] * len(vectors))[0],
                                  correction.apply(vectors, languages)[0])


def test_stored_correction_reads_back_identical_and_replaces_the_old_version(app):
    vectors, languages, _ = bilingual(np.random.default_rng(3), per_topic=6)
    first = stored_correction.LanguageCorrection.fit([(vectors, languages)], version=1).rounded()
    stored_correction.save(MODEL, first, len(vectors), 1.0)
    second = LanguageCorrection.fit([(vectors[::2], languages[::2])], version=2).rounded()
    stored_correction.save(MODEL, second, len(vectors) // 2, 0.3)
    loaded = stored_correction.load(MODEL)
    assert loaded.version == 2 and loaded.counts() == second.counts()
    np.testing.assert_array_equal(loaded.apply(vectors, languages)[0], second.apply(vectors, languages)[0])
    assert CorrectionHeader._get_collection().count_documents({"model": stored_correction.key(MODEL)}) == 3  # en, sq, *: v2
    assert stored_correction.header(MODEL)["movement"] == 0.3


# ----- lists ---------------------------------------------------------------------------------------------------
def insert(vectors, languages, field="language", model=MODEL):
    """Active jobs with completed embeddings; the language in the job's field or as detected when embedded."""
    ids = [ObjectId() for _ in vectors]
    docs = []
    for i, (_id, vector, lang) in enumerate(zip(ids, vectors, languages)):
        doc = {"_id": _id, "title": f"Job {i}", "status": "active", "createdAt": utcnow(), "updatedAt": utcnow(),
               "embedding": {"status": "completed", "model": model, "vector": vector_to_bson(vector),
                             "textHash": f"h{_id}", "dimensions": DIM, "recipe": RECIPE}}
        if field == "language":
            doc["language"] = lang
        else:
            doc["embedding"]["language"] = lang
        docs.append(doc)
    Job._get_collection().insert_many(docs)
    return ids


def brute_force(min_score: float) -> dict:
    """Every job's top N from the database, corrected by the stored correction, every pair compared."""
    docs = list(Job._get_collection().find({"status": "active", "embedding.status": "completed"}))
    from jobflow.embeddings.language import stored_language
    from jobflow.models.fields import vector_from_bson
    raw = np.vstack([vector_from_bson(d["embedding"]["vector"]) for d in docs])
    corrected = stored_correction.load(MODEL).apply(raw, [stored_language(d) for d in docs])[0].astype(np.float64)
    ids = [d["_id"] for d in docs]
    scores = corrected @ corrected.T
    out = {}
    for a in range(len(ids)):
        ranked = sorted(((float(scores[a, b]), ids[b]) for b in range(len(ids)) if b != a), key=lambda p: (-p[0], p[1]))
        out[ids[a]] = [j for s, j in ranked if s >= min_score][:TOP_N]
    return out


def stored() -> dict:
    return {d["_id"]: [s["jobId"] for s in d.get("similarJobs", [])] for d in Job._get_collection().find({}, {"similarJobs": 1})}


def assert_exact(expected: dict, actual: dict) -> None:
    assert actual.keys() >= expected.keys()
    for job_id, ids in expected.items():
        assert actual[job_id] == ids, f"list of {job_id}"


def small_lists(model=MODEL, **kw):
    return SimilarLists(DIM, TOP_N, 0.0, model, block_size=13, **kw)


def test_first_fit_is_stored_adopted_and_every_worker_computes_the_same_lists(app, caplog):
    vectors, languages, topics = bilingual(np.random.default_rng(4))
    ids = insert(vectors, languages, field="embedding.language")
    a, b = small_lists(), small_lists()
    a.load(), b.load()
    assert a.refit_due() and not a.correction.active
    with caplog.at_level(logging.INFO, logger="jobflow.similarity"):
        moved = a.refit()
    assert moved is not None and moved > REFIT_MOVEMENT
    assert "language correction version 1 fitted on 64 jobs (en 32, sq 32, * 64)" in caplog.text
    assert a.write_all() == 64
    head = stored_correction.header(MODEL)
    assert head["version"] == head["listsVersion"] == 1
    assert_exact(brute_force(0.0), stored())
    langs = dict(zip(ids, languages))
    crossing = np.mean([langs[o] != langs[j] for j, entries in stored().items() for o in entries[:1]])
    assert crossing >= 0.4                          # a job's best match is often the same topic in the other language
    b.sync()                                        # another worker adopts the same version from the database
    assert b.correction.version == 1 and b.entries == a.entries


def test_a_small_change_keeps_the_correction_a_large_one_recomputes_every_list(app, caplog):
    rng = np.random.default_rng(5)
    drawn, drawn_langs, _ = bilingual(rng, per_topic=7)
    held = np.arange(len(drawn)) % 7 == 6                            # one job per topic and language held back
    vectors, languages = drawn[~held], [lang for lang, h in zip(drawn_langs, held) if not h]
    insert(vectors, languages)
    lists = small_lists()
    lists.load()
    assert lists.refit() is not None
    lists.write_all()
    # A few more jobs of the same kind: fitted again, moved by less than REFIT_MOVEMENT: version 1 stays.
    more, more_langs = drawn[held][:6], [lang for lang, h in zip(drawn_langs, held) if h][:6]
    new_ids = insert(more, more_langs)
    lists.sync()
    with caplog.at_level(logging.INFO, logger="jobflow.similarity"):
        assert lists.refit(force=True) is None
    assert "kept version 1" in caplog.text and stored_correction.header(MODEL)["version"] == 1
    assert_exact(brute_force(0.0), stored())        # the new jobs entered every list they belong in
    # Many jobs of a third language: a new version, every list recomputed under the lease, with progress.
    third = rng.standard_normal((40, DIM)) + rng.standard_normal(DIM) * 3
    insert(third / np.linalg.norm(third, axis=1, keepdims=True), ["de"] * 40)
    lists.sync()
    assert lists.refit_due()
    worker = Worker({**app.config, "SIMILARITY_MIN_SCORE": 0.0, "SIMILARITY_TOP_N": TOP_N},
                    provider=type("P", (), {"dimensions": DIM, "model": MODEL, "max_concurrent": 1,
                                            "max_batch_inputs": 8, "name": "test",
                                            "describe": lambda self: "test"})(), worker_id="w-refit")
    worker.lists = lists
    recompute.is_due(app.config)                    # starts the interval's clock: only the refit can run
    with caplog.at_level(logging.INFO, logger="jobflow.worker"):
        written = worker.recompute_if_due()
    assert written == len(vectors) + 6 + 40
    assert "(language correction changed)" in caplog.text and "100%" in caplog.text
    head = stored_correction.header(MODEL)
    assert head["version"] == head["listsVersion"] == 2 and head["counts"]["de"] == 40
    assert recompute.state()["lastReason"] == "language correction changed" and "progress" not in recompute.state()
    assert_exact(brute_force(0.0), stored())
    assert new_ids[0] in lists.index


def test_a_changed_language_field_moves_the_job_to_its_new_language(app):
    vectors, languages, _ = bilingual(np.random.default_rng(6))
    ids = insert(vectors, languages)
    lists = small_lists()
    lists.load()
    lists.refit()
    lists.write_all()
    Job._get_collection().update_one({"_id": ids[0]}, {"$set": {"language": "Shqip", "updatedAt": utcnow()}})
    lists.sync()
    assert lists.languages[ids[0]] == "sq"
    assert_exact(brute_force(0.0), stored())


def test_switching_the_setting_off_asks_for_a_recompute_with_raw_vectors(app):
    vectors, languages, _ = bilingual(np.random.default_rng(7))
    insert(vectors, languages)
    on = small_lists()
    on.load()
    on.refit()
    on.write_all()
    off = small_lists(language_balance=False)
    off.load()
    assert not off.correction.active and off.stored_lists_stale()
    off.recompute_all()
    assert not stored_correction.header(MODEL).get("listsVersion") and not off.stored_lists_stale()
    off.sync()                                      # a stored version is not adopted with the setting off
    assert not off.correction.active


# ----- the worker with the OpenAI provider ---------------------------------------------------------------------
@pytest.mark.parametrize("balance", [True, False])
def test_openai_worker_lists_cross_languages_only_when_balanced(make_app, server, balance):
    app = make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=server.base_url,
                   SIMILARITY_LANGUAGE_BALANCE=balance, SIMILARITY_TOP_N=3)
    with app.app_context():
        now = utcnow()
        postings = bilingual_postings()
        ids = Job._get_collection().insert_many([{"status": "active", "createdAt": now, "updatedAt": now, **j}
                                                 for j in postings]).inserted_ids
        queue.enqueue_many(ids, priority=queue.PRIORITY_LIVE)
        worker = Worker.from_app(app)
        worker.start(scheduler=False)
        while worker.process_queue():               # the end of the drain fits the correction at once
            pass
        docs = {d["_id"]: d for d in Job._get_collection().find({})}
        assert {d["embedding"]["language"] for d in docs.values()} == {"en", "sq"}
        from jobflow.embeddings import language
        assert language._identifier is None               # the detector is let go when the drain ends
        role = {i: n // 2 % len(BILINGUAL_ROLES) for n, i in enumerate(ids)}
        lang = {i: docs[i]["embedding"]["language"] for i in ids}
        listed = {i: [s["jobId"] for s in docs[i]["similarJobs"]] for i in ids}
        # Each role has two near-copies in its own language and three postings in the other.
        crossing = np.mean([any(lang[o] != lang[i] and role[o] == role[i] for o in listed[i]) for i in ids])
        same_role = np.mean([role[o] == role[i] for i in ids for o in listed[i]])
        head = stored_correction.header(worker.provider.model)
        if balance:
            assert head["version"] == head["listsVersion"] == 1 and set(head["counts"]) == {"en", "sq", "*"}
            assert crossing == 1.0 and same_role == 1.0     # every list holds the role in the other language
        else:
            assert head == {} and crossing == 0.0             # raw: language first, the other one never listed


def test_a_drain_that_ends_in_a_new_fit_completes_its_items_first_then_writes_every_list_under_it(make_app, server):
    """The drain's last flush writes the lists waiting for it and completes the items (the drain is over); the
    correction is fitted after that, and the adopted fit writes every list again."""
    app = make_app(EMBEDDING_PROVIDER="openai", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=server.base_url,
                   SIMILARITY_TOP_N=3, SIMILARITY_FLUSH_INTERVAL=600000)       # no flush before the drain's end
    with app.app_context():
        now = utcnow()
        ids = Job._get_collection().insert_many([{"status": "active", "createdAt": now, "updatedAt": now, **j}
                                                 for j in bilingual_postings()]).inserted_ids
        queue.enqueue_many(ids, priority=queue.PRIORITY_LIVE)
        worker = Worker.from_app(app)
        worker.start(scheduler=False)
        worker.claim_size = 12                      # four batches, every list waiting for the drain's end
        written, completed_after = [], []
        write, complete = worker.lists.write, queue.complete

        def counted_write(job_ids):
            job_ids = list(job_ids)
            written.extend(job_ids)
            return write(job_ids)

        def noted_complete(items, *args, **kwargs):
            completed_after.append(len(written))
            return complete(items, *args, **kwargs)
        worker.lists.write = counted_write
        queue.complete = noted_complete
        try:
            while worker.process_queue():
                pass
        finally:
            queue.complete = complete
        head = stored_correction.header(worker.provider.model)
        assert head["version"] == head["listsVersion"] == 1
        assert len(completed_after) == 1 and 0 < completed_after[0] < len(written)
        flushed, refitted = written[:completed_after[0]], written[completed_after[0]:]
        assert len(flushed) == len(set(flushed))                        # the last flush: each waiting list once
        assert sorted(refitted) == sorted(ids)                          # then every list, once, under the fit
        assert {d["status"] for d in QueueItem._get_collection().find({})} == {"completed"}
        stored_lists = {d["_id"]: d.get("similarJobs") for d in Job._get_collection().find({}, {"similarJobs": 1})}
        assert all(len(entries) == 3 for entries in stored_lists.values())
        assert not worker.lists.dirty and not worker.unflushed


# ----- what callers and admins see -------------------------------------------------------------------------------
def test_similar_endpoint_names_languages_and_filters_by_one(app, client, admin):
    vectors, languages, _ = bilingual(np.random.default_rng(8))
    model = provider_model(app.config)           # the settings page speaks of the model in use
    ids = insert(vectors, languages, field="embedding.language", model=model)
    Job._get_collection().update_one({"_id": ids[1]}, {"$set": {"language": "English"}})   # the field wins
    lists = small_lists(model)
    lists.load()
    lists.refit()
    lists.write_all()
    job = ids[0]
    body = client.get(f"/api/jobs/{job}/similar").get_json()
    assert body["cached"] and body["count"] == TOP_N
    assert {e["language"] for e in body["similarJobs"]} == {"en", "sq"}
    only = client.get(f"/api/jobs/{job}/similar?language=sq").get_json()
    expected = [e["job"]["id"] for e in body["similarJobs"] if e["language"] == "sq"]
    assert [e["job"]["id"] for e in only["similarJobs"]] == expected and only["count"] == len(expected)
    assert client.get(f"/api/jobs/{job}/similar?language=SQ-al").get_json() == only
    assert client.get(f"/api/jobs/{job}/similar?language=de").get_json()["count"] == 0
    bad = client.get(f"/api/jobs/{job}/similar?language=<b>")
    assert bad.status_code == 400
    assert bad.get_json()["error"]["fields"] == {"language": "expected a language code such as en or sq"}
    # The admin's job page shows each neighbour's language, and whether it was detected.
    page = admin.get(f"/admin/embeddings/jobs/{job}").get_data(as_text=True)
    assert page.count("<code>sq</code> <span class=\"muted\">detected</span>") >= 1
    assert "<th>Language</th>" in page
    settings_page = admin.get("/admin/embeddings/settings").get_data(as_text=True)
    assert "on; version 1 fitted on 64 jobs (en 32, sq 32)" in settings_page
    assert "every list computed with it" in settings_page


def test_lists_left_half_written_by_a_stopped_worker_are_recomputed_by_the_next_check(app, caplog):
    vectors, languages, _ = bilingual(np.random.default_rng(9))
    insert(vectors, languages)
    stopped = small_lists()
    stopped.load()
    stopped.refit()                                 # version 1 stored; the worker stops before writing a list
    assert not stored_correction.header(MODEL).get("listsVersion")
    worker = Worker({**app.config, "SIMILARITY_MIN_SCORE": 0.0, "SIMILARITY_TOP_N": TOP_N},
                    provider=type("P", (), {"dimensions": DIM, "model": MODEL, "max_concurrent": 1,
                                            "max_batch_inputs": 8, "name": "test",
                                            "describe": lambda self: "test"})(), worker_id="w-next")
    worker.lists = small_lists()
    worker.lists.load()
    assert worker.lists.correction.version == 1 and worker.lists.stored_lists_stale()
    recompute.is_due(app.config)                    # the interval's clock: only the request makes it due
    assert worker.recompute_if_due() == len(vectors)
    assert not worker.lists.stored_lists_stale()
    assert_exact(brute_force(0.0), stored())


def test_bare_titles_count_towards_the_language_they_read_as_and_lists_stay_exact(app):
    vectors, languages, _ = bilingual(np.random.default_rng(11), per_topic=6)
    told = [lang if n % 2 else "und" for n, lang in enumerate(languages)]     # half the jobs name no language
    insert(vectors, told, field="embedding.language")
    lists = small_lists()
    lists.load()
    lists.refit()
    assert stored_correction.header(MODEL)["counts"] == {"en": 24, "sq": 24, "*": 96}
    truth = {d["_id"]: languages[n] for n, d in enumerate(Job._get_collection().find({}, {"_id": 1}).sort("_id", 1))}
    assert lists.keys == truth                      # each bare job is corrected as the language it reads as
    counted = [lang for _, _, langs in lists.raw_blocks() for lang in langs]
    assert counted.count("en") == counted.count("sq") == 48         # and the next fit counts it there
    lists.refit(force=True)
    lists.write_all()
    assert_exact(brute_force(0.0), stored())
