"""Benchmark the embedding pipeline: claim, embed, store and similar lists, end to end.

Starts its own SecantusDB (temporary folder) and a loopback OpenAI server answering in
``--latency`` seconds, inserts ``--jobs`` demo-like postings (~150 words), runs one Worker with
the default settings until the queue is drained, then does the same with the bundled local model
for ``--local-jobs`` postings. Prints a Markdown table.

Run from the repo root: python -m benchmarks.pipeline_bench [--jobs 3000] [--latency 0.2] [--local-jobs 200]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
DEMO_FILES = [ROOT / "jobflow" / "demo" / "jobs_en.jsonl", ROOT / "jobflow" / "demo" / "jobs_sq.jsonl"]
SEED_RATE = "5–10"   # jobs per minute of the seed's Node.js worker (its section 4)
WORDS = 150
LEVELS = ["", "Junior ", "Senior ", "Lead ", "Assistant "]


def demo_jobs(count: int, seed: int = 0) -> list[dict]:
    """``count`` distinct postings recombined from the bundled demo data, about 150 words each."""
    corpus, pools = [], {}
    for language, path in enumerate(DEMO_FILES):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            job = json.loads(line)
            corpus.append((language, job))
            # Sentences of postings in the same language and category: recombined, they read like one.
            pools.setdefault((language, job.get("category")), []).extend(
                s.strip() for s in re.split(r"(?<=[.!?])\s+|\n", job["description"]) if len(s.split()) > 2)
    locations = sorted({job["location"] for _, job in corpus})
    rng = random.Random(seed)
    jobs = []
    for i in range(count):
        language, base = corpus[i % len(corpus)]
        pool = pools[(language, base.get("category"))]
        lines, words = [], 0
        target = WORDS + rng.randint(-20, 20)
        while words < target:
            lines.append(rng.choice(pool))
            words += len(lines[-1].split())
        level = "" if base["title"].split()[0] in {w.strip() for w in LEVELS} else rng.choice(LEVELS)
        jobs.append({"title": f"{level}{base['title']}", "company": base["company"],
                     "location": rng.choice(locations), "category": base.get("category"),
                     "description": "\n".join(lines) + f"\nReference: {i}", "status": "active"})
    return jobs


class _Timed:
    """Time spent in the worker's batches and inside the provider (summed over threads)."""

    def __init__(self, worker):
        self.batch = self.embed = 0.0
        self.lock = threading.Lock()
        process_batch, embed = worker.process_batch, worker.provider.embed

        def timed_batch(items):
            started = time.perf_counter()
            try:
                return process_batch(items)
            finally:
                self.batch += time.perf_counter() - started

        def timed_embed(texts):
            started = time.perf_counter()
            try:
                return embed(texts)
            finally:
                with self.lock:
                    self.embed += time.perf_counter() - started
        worker.process_batch, worker.provider.embed = timed_batch, timed_embed


def _drain(settings: dict, jobs: list[dict], warm_up: bool = False) -> dict:
    """Insert ``jobs``, run one Worker until nothing is pending or processing; timings and counts."""
    from jobflow.jobs import queue
    from jobflow.models import Job, QueueItem
    from jobflow.ops import recompute
    from jobflow.timeutil import utcnow
    from jobflow.worker.loop import Worker

    now = utcnow()
    ids = Job._get_collection().insert_many([dict(j, createdAt=now, updatedAt=now) for j in jobs]).inserted_ids
    queue.enqueue_many(ids, priority=queue.PRIORITY_LIVE, source="benchmark")
    worker = Worker(settings, worker_id="benchmark")
    if warm_up:   # load the model before the clock starts
        worker.provider.embed(["warm up"])
    worker.start(scheduler=False)
    timed = _Timed(worker)
    started, started_at = time.perf_counter(), utcnow()
    while True:
        done = worker.process_queue()
        counts = queue.counts()
        if counts["pending"] == 0 and counts["processing"] == 0:
            break
        if not done:
            time.sleep(0.05)   # retries or a rate limit: wait for them to come due
    seconds = time.perf_counter() - started
    worker.stop(timeout=5)
    # The drain is over when its last item is completed; a language fit and the rewrite of every list it
    # adopts may follow (process_queue), before the loop above sees the queue empty.
    last = QueueItem._get_collection().find_one({"status": "completed"}, sort=[("finishedAt", -1)])
    drained = (last["finishedAt"].replace(tzinfo=None) - started_at.replace(tzinfo=None)).total_seconds() \
        if last else seconds
    return {"seconds": drained, "batch": timed.batch, "embed": timed.embed, "counts": counts,
            "recompute": recompute.state(),
            "embedded": Job._get_collection().count_documents({"embedding.status": "completed"})}


