"""Change capture: the lag from a write to its queue item, and what capture costs a drain.

Starts the embedded database (temporary folder), the loopback OpenAI server and one ``flask --app app worker``
process. A writer in this process inserts jobs with pymongo at a steady rate for ``--seconds`` (each job's
``createdAt`` is its write time); the lag of a job is its queue item's ``createdAt`` minus that. Then a backlog
of ``--drain-jobs`` jobs is drained by one worker process with ``CHANGE_CAPTURE=off`` and again with ``auto``.

Run from the repo root: python -m benchmarks.capture_bench [--seconds 60] [--rates 50,200] [--drain-jobs 3000]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
CATCH_UP_DEADLINE = 600     # seconds after the last write for every job to have its item


def _log(message: str) -> None:
    print(f"[capture {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _worker(uri: str, provider, folder: Path, capture: str) -> subprocess.Popen:
    env = {**os.environ, "MONGODB_URI": uri, "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": provider.api_key,
           "OPENAI_BASE_URL": provider.base_url, "CHANGE_CAPTURE": capture, "DEMO_DATA": "false",
           "EMBEDDING_WORKER_INTERVAL": "200", "DEBUG_WORKER": "false", "DEBUG_QUEUE": "false",
           "DEBUG_EMBEDDINGS": "false", "JOBFLOW_INSTANCE_PATH": str(folder / "instance")}
    log = open(folder / f"worker-{capture}-{time.monotonic_ns()}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def _wait(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def _posting(tag: str, i: int) -> dict:
    now = datetime.now(timezone.utc)
    return {"title": f"Warehouse Operative {tag}-{i}", "company": f"Company {i % 31}", "location": "Tirana",
            "description": f"Picking and packing, shift {i % 3}, team {i % 13}, posting {tag}-{i}.",
            "status": "active", "createdAt": now, "updatedAt": now}


def lag_run(db, rate: int, seconds: float) -> dict:
    """Insert at ``rate`` a second for ``seconds`` (what fell due, each time the last write returned); the lag of
    every job (ms), from the queue items."""
    tag = f"r{rate}"
    items_before = db.jobqueues.estimated_document_count()
    started = time.monotonic()
    written = 0
    while time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate) + 1
        if due > written:
            # What fell due since the last write, in one insert: a board's many writers, not one waiting for each.
            db.jobs.insert_many([_posting(tag, n) for n in range(written, due)])
            written = due
        time.sleep(max(0.0, started + written / rate - time.monotonic()))
    achieved = written / (time.monotonic() - started)
    ended = time.monotonic()
    # Whole collections read and matched here: a long $in costs the embedded database its square.
    written_at = {d["_id"]: d["createdAt"] for d in db.jobs.find({"title": {"$regex": f" {tag}-"}}, {"createdAt": 1})}
    # Capture makes one item a job: count them cheaply (the collection's size) until every job has one, or the
    # deadline; then read the items once (polling a read of every item loaded the database it measures).
    deadline, caught_up = ended + CATCH_UP_DEADLINE, None
    while time.monotonic() < deadline:
        if db.jobqueues.estimated_document_count() - items_before >= len(written_at):
            caught_up = time.monotonic() - ended
            break
        time.sleep(1.0)
    lags = sorted((item["createdAt"] - written_at[item["jobId"]]).total_seconds() * 1000
                  for item in db.jobqueues.find({}, {"jobId": 1, "createdAt": 1}) if item["jobId"] in written_at)
    row = {"rate": rate, "achieved": achieved, "jobs": len(written_at), "queued": len(lags), "caught_up": caught_up,
           "p50": lags[len(lags) // 2] if lags else None,
           "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else None, "max": lags[-1] if lags else None}
    _log(f"{rate}/s: {row}")
    return row


def drain_run(uri: str, db, provider, folder: Path, capture: str, jobs: int) -> dict:
    """A backlog of ``jobs`` queued at once, drained by one worker process; jobs per minute."""
    from bson import ObjectId
    db.jobs.delete_many({})
    db.jobqueues.delete_many({})
    db.jobflowcapture.delete_many({})     # capture starts current: what it costs while it keeps up, not a catch-up
    now = datetime.now(timezone.utc)
    ids = db.jobs.insert_many([_posting(f"d{capture}", i) for i in range(jobs)]).inserted_ids
    db.jobqueues.insert_many([{"_id": ObjectId(), "jobId": i, "taskType": "generate_embedding", "status": "pending",
                               "priority": 5, "attempts": 0, "nextAttemptAt": now, "createdAt": now, "updatedAt": now,
                               "metadata": {"source": "benchmark"}, "errorHistory": []} for i in ids])
    worker = _worker(uri, provider, folder, capture)
    try:
        _wait("the worker to start claiming", lambda: db.jobqueues.count_documents({"status": {"$ne": "pending"}}), 120)
        started = time.monotonic()
        _wait("the drain", lambda: db.jobqueues.count_documents({"status": {"$in": ["pending", "processing"]}}) == 0,
              900)
        seconds = time.monotonic() - started
    finally:
        _stop(worker)
    return {"capture": capture, "jobs": jobs, "seconds": seconds, "per_min": jobs / seconds * 60}


def run(seconds: float = 60, rates=(50, 200), drain_jobs: int = 3000, latency: float = 0.05, repeats: int = 2) -> dict:
    from jobflow.db import EmbeddedServer
    from tests.support.openai_server import EmbeddingsServer
    folder = Path(tempfile.mkdtemp(prefix="jobflow-capture-"))
    server = EmbeddedServer(folder / "secantus")
    out = {"lags": [], "drains": []}
    try:
        server.ensure()
        uri = server.uri_for("capture_bench")
        db = MongoClient(uri, tz_aware=True).capture_bench
        with EmbeddingsServer(latency=latency) as provider:
            worker = _worker(uri, provider, folder, "auto")
            try:
                _wait("change capture to start", lambda: (db.jobflowcapture.find_one({"_id": "jobs"}) or {})
                      .get("token"), 120)
                for rate in rates:
                    _log(f"writing {rate} jobs a second for {seconds:.0f} s ...")
                    out["lags"].append(lag_run(db, rate, seconds))
            finally:
                _stop(worker)
            for capture in ("off", "auto") * repeats:
                _log(f"draining {drain_jobs} jobs with CHANGE_CAPTURE={capture} ...")
                out["drains"].append(drain_run(uri, db, provider, folder, capture, drain_jobs))
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return out


def markdown(result: dict) -> str:
    def ms(value):
        return "–" if value is None else f"{value:,.0f} ms"
    lines = ["| writes a second (achieved) | jobs | queued | all queued after last write | lag p50 | lag p99 | lag max |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['rate']} ({r['achieved']:.0f}) | {r['jobs']:,} | {r['queued']:,} | "
              f"{'not within %d s' % CATCH_UP_DEADLINE if r['caught_up'] is None else '%.1f s' % r['caught_up']} | "
              f"{ms(r['p50'])} | {ms(r['p99'])} | {ms(r['max'])} |" for r in result["lags"]]
    lines += ["", "| drain, CHANGE_CAPTURE | jobs | seconds | jobs/min |", "|---|---:|---:|---:|"]
    lines += [f"| {d['capture']} | {d['jobs']:,} | {d['seconds']:.1f} | {d['per_min']:,.0f} |" for d in result["drains"]]
    mean = {mode: sum(d["per_min"] for d in result["drains"] if d["capture"] == mode)
            / max(1, sum(1 for d in result["drains"] if d["capture"] == mode)) for mode in ("off", "auto")}
    if mean["off"] and mean["auto"]:
        lines.append(f"\nmean drain: {mean['off']:,.0f} jobs/min off, {mean['auto']:,.0f} on: capture costs the drain "
                     f"{(1 - mean['auto'] / mean['off']) * 100:.1f}% (goal: at most 10%)")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.capture_bench", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60, help="how long each write rate is sustained")
    p.add_argument("--rates", default="50,200", help="writes a second, comma-separated")
    p.add_argument("--drain-jobs", type=int, default=3000)
    p.add_argument("--latency", type=float, default=0.05, help="seconds the loopback provider takes per call")
    p.add_argument("--repeats", type=int, default=2, help="drains of each kind, alternating")
    args = p.parse_args(argv)
    result = run(args.seconds, tuple(int(r) for r in args.rates.split(",")), args.drain_jobs, args.latency,
                 args.repeats)
    print(markdown(result))


if __name__ == "__main__":
    main()
