"""Similarity quality with the local model, on data written by no one here.

    python -m benchmarks.quality [--skip-melo] [--skip-postings] [--skip-mixed] [--melo-queries N]

Every figure is given raw and language-balanced (SIMILARITY_LANGUAGE_BALANCE),
computed with the product's own functions: the text recipe and provider, the
language of each job (field or detection), the correction fitted on every job
as a worker fits it, and the similarity index.

1. Demo postings (bundled): precision@10 of category among each job's ten
   nearest, the share of neighbours in the other language, and score
   percentiles for pairs of the same and of different categories (what the
   default SIMILARITY_MIN_SCORE of the local provider was chosen from).
2. ../shared/data/melo_deu_mixed: MAP@10 and the English share of the top 10
   of German occupation titles against German and English ESCO labels, on a
   fixed sample (300 queries, seed 13; the labels of their occupations and as
   many again from other occupations: 9,740 labels).
3. ../shared/data/skillspan_postings: imported and processed by the real
   worker into a throwaway embedded database; how many postings got a list,
   and three lists to read.
4. ../shared/data/melo_usa_titles: MAP@10 of O*NET titles against ESCO
   labels (human links), embedding titles exactly as jobs are embedded.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def _embed_jobs(provider, jobs: list[dict], batch: int = 16) -> np.ndarray:
    from jobflow.embeddings.text import TEXTS_PER_JOB, combine, embedded_texts
    out = []
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        texts = [provider.prepare(t) for job in chunk for t in embedded_texts(job)]
        vectors = provider.embed(texts).vectors
        out += [combine(vectors[i * TEXTS_PER_JOB:(i + 1) * TEXTS_PER_JOB]) for i in range(len(chunk))]
    return np.vstack(out)


def balanced(vectors: np.ndarray, languages: list[str]) -> np.ndarray:
    """Unit vectors corrected as the worker corrects them once every job is embedded: the first fit, then the
    refit that counts each undetermined job where it reads (kept only past the same movement threshold)."""
    from jobflow.similarity.balance import REFIT_MOVEMENT
    from jobflow.similarity.correction import LanguageCorrection, counted_languages
    correction, _, _ = LanguageCorrection().refit([(vectors, languages)], 1, REFIT_MOVEMENT)
    keys = correction.apply(vectors, languages)[2]
    refitted, _, adopt = correction.refit([(vectors, counted_languages(languages, keys))], 2, REFIT_MOVEMENT)
    return (refitted if adopt else correction).apply(vectors, languages)[0]


def top_ids(corpus_ids: list, corpus: np.ndarray, queries: np.ndarray, k: int = 10, exclude=None) -> list[list]:
    """Each query's k nearest corpus ids by the product's similarity index (``exclude[i]``: an id left out)."""
    from jobflow.similarity.index import VectorIndex
    index = VectorIndex(corpus.shape[1], capacity=len(corpus))
    index.upsert(corpus_ids, corpus)
    return [[i for i, _ in index.top_k(q, k, exclude=() if exclude is None else (exclude[n],))]
            for n, q in enumerate(queries)]


def demo_quality(provider) -> dict:
    """Precision@10 of category, other-language share and score percentiles on the bundled demo postings."""
    from jobflow.embeddings.language import job_language
    from jobflow.ops.importer import DEMO_DIR
    rows = [json.loads(line) for path in sorted(DEMO_DIR.glob("*.jsonl")) for line in path.open()]
    langs = np.array(["sq" if "_sq" in path.name else "en" for path in sorted(DEMO_DIR.glob("*.jsonl"))
                      for _ in path.open()])
    detected = [job_language(r)[0] for r in rows]
    cats = np.array([r["category"] for r in rows])
    raw = _embed_jobs(provider, rows)
    out = {"jobs": len(rows), "language detected right": f"{sum(d == g for d, g in zip(detected, langs))} of {len(rows)}"}
    for name, vectors in (("raw", raw), ("balanced", balanced(raw, detected))):
        ids = list(range(len(rows)))
        top = np.array(top_ids(ids, vectors, vectors, exclude=ids))
        scores = vectors @ vectors.T
        same = cats[:, None] == cats[None, :]
        np.fill_diagonal(same, False)
        other = cats[:, None] != cats[None, :]
        np.fill_diagonal(scores, -1)
        out.update({
            f"{name}: precision@10 (category)": round(float(np.mean(cats[top] == cats[:, None])), 3),
            f"{name}: neighbours in the other language": round(float(np.mean(langs[top] != langs[:, None])), 3),
            f"{name}: same-category score p10/p50/p90": _pct(scores[same]),
            f"{name}: other-category score p10/p50/p90": _pct(scores[other]),
            f"{name}: 10th-best score p10/p50/p90": _pct(np.sort(scores, axis=1)[:, -10]),
        })
    return out


def _pct(values) -> list[float]:
    return [round(float(x), 3) for x in np.percentile(values, [10, 50, 90])]


def _read_titles(folder: Path):
    items = {}
    with open(folder / "items.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            items[row["id"]] = row
    relevant = defaultdict(set)
    with open(folder / "qrels.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            relevant[row["query_id"]].add(row["doc_id"])
    return items, relevant


def _map_at_10(tops: list[list], query_ids: list, relevant: dict) -> float:
    aps = []
    for q, top in zip(query_ids, tops):
        hits, total = 0, 0.0
        for rank, doc in enumerate(top, start=1):
            if doc in relevant[q]:
                hits += 1
                total += hits / rank
        aps.append(total / min(len(relevant[q]), 10))
    return round(float(np.mean(aps)), 4)


def mixed_languages(provider, queries: int = 300, seed: int = 13) -> dict:
    """MAP@10 and English share of the top 10 on melo_deu_mixed (German queries, German and English labels)."""
    from jobflow.embeddings.language import job_language
    items, relevant = _read_titles(SHARED / "melo_deu_mixed")
    rng = random.Random(seed)
    query_ids = sorted(rng.sample(sorted(relevant), queries))
    occupation = lambda doc_id: doc_id.split("_")[0]       # c:C002220_en_003 -> c:C002220
    labels = defaultdict(list)
    for item_id, row in items.items():
        if row["role"] == "corpus":
            labels[occupation(item_id)].append(item_id)
    theirs = sorted({occupation(d) for q in query_ids for d in relevant[q]})
    others = sorted(set(labels) - set(theirs))
    rng.shuffle(others)
    corpus_ids = [d for o in theirs for d in labels[o]]
    wanted = 2 * len(corpus_ids)
    for o in others:
        if len(corpus_ids) >= wanted:
            break
        corpus_ids += labels[o]
    jobs = [{"title": items[i]["title"], "language": items[i]["language"]} for i in query_ids + corpus_ids]
    started = time.monotonic()
    raw = _embed_jobs(provider, jobs, batch=64)
    seconds = time.monotonic() - started
    out = {"queries": len(query_ids), "labels": len(corpus_ids),
           "English labels": sum(items[c]["language"] == "en" for c in corpus_ids), "embedding seconds": round(seconds, 1)}
    given = [job_language(j)[0] for j in jobs]
    detected = [job_language({"title": j["title"]})[0] for j in jobs]
    out["titles whose detected language is right"] = \
        f"{sum(d == j['language'] for d, j in zip(detected, jobs))} of {len(jobs)} ({sum(d == 'und' for d in detected)} und)"
    for name, vectors in (("raw", raw), ("balanced, language field", balanced(raw, given)),
                          ("balanced, language detected from the title", balanced(raw, detected))):
        n = len(query_ids)
        tops = top_ids(corpus_ids, vectors[n:], vectors[:n])
        out[f"{name}: MAP@10"] = _map_at_10(tops, query_ids, relevant)
        out[f"{name}: English share of the top 10"] = round(float(np.mean(
            [items[d]["language"] == "en" for top in tops for d in top])), 3)
    return out


def postings_lists(settings_overrides: dict | None = None) -> dict:
    """Import the SkillSpan postings, run the real worker with the local model, read the lists."""
    from jobflow import create_app
    from jobflow.db import EmbeddedServer
    from jobflow.models import Job
    from jobflow.ops.importer import import_jobs
    from jobflow.worker.loop import Worker
    path = SHARED / "skillspan_postings" / "postings.csv"
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(Path(tmp) / "secantus")
        uri = server.ensure().rsplit("/", 1)[0] + "/quality"
        try:
            app = create_app({"TESTING": True, "MONGODB_URI": uri, "INSTANCE_PATH": tmp, "EMBEDDING_PROVIDER": "local",
                              "OPENAI_API_KEY": "", "DEMO_DATA": False, "DEBUG_WORKER": False, "DEBUG_QUEUE": False,
                              "DEBUG_EMBEDDINGS": False, **(settings_overrides or {})})
            with app.app_context():
                report = import_jobs(path)
                worker = Worker.from_app(app)
                worker.start(scheduler=False)
                started = time.monotonic()
                while worker.process_queue():
                    pass
                seconds = time.monotonic() - started
                jobs = {j.id: j for j in Job.objects.only("title", "similarJobs", "status", "embedding.status")}
                with_list = sum(1 for j in jobs.values() if j.similarJobs)
                sizes = [len(j.similarJobs) for j in jobs.values()]
                examples = []
                for needle in ("Frontend", "Nurse", "Data"):
                    job = next((j for j in jobs.values() if needle.lower() in (j.title or "").lower()
                                and j.similarJobs), None)
                    if job:
                        examples.append((job.title, [(jobs[s.jobId].title, round(s.score, 3))
                                                     for s in job.similarJobs[:5]]))
                return {"imported": report.imported, "embedded": sum(1 for j in jobs.values()
                                                                     if j.embedding and j.embedding.status == "completed"),
                        "with a list": with_list, "mean list length": round(float(np.mean(sizes)), 2),
                        "worker seconds": round(seconds, 1), "examples": examples}
        finally:
            server.stop()


def melo_map(provider, max_queries: int | None = None) -> dict:
    """MAP@10 of O*NET titles (queries) against ESCO labels (corpus), as jobs are embedded; raw and balanced."""
    from jobflow.embeddings.language import job_language
    items, relevant = _read_titles(SHARED / "melo_usa_titles")
    query_ids = [q for q, row in items.items() if row["role"] == "query" and relevant[q]][:max_queries]
    corpus_ids = [c for c, row in items.items() if row["role"] == "corpus"]
    started = time.monotonic()
    jobs = [{"title": items[i]["title"]} for i in query_ids + corpus_ids]
    raw = _embed_jobs(provider, jobs, batch=64)
    seconds = time.monotonic() - started
    detected = [job_language(j)[0] for j in jobs]
    out = {"queries": len(query_ids), "corpus": len(corpus_ids), "embedding seconds": round(seconds, 1)}
    for name, vectors in (("raw", raw), ("balanced", balanced(raw, detected))):
        n = len(query_ids)
        out[f"{name}: MAP@10"] = _map_at_10(top_ids(corpus_ids, vectors[n:], vectors[:n]), query_ids, relevant)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-melo", action="store_true")
    parser.add_argument("--skip-postings", action="store_true")
    parser.add_argument("--skip-mixed", action="store_true")
    parser.add_argument("--melo-queries", type=int, default=None)
    args = parser.parse_args(argv)
    from jobflow.embeddings.local import LocalProvider
    provider = LocalProvider()
    print(f"provider local ({provider.model}), default minimum score {provider.balanced_min_score} (language-balanced), "
          f"{provider.default_min_score} (raw)\n")
    print("## Demo postings")
    for key, value in demo_quality(provider).items():
        print(f"| {key} | {value} |")
    if not args.skip_mixed:
        if (SHARED / "melo_deu_mixed").exists():
            print("\n## MELO German titles against German and English labels")
            for key, value in mixed_languages(provider).items():
                print(f"| {key} | {value} |")
        else:
            print(f"\n{SHARED / 'melo_deu_mixed'} is absent: skipped")
    if not args.skip_postings:
        if (SHARED / "skillspan_postings").exists():
            print("\n## SkillSpan postings through the worker")
            result = postings_lists()
            for key, value in result.items():
                if key != "examples":
                    print(f"| {key} | {value} |")
            for title, entries in result["examples"]:
                print(f"\n{title[:80]}")
                for other, score in entries:
                    print(f"  {score:.3f}  {other[:80]}")
        else:
            print(f"\n{SHARED / 'skillspan_postings'} is absent: skipped")
    if not args.skip_melo:
        if (SHARED / "melo_usa_titles").exists():
            print("\n## MELO titles (O*NET -> ESCO)")
            for key, value in melo_map(provider, args.melo_queries).items():
                print(f"| {key} | {value} |")
        else:
            print(f"\n{SHARED / 'melo_usa_titles'} is absent: skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
