"""Similarity quality with the local model, on data written by no one here, never scored by a label the
embedded text contains.

    python -m benchmarks.quality [--full] [--skip-demo] [--skip-skillspan] [--skip-mixed] [--skip-melo] [--worker]

Every set is scored two ways, side by side in one table:

- **raw model**: "title. description" (markup stripped) with e5's ``query:`` prefix, raw cosine, no correction
  (the baseline of issue 22);
- **product**: the product's own functions end to end: the text recipe (``embedded_texts``, ``combine``), the
  provider (``prepare``, ``embed``), the language of each job (field or detection), the correction fitted on
  every job as a worker fits it, and the similarity index. The product before its correction is shown too.

1. Demo postings (bundled, English and Albanian), embedded WITHOUT their category (the label they are scored
   by): precision@10 of category among each job's ten nearest, the share of neighbours in the other language,
   and score percentiles (same / different category pairs, 10th-best neighbour) that the local provider's
   minimum scores are chosen from.
2. ../shared/data/skillspan_postings: the 54 postings with a StackOverflow role (all tech, English), each with
   the "Role:" line taken out of its description (it states the label): precision@10 of role among the other
   53 (a neighbour counts when it shares one of the posting's roles; "Backend Developer DevOps" is two roles).
   The corpus and the correction's fit are those 54 only: the other 209 postings have no role to score, and
   embedding them would triple the run.
3. ../shared/data/melo_deu_mixed: MAP@10 and the English share of the top 10 of German occupation titles
   against German and English ESCO labels (queries sampled with seed 13; the labels of their occupations and
   as many again from other occupations). Default 100 queries (3,400 labels); --full: 300 (9,740).
4. ../shared/data/melo_usa_titles: MAP@10 of O*NET titles against ESCO labels (human links). Default 150
   queries (seed 13) against their relevant labels plus random others, 2,500 labels in all (scores run higher
   than on the whole corpus); --full: all 633 queries against all 33,809 labels (about half an hour).

Titles are embedded exactly as a job with only a title would be. --worker also imports the 263 SkillSpan
postings and runs the real worker on them (lists a person would read).
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import re
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


def raw_model(provider, jobs: list[dict], batch: int = 16) -> np.ndarray:
    """The raw model of issue 22: "title. description" with e5's ``query:`` prefix, through the provider's engine."""
    from jobflow.embeddings.text import strip_markup
    engine = provider._get_engine()
    texts = []
    for job in jobs:
        title, description = strip_markup(job.get("title") or ""), strip_markup(job.get("description") or "")
        texts.append(provider.prepare(f"{title}. {description}" if description else title))
    return np.vstack([engine.query(texts[i:i + batch]) for i in range(0, len(texts), batch)])


def ways(provider, jobs: list[dict], languages: list[str], batch: int = 16) -> dict[str, np.ndarray]:
    """Unit vectors of ``jobs`` three ways: the raw model, the product's recipe before and after its correction
    (``languages``: each job's language as the worker takes it)."""
    product = _embed_jobs(provider, jobs, batch)
    return {"raw model": raw_model(provider, jobs, batch), "product, uncorrected": product,
            "product": balanced(product, languages)}


def demo_postings():
    """(jobs without their category, categories, file languages) of the bundled demo postings."""
    from jobflow.ops.importer import DEMO_DIR
    jobs, cats, langs = [], [], []
    for path in sorted(DEMO_DIR.glob("*.jsonl")):
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            cats.append(row.pop("category"))
            jobs.append(row)
            langs.append("sq" if "_sq" in path.name else "en")
    return jobs, np.array(cats), np.array(langs)


def demo_quality(provider) -> dict:
    """Precision@10 of category (the category withheld from the text), other-language share, score percentiles."""
    from jobflow.embeddings.language import job_language
    jobs, cats, langs = demo_postings()
    detected = [job_language(j)[0] for j in jobs]
    out = {"jobs": len(jobs),
           "language detected right": f"{sum(d == g for d, g in zip(detected, langs))} of {len(jobs)}"}
    ids = list(range(len(jobs)))
    for name, vectors in ways(provider, jobs, detected).items():
        top = np.array(top_ids(ids, vectors, vectors, exclude=ids))
        scores = vectors @ vectors.T
        same = cats[:, None] == cats[None, :]
        np.fill_diagonal(same, False)
        other = cats[:, None] != cats[None, :]
        np.fill_diagonal(scores, -1)
        out[name] = {
            "demo postings, no category in the text: P@10 of category": round(float(np.mean(cats[top] == cats[:, None])), 3),
            "demo postings: neighbours in the other language": round(float(np.mean(langs[top] != langs[:, None])), 3),
            "demo: same-category score p10/p50/p90": _pct(scores[same]),
            "demo: other-category score p10/p50/p90": _pct(scores[other]),
            "demo: 10th-best score p10/p50/p90": _pct(np.sort(scores, axis=1)[:, -10]),
            "demo: jobs whose 10th-best score is at least the minimum score": None,
            "_tenth": np.sort(scores, axis=1)[:, -10], "_other": scores[other],
        }
    return out


SKILLSPAN_ROLES = ("QA/Test Developer", "Backend Developer", "Full Stack Developer", "Frontend Developer", "DevOps",
                   "System Administrator", "Mobile Developer", "Database Administrator", "Designer",
                   "Embedded Developer", "Data Scientist", "Graphics/Game Developer")
ROLE_LINE = re.compile(r"^Role:\n[^\n]*\n", re.M)


def skillspan_roles() -> tuple[list[dict], list[set]]:
    """The role-labelled SkillSpan postings without their "Role:" line, and each one's set of roles."""
    with open(SHARED / "skillspan_postings" / "postings.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["category"].strip()]
    jobs, roles = [], []
    for row in rows:
        rest, found = row["category"], set()
        for role in sorted(SKILLSPAN_ROLES, key=len, reverse=True):
            if role in rest:
                found.add(role)
                rest = rest.replace(role, "")
        if rest.strip():
            raise ValueError(f"unknown SkillSpan role in {row['category']!r}")
        jobs.append({"title": row["title"], "description": ROLE_LINE.sub("", row["description"]), "language": "en"})
        roles.append(found)
    return jobs, roles


def skillspan_quality(provider) -> dict:
    """Precision@10 of role among the 54 role-labelled SkillSpan postings."""
    jobs, roles = skillspan_roles()
    ids = list(range(len(jobs)))
    out = {"postings": len(jobs)}
    for name, vectors in ways(provider, jobs, ["en"] * len(jobs), batch=8).items():
        top = top_ids(ids, vectors, vectors, exclude=ids)
        out[name] = {"SkillSpan, no role in the text: P@10 of role": round(float(np.mean(
            [[bool(roles[i] & roles[j]) for j in row] for i, row in enumerate(top)])), 3)}
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


def mixed_languages(provider, queries: int = 100, seed: int = 13) -> dict:
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
    out = {"queries": len(query_ids), "labels": len(corpus_ids),
           "English labels": sum(items[c]["language"] == "en" for c in corpus_ids)}
    n = len(query_ids)
    for name, vectors in ways(provider, jobs, [job_language(j)[0] for j in jobs], batch=64).items():
        tops = top_ids(corpus_ids, vectors[n:], vectors[:n])
        out[name] = {"melo_deu_mixed: MAP@10": _map_at_10(tops, query_ids, relevant),
                     "melo_deu_mixed: English share of the top 10": round(float(np.mean(
                         [items[d]["language"] == "en" for top in tops for d in top])), 3)}
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
        server.ensure()
        uri = server.uri_for("quality")
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


def melo_map(provider, queries: int | None = 150, corpus: int | None = 2500, seed: int = 13) -> dict:
    """MAP@10 of O*NET titles (queries) against ESCO labels, as jobs are embedded. ``queries``/``corpus`` None:
    all of them; else a sample (seed 13) against their relevant labels plus random others up to ``corpus``."""
    from jobflow.embeddings.language import job_language
    items, relevant = _read_titles(SHARED / "melo_usa_titles")
    query_ids = [q for q, row in items.items() if row["role"] == "query" and relevant[q]]
    corpus_ids = [c for c, row in items.items() if row["role"] == "corpus"]
    rng = random.Random(seed)
    if queries is not None:
        query_ids = sorted(rng.sample(query_ids, queries))
    if corpus is not None:
        theirs = sorted({d for q in query_ids for d in relevant[q]})
        rest = sorted(set(corpus_ids) - set(theirs))
        corpus_ids = theirs + rng.sample(rest, max(0, corpus - len(theirs)))
    jobs = [{"title": items[i]["title"]} for i in query_ids + corpus_ids]
    out = {"queries": len(query_ids), "corpus": len(corpus_ids)}
    n = len(query_ids)
    for name, vectors in ways(provider, jobs, [job_language(j)[0] for j in jobs], batch=64).items():
        out[name] = {"melo_usa_titles: MAP@10": _map_at_10(top_ids(corpus_ids, vectors[n:], vectors[:n]),
                                                           query_ids, relevant)}
    return out


WAYS = ("raw model", "product, uncorrected", "product")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="melo_deu_mixed with 300 queries, melo_usa_titles whole (about 40 minutes)")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-skillspan", action="store_true")
    parser.add_argument("--skip-mixed", action="store_true")
    parser.add_argument("--skip-melo", action="store_true")
    parser.add_argument("--worker", action="store_true", help="also run the real worker on the SkillSpan postings")
    args = parser.parse_args(argv)
    from jobflow.embeddings.local import LocalProvider
    from jobflow.embeddings.text import RECIPE
    provider = LocalProvider()
    balanced_min, raw_min = provider.balanced_min_score, provider.default_min_score
    print(f"provider local ({provider.model}), recipe {RECIPE}, minimum score {balanced_min} (language-balanced), "
          f"{raw_min} (raw)\n")
    started = time.monotonic()
    results, notes = [], []
    if not args.skip_demo:
        demo = demo_quality(provider)
        for name in WAYS:
            minimum = balanced_min if name == "product" else raw_min
            tenth, other = demo[name].pop("_tenth"), demo[name].pop("_other")
            demo[name]["demo: jobs whose 10th-best score is at least the minimum score"] = \
                f"{float(np.mean(tenth >= minimum)):.2f} (minimum {minimum})"
            demo[name]["demo: other-category pairs at or above the minimum score"] = \
                f"{float(np.mean(other >= minimum)):.2f}"
        results.append(demo)
        notes.append(f"demo postings: {demo['jobs']} jobs, language detected right for {demo['language detected right']}")
    for flag, folder, run, label in (
            (args.skip_skillspan, "skillspan_postings", lambda: skillspan_quality(provider), "SkillSpan"),
            (args.skip_mixed, "melo_deu_mixed", lambda: mixed_languages(provider, 300 if args.full else 100),
             "melo_deu_mixed"),
            (args.skip_melo, "melo_usa_titles",
             lambda: melo_map(provider, *((None, None) if args.full else (150, 2500))), "melo_usa_titles")):
        if flag:
            continue
        if not (SHARED / folder).exists():
            notes.append(f"{SHARED / folder} is absent: skipped")
            continue
        result = run()
        results.append(result)
        notes.append(label + ": " + ", ".join(f"{k} {v}" for k, v in result.items() if k not in WAYS))
    print("| set | " + " | ".join(WAYS) + " |")
    print("|---|" + "---:|" * len(WAYS))
    for result in results:
        for key in result[WAYS[0]]:
            print(f"| {key} | " + " | ".join(str(result[name][key]) for name in WAYS) + " |")
    print()
    for note in notes:
        print(note)
    print(f"\n{time.monotonic() - started:.0f} s")
    if args.worker:
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
