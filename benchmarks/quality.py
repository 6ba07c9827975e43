"""Similarity quality with the local model, on data written by no one here.

    python -m benchmarks.quality [--skip-melo] [--skip-postings] [--melo-queries N]

1. Demo postings (bundled): precision@10 of category among each job's ten
   nearest, the share of neighbours in the other language, and score
   percentiles for pairs of the same and of different categories (what the
   default SIMILARITY_MIN_SCORE of the local provider was chosen from).
2. ../shared/data/skillspan_postings: imported and processed by the real
   worker into a throwaway embedded database; how many postings got a list,
   and three lists to read.
3. ../shared/data/melo_usa_titles: MAP@10 of O*NET titles against ESCO
   labels (human links), embedding titles exactly as jobs are embedded.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
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


def demo_quality(provider) -> dict:
    """Precision@10 of category and score percentiles on the bundled demo postings."""
    from jobflow.importer import DEMO_DIR
    rows = [json.loads(line) for path in sorted(DEMO_DIR.glob("*.jsonl")) for line in path.open()]
    langs = np.array(["sq" if "_sq" in path.name else "en" for path in sorted(DEMO_DIR.glob("*.jsonl"))
                      for _ in path.open()])
    cats = np.array([r["category"] for r in rows])
    vectors = _embed_jobs(provider, rows)
    scores = vectors @ vectors.T
    same = cats[:, None] == cats[None, :]
    np.fill_diagonal(same, False)
    other = cats[:, None] != cats[None, :]
    np.fill_diagonal(scores, -1)
    top = np.argsort(-scores, axis=1)[:, :10]
    return {
        "jobs": len(rows),
        "precision@10 (category)": round(float(np.mean(cats[top] == cats[:, None])), 3),
        "neighbours in the other language": round(float(np.mean(langs[top] != langs[:, None])), 3),
        "same-category score p10/p50/p90": [round(float(x), 3) for x in np.percentile(scores[same], [10, 50, 90])],
        "other-category score p10/p50/p90": [round(float(x), 3) for x in np.percentile(scores[other], [10, 50, 90])],
        "10th-best score p10/p50/p90": [round(float(x), 3) for x in np.percentile(np.sort(scores, axis=1)[:, -10],
                                                                                   [10, 50, 90])],
    }


def postings_lists(settings_overrides: dict | None = None) -> dict:
    """Import the SkillSpan postings, run the real worker with the local model, read the lists."""
    from jobflow import create_app
    from jobflow.db import EmbeddedServer
    from jobflow.importer import import_jobs
    from jobflow.models import Job
    from jobflow.worker import Worker
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
    """MAP@10 of O*NET titles (queries) against ESCO labels (corpus), as jobs are embedded."""
    folder = SHARED / "melo_usa_titles"
    queries, corpus = {}, {}
    with open(folder / "items.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            (queries if row["role"] == "query" else corpus)[row["id"]] = row["title"]
    relevant = defaultdict(set)
    with open(folder / "qrels.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            relevant[row["query_id"]].add(row["doc_id"])
    query_ids = [q for q in queries if relevant[q]][:max_queries]
    corpus_ids = list(corpus)
    started = time.monotonic()
    doc_vectors = _embed_jobs(provider, [{"title": corpus[c]} for c in corpus_ids], batch=64)
    query_vectors = _embed_jobs(provider, [{"title": queries[q]} for q in query_ids], batch=64)
    seconds = time.monotonic() - started
    scores = query_vectors @ doc_vectors.T
    top = np.argsort(-scores, axis=1)[:, :10]
    aps = []
    for row, q in enumerate(query_ids):
        hits, total = 0, 0.0
        for rank, doc in enumerate(top[row], start=1):
            if corpus_ids[doc] in relevant[q]:
                hits += 1
                total += hits / rank
        aps.append(total / min(len(relevant[q]), 10))
    return {"queries": len(query_ids), "corpus": len(corpus_ids), "MAP@10": round(float(np.mean(aps)), 4),
            "embedding seconds": round(seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-melo", action="store_true")
    parser.add_argument("--skip-postings", action="store_true")
    parser.add_argument("--melo-queries", type=int, default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from jobflow.embeddings.local import LocalProvider
    provider = LocalProvider()
    print(f"provider local ({provider.model}), default minimum score {provider.default_min_score}\n")
    print("## Demo postings")
    for key, value in demo_quality(provider).items():
        print(f"| {key} | {value} |")
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