@contextmanager
def _provider_process(latency: float):
    """The loopback OpenAI server in a process of its own, as a real provider is: its JSON work takes no share
    of the worker's interpreter. Yields its base URL."""
    process = subprocess.Popen([sys.executable, "-m", "tests.support.openai_server", "--port", "0",
                                "--latency", str(latency)], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        base_url = process.stdout.readline().decode().strip()
        if not base_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the loopback provider did not start: {base_url!r}")
        yield base_url
    finally:
        process.terminate()
        process.wait(10)


def _use_database(uri: str) -> None:
    from jobflow.db import connect
    from jobflow.models import ensure_indexes
    connect(uri)
    ensure_indexes()


def run(jobs: int = 3000, latency: float = 0.2, local_jobs: int = 200, seed: int = 0,
        progress: Callable[[str], None] = lambda message: None, restore_uri: str | None = None) -> list[dict]:
    """Run the benchmark; one dict per table row (see ``markdown``).

    It connects this process to its own temporary database; pass ``restore_uri`` to be connected
    back to yours afterwards.
    """
    from jobflow.config import load_settings
    from jobflow.db import EmbeddedServer, connect
    from tests.support.openai_server import DEFAULT_API_KEY

    folder = Path(tempfile.mkdtemp(prefix="jobflow-bench-"))
    database = EmbeddedServer(folder / "secantus")
    rows: list[dict] = []
    try:
        database.ensure()
        if jobs:
            with _provider_process(latency) as base_url:
                settings = load_settings(environ={}, overrides={
                    "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": DEFAULT_API_KEY,
                    "OPENAI_BASE_URL": base_url, "MONGODB_URI": database.uri_for("bench_openai")})
                _use_database(settings["MONGODB_URI"])
                progress(f"pipeline: {jobs} jobs, loopback OpenAI answering in {latency * 1000:.0f} ms ...")
                result = _drain(settings, demo_jobs(jobs, seed))
            rate = result["embedded"] / result["seconds"] * 60
            rows.append({"run": "pipeline: claim, embed, store, lists",
                         "provider": f"openai (loopback, {latency * 1000:.0f} ms a call, "
                                     f"{settings['EMBEDDING_MAX_CONCURRENT']} at once)",
                         "jobs": result["embedded"], "seconds": result["seconds"], "jobs_per_min": rate,
                         "note": f"goal ≥ 1,000/min; seed {SEED_RATE}/min; failed {result['counts']['failed']}"})
            rewrite = result["recompute"]
            if rewrite.get("lastCount"):
                rows.append({"run": "then, once: language correction fitted, every list written again",
                             "provider": "—", "jobs": rewrite["lastCount"], "seconds": rewrite.get("lastSeconds"),
                             "jobs_per_min": None, "note": f"{rewrite.get('lastReason')}; after the drain's last "
                                                           "item was completed, not counted above"})
            rows.append({"run": "seed's worker (for comparison)", "provider": "openai", "jobs": None,
                         "seconds": None, "jobs_per_min": SEED_RATE, "note": "the seed's own figure"})
        if local_jobs:
            settings = load_settings(environ={}, overrides={"EMBEDDING_PROVIDER": "local",
                                                            "MONGODB_URI": database.uri_for("bench_local")})
            _use_database(settings["MONGODB_URI"])
            progress(f"local model: {local_jobs} jobs through the pipeline ...")
            result = _drain(settings, demo_jobs(local_jobs, seed + 1), warm_up=True)
            n, embed, total = result["embedded"], result["embed"], result["seconds"]
            rows.append({"run": "local model alone (inside the pipeline)", "provider": "local multilingual-e5-small",
                         "jobs": n, "seconds": embed, "jobs_per_min": n / embed * 60,
                         "note": f"{n / embed:.1f} jobs/s on this machine ({os.cpu_count()} CPUs)"})
            rows.append({"run": "pipeline, local model", "provider": "local multilingual-e5-small",
                         "jobs": n, "seconds": total, "jobs_per_min": n / total * 60,
                         "note": f"outside the model: {(result['batch'] - embed) / total:.1%} in batches, "
                                 f"{(total - embed) / total:.1%} with claims (target < 10%)",
                         "outside_model_share": (total - embed) / total})
    finally:
        database.stop()
        shutil.rmtree(folder, ignore_errors=True)
        if restore_uri:
            connect(restore_uri)
    return rows


def markdown(rows: list[dict]) -> str:
    """Render rows as a Markdown table."""
    def number(value, digits=0):
        if value is None:
            return "—"
        return value if isinstance(value, str) else f"{value:,.{digits}f}"
    lines = ["| run | provider | jobs | seconds | jobs per minute | note |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['provider']} | {number(r['jobs'])} | {number(r['seconds'], 1)} "
                     f"| {number(r['jobs_per_min'])} | {r['note']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=3000, help="jobs through the pipeline with the loopback server")
    p.add_argument("--latency", type=float, default=0.2, help="seconds the loopback server takes per call")
    p.add_argument("--local-jobs", type=int, default=200, help="jobs through the pipeline with the local model")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = run(args.jobs, args.latency, args.local_jobs, args.seed,
               progress=lambda message: print(message, file=sys.stderr, flush=True))
    print(markdown(rows))


if __name__ == "__main__":
    main()
