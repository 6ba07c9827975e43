"""The read model: memory per web process, answer time from memory, and how soon a closed job leaves both processes.

Memory: every active job held as ``jobflow.readmodel.memory.Memory`` holds it (postings of about 1,500 characters,
lists of 10), measured with tracemalloc and as the process's RSS growth; then 20,000 ``/similar`` bodies built from
it (random jobs, a quarter with ``language``).

Bound (``--bound``): the embedded database with ``--jobs`` jobs with lists, gunicorn with 2 processes, and (with
``--backlog``) one worker draining that many more. Another writer closes ``--closes`` jobs one at a time (pymongo,
straight into the database); after each, ``GET /api/jobs/<id>`` is asked every 5 ms on new connections for 1.5 s.
The bound of a close is the last moment any answer still showed the job.

Run from the repo root: python -m benchmarks.read_model_bench [--sizes 10000,100000] [--bound] [--jobs 2000]
    [--backlog 0] [--closes 40]
"""
from __future__ import annotations

import argparse
import gc
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
from bson import ObjectId

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("care patients shift team warehouse forklift python django backend accounts payroll invoices kitchen menu "
         "drivers routes licence electrical wiring classroom pupils sales customers nights weekends english german "
         "experience required benefits salary contract permanent temporary training growth").split()


def _log(message: str) -> None:
    print(f"[read-model {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def posting(rng: random.Random, job_id: ObjectId, ids: list, n: int, now: datetime) -> dict:
    words = rng.choices(WORDS, k=200)
    return {"_id": job_id, "title": f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} {n}",
            "description": " ".join(words)[:1500], "company": f"Company {n % 997}", "location": f"City {n % 50}",
            "category": f"Category {n % 20}", "status": "active", "language": rng.choice(["en", "de", "sq"]),
            "employmentType": "full-time", "salaryRange": "1,000-1,400 EUR",
            "createdAt": now - timedelta(seconds=n), "updatedAt": now,
            "embedding": {"status": "completed", "model": "text-embedding-3-small", "dimensions": 1536,
                          "tokens": 310, "generatedAt": now, "textHash": "x" * 64, "language": "en"},
            "similarJobs": [{"jobId": other, "score": rng.random()} for other in rng.sample(ids, 10)],
            "similarityMetadata": {"computedAt": now, "model": "text-embedding-3-small"}}


def memory_run(size: int) -> dict:
    from jobflow.readmodel.memory import Memory
    rng = random.Random(size)
    now = datetime.now(timezone.utc)
    ids = [ObjectId() for _ in range(size)]
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    tracemalloc.start()
    memory = Memory()
    started = time.perf_counter()
    for n, job_id in enumerate(ids):
        memory.put(posting(rng, job_id, ids, n, now))
    load_seconds = time.perf_counter() - started
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    rss_after = psutil.Process().memory_info().rss
    times = []
    for _ in range(20_000):
        job_id = rng.choice(ids)
        language = rng.choice([None, None, None, "de"])
        began = time.perf_counter()
        memory.similar(job_id, 10, language, lists_off=False)
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    result = {"jobs": size, "traced": held / 2**20, "rss": (rss_after - rss_before) / 2**20,
              "per_job": held / size, "load": load_seconds, "p50": times[len(times) // 2],
              "p99": times[int(len(times) * 0.99)]}
    del memory
    gc.collect()
    return result


def _get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def bound_run(jobs: int, backlog: int, closes: int) -> dict:
    from pymongo import MongoClient

    from jobflow.db import EmbeddedServer, free_port
    from tests.support.openai_server import EmbeddingsServer
    folder = Path(tempfile.mkdtemp(prefix="jobflow-readmodel-"))
    server = EmbeddedServer(folder / "secantus")
    children: list[subprocess.Popen] = []
    try:
        server.ensure()
        uri = server.uri_for("read_model_bench")
        db = MongoClient(uri, tz_aware=True).get_default_database()
        rng = random.Random(7)
        now = datetime.now(timezone.utc)
        ids = [ObjectId() for _ in range(jobs)]
        db.jobs.insert_many([posting(rng, job_id, ids, n, now) for n, job_id in enumerate(ids)])
        if backlog:
            queued = db.jobs.insert_many([{**posting(rng, ObjectId(), ids, n, now), "similarJobs": [],
                                           "embedding": None, "similarityMetadata": {}}
                                          for n in range(jobs, jobs + backlog)]).inserted_ids
            db.jobqueues.insert_many([{"jobId": i, "taskType": "generate_embedding", "status": "pending",
                                       "priority": 5, "attempts": 0, "nextAttemptAt": now, "createdAt": now,
                                       "updatedAt": now, "metadata": {"source": "benchmark"}, "errorHistory": []}
                                      for i in queued])
        with EmbeddingsServer(latency=0.2) as provider:
            port = free_port()
            env = {**os.environ, "MONGODB_URI": uri, "EMBEDDING_PROVIDER": "openai",
                   "OPENAI_API_KEY": provider.api_key, "OPENAI_BASE_URL": provider.base_url, "PORT": str(port),
                   "HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", "DEMO_DATA": "false", "DEBUG_WORKER": "false",
                   "DEBUG_QUEUE": "false", "DEBUG_EMBEDDINGS": "false",
                   "JOBFLOW_INSTANCE_PATH": str(folder / "instance")}
            web_log = folder / "gunicorn.log"
            children.append(subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py"],
                                             cwd=ROOT, env=env, stdout=open(web_log, "wb"), stderr=subprocess.STDOUT))
            if backlog:
                children.append(subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT,
                                                 env=env, stdout=open(folder / "worker.log", "wb"),
                                                 stderr=subprocess.STDOUT))
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    for _ in range(8):       # both processes see a request: both start loading
                        _get(port, f"/api/jobs/{ids[0]}/similar")
                except OSError:
                    pass
                if web_log.read_text(errors="replace").count("active jobs in memory") >= 2:
                    break
                time.sleep(0.5)
            else:
                raise SystemExit("the web processes did not report their read model loaded")
            _log("both web processes hold the jobs; closing jobs one at a time ...")
            bounds = []
            for job_id in rng.sample(ids, closes):
                path = f"/api/jobs/{job_id}"
                assert _get(port, path) == 200
                written = time.monotonic()
                db.jobs.update_one({"_id": job_id}, {"$set": {"status": "closed"}})
                last_seen = 0.0
                while time.monotonic() - written < 1.5:
                    asked = time.monotonic()
                    if _get(port, path) != 404:
                        last_seen = asked - written
                    time.sleep(0.005)
                bounds.append(last_seen * 1000)
            bounds.sort()
            drained = db.jobqueues.count_documents({"status": "completed"}) if backlog else 0
            if backlog and not drained:
                _log("the worker drained nothing; its log ends:\n" + (folder / "worker.log").read_text(errors="replace")[-3000:])
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return {"closes": closes, "p50": bounds[len(bounds) // 2], "p99": bounds[min(len(bounds) - 1,
            int(len(bounds) * 0.99))], "max": bounds[-1], "jobs": jobs, "backlog": backlog, "drained": drained}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.read_model_bench", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000", help="jobs held, comma-separated (empty: skip)")
    p.add_argument("--bound", action="store_true", help="also measure how soon a closed job leaves both processes")
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--backlog", type=int, default=0, help="jobs a worker drains meanwhile")
    p.add_argument("--closes", type=int, default=40)
    args = p.parse_args(argv)
    rows = [memory_run(int(s)) for s in args.sizes.split(",") if s]
    if rows:
        print("| active jobs held | memory (tracemalloc) | RSS growth | per job | load | /similar body p50 | p99 |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['jobs']:,} | {r['traced']:.0f} MiB | {r['rss']:.0f} MiB | {r['per_job'] / 1024:.1f} KiB | "
                  f"{r['load']:.1f} s | {r['p50']:.3f} ms | {r['p99']:.3f} ms |")
    if args.bound:
        b = bound_run(args.jobs, args.backlog, args.closes)
        print(f"\nA job closed by another writer, {b['closes']} closes, {b['jobs']:,} jobs, "
              f"{'a worker draining ' + format(b['backlog'], ',') + ' jobs' if b['backlog'] else 'no worker'}: "
              f"last answer still showing it p50 {b['p50']:.0f} ms, p99 {b['p99']:.0f} ms, max {b['max']:.0f} ms"
              + (f" ({b['drained']:,} drained meanwhile)" if b["backlog"] else ""))


if __name__ == "__main__":
    main()
