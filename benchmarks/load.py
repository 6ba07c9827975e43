"""Load: GET /api/jobs/<id>/similar at increasing rates while a worker drains a 10,000-job backlog.

Starts everything it needs on loopback and stops it at the end (also on Ctrl+C):

* SecantusDB (``jobflow.db.EmbeddedServer``) on a temporary folder;
* the loopback OpenAI embeddings server as its own process (``--latency`` 0.2 s per call);
* gunicorn with ``gunicorn.conf.py`` (2 web processes × 4 threads, access log on, as deployed);
* one ``flask --app app worker`` process.

Seeds ``--embedded`` jobs (2,000) already embedded — vectors computed exactly as the loopback server
computes them — with lists from ``flask --app app recompute-all``, plus ``--backlog`` jobs (10,000)
queued for embedding. Starts the worker, then drives ``GET /api/jobs/<id>/similar`` for random ids of
the embedded jobs, one step per ``--rates`` value, each ``--step-seconds`` long, with an open-loop
generator: requests are sent at their scheduled times over keep-alive connections (threads and
``http.client``), and latency counts from the scheduled time, so a server that falls behind shows it.
A step whose achieved rate falls below 90% of its target, or whose p99 passes 1 s, ends the ramp.
Then ``wrk`` (Debian's; when it is missing and the command runs as root it runs ``apt-get install -y wrk``
and says so; ``--wrk auto`` never installs, ``--wrk no`` skips it; without it the Python generator alone
runs) measures the closed-loop maximum with 4 and 16 connections. Prints a Markdown table.

Every request goes to 127.0.0.1; every loop is bounded in count and time.

Run from the repo root: python -m benchmarks.load [--backlog 10000] [--embedded 2000]
    [--rates 25,50,75,100,150,200,300,400] [--step-seconds 15] [--latency 0.2] [--wrk install|auto|no]
    [--no-worker] [--slow-ops MS]
"""
from __future__ import annotations

import argparse
import http.client
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent

KEY = "sk-test-loopback"
MODEL = "text-embedding-3-small"
DIMENSIONS = 1536
HOST = "127.0.0.1"
P99_GOAL_MS = 50.0


def clock(at: float) -> str:
    """A wall-clock time as HH:MM:SS.s (to match log lines and the database's slow operations)."""
    return time.strftime("%H:%M:%S", time.localtime(at)) + f"{at % 1:.1f}"[1:]


def log(message: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----- processes ---------------------------------------------------------------------------------------------

class Stack:
    """The processes of one run; ``close`` stops them in order (idempotent)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.db = None
        self.uri = ""

    def spawn(self, name: str, command: list[str], env: dict, **kwargs) -> subprocess.Popen:
        out = open(self.folder / f"{name}.log", "wb")
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=kwargs.pop("stdout", out),
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                   **kwargs)
        self.children.append((name, process))
        return process

    def close(self) -> None:
        for name, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in reversed(self.children):
            try:
                process.wait(45)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in 45 s: killed")
                process.kill()
                process.wait(5)
        self.children.clear()
        if self.db is not None:
            self.db.stop()
            self.db = None


CPU_PARTS = ("database", "worker", "gunicorn", "provider", "load")


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each part of the run, child processes included."""
    pids = {name: process.pid for name, process in stack.children}
    if stack.db is not None and stack.db.process is not None:
        pids["database"] = stack.db.process.pid
    pids["load"] = os.getpid()
    used: dict[str, float] = {}
    for name in CPU_PARTS:
        if name not in pids:
            continue
        try:
            process = psutil.Process(pids[name])
            family = [process] + (process.children(recursive=True) if name != "load" else [])
            used[name] = sum(sum(p.cpu_times()[:2]) for p in family)
        except psutil.Error:
            continue
    return used


def cpu_shares(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Percent of one core each part used between two ``cpu_seconds`` readings."""
    return {name: (after[name] - before.get(name, 0.0)) / seconds * 100 for name in CPU_PARTS if name in after}


def start_provider(stack: Stack, latency: float) -> str:
    process = stack.spawn("provider", [sys.executable, "-m", "tests.support.openai_server", "--port", "0",
                                       "--latency", str(latency), "--dimensions", str(DIMENSIONS)],
                          dict(os.environ), stdout=subprocess.PIPE)
    line = process.stdout.readline().decode().strip()
    if not line.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"the loopback provider did not start: {line!r}")
    return line


def app_env(stack: Stack, base_url: str, port: int) -> dict:
    env = dict(os.environ)
    env.update({"MONGODB_URI": stack.uri, "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY,
                "OPENAI_BASE_URL": base_url, "OPENAI_EMBEDDING_MODEL": MODEL, "HOST": HOST, "PORT": str(port),
                "JOBFLOW_INSTANCE_PATH": str(stack.folder / "instance"), "DEMO_DATA": "false",
                "DEBUG_EMBEDDINGS": "false", "DEBUG_WORKER": "false", "DEBUG_QUEUE": "false"})
    return env


def wait_http(port: int, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"http://{HOST}:{port}{path} did not answer 200 within {timeout:.0f} s")


# ----- data --------------------------------------------------------------------------------------------------

def seed(embedded: int, backlog: int) -> list[str]:
    """Insert the jobs; the embedded ones get the vector the loopback server would return. Their ids."""
    from jobflow.embeddings.text import RECIPE, combine, embedded_texts, job_text, text_hash
    from jobflow.jobs import queue
    from jobflow.models import Job
    from jobflow.models.fields import vector_to_bson
    from jobflow.timeutil import utcnow
    from tests.support.openai_server import embed_text

    from .pipeline_bench import demo_jobs

    jobs = demo_jobs(embedded + backlog, seed=11)
    coll = Job._get_collection()
    now = utcnow()
    ids: list = []
    started = time.monotonic()
    for start in range(0, embedded, 500):
        docs = []
        for job in jobs[start:min(start + 500, embedded)]:
            vector = combine([embed_text(t, DIMENSIONS) for t in embedded_texts(job)])
            docs.append({**job, "createdAt": now, "updatedAt": now, "embedding": {
                "status": "completed", "vector": vector_to_bson(vector), "model": MODEL, "dimensions": DIMENSIONS,
                "textHash": text_hash(job_text(job)), "recipe": RECIPE, "tokens": 0, "generatedAt": now,
                "retries": 0}})
        ids += coll.insert_many(docs).inserted_ids
    log(f"inserted {embedded:,} embedded jobs in {time.monotonic() - started:.1f} s")
    started = time.monotonic()
    for start in range(embedded, embedded + backlog, 1000):
        chunk = [{**job, "createdAt": now, "updatedAt": now} for job in jobs[start:min(start + 1000,
                                                                                       embedded + backlog)]]
        queue.enqueue_many(coll.insert_many(chunk).inserted_ids, priority=queue.PRIORITY_BACKFILL,
                           source="benchmark")
    log(f"inserted and queued {backlog:,} backlog jobs in {time.monotonic() - started:.1f} s")
    return [str(i) for i in ids]


def completed_since(since) -> int:
    """Queue items completed since ``since`` (read through the (status, finishedAt) index)."""
    from jobflow.models import QueueItem
    return QueueItem._get_collection().count_documents({"status": "completed", "finishedAt": {"$gte": since}})


def backlog_left() -> int:
    from jobflow.models import QueueItem
    return QueueItem._get_collection().count_documents({"status": {"$in": ["pending", "processing"]}})


# ----- the open-loop generator ---------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def run_step(port: int, ids: list[str], rate: float, seconds: float, rng: random.Random) -> dict:
    """Send ``rate × seconds`` requests at their scheduled times; latency from the scheduled time."""
    total = int(rate * seconds)
    paths = [f"/api/jobs/{rng.choice(ids)}/similar" for _ in range(total)]
    latencies: list[float] = []
    slowest: list[tuple[float, float]] = []   # (elapsed ms, wall-clock time it was due), worst few
    errors: dict[str, int] = {}
    hits = [0]                                # answers served from a precomputed list (cached: true)
    lock = threading.Lock()
    counter = iter(range(total))
    start = time.perf_counter() + 0.2
    wall_offset = time.time() - time.perf_counter()
    hard_stop = start + seconds + 15          # bounded in time, whatever the server does
    threads = max(4, min(64, int(rate * 0.05) + 4))

    def sender():
        conn = None
        while True:
            with lock:
                n = next(counter, None)
            if n is None or time.perf_counter() > hard_stop:
                break
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, port, timeout=10)
                conn.request("GET", paths[n], headers={"Accept": "application/json"})
                response = conn.getresponse()
                body = response.read()
                ok = response.status == 200 and body.startswith(b'{"similarJobs"')
                key = None if ok else f"HTTP {response.status}"
                cached = ok and b'"cached":true' in body
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                key = type(exc).__name__
                if conn is not None:
                    conn.close()
                conn = None
            elapsed = (time.perf_counter() - due) * 1000
            with lock:
                if key is None:
                    latencies.append(elapsed)
                    hits[0] += cached
                    if elapsed > 250:
                        slowest.append((elapsed, due + wall_offset))
                else:
                    errors[key] = errors.get(key, 0) + 1
        if conn is not None:
            conn.close()

    pool = [threading.Thread(target=sender, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(max(0.1, hard_stop + 5 - time.perf_counter()))
    took = max(time.perf_counter() - start, 1e-9)
    done = len(latencies) + sum(errors.values())
    return {"target": rate, "sent": done, "achieved": done / took, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "max": max(latencies, default=float("nan")),
            "errors": sum(errors.values()), "error_kinds": errors, "seconds": took,
            "cached": hits[0] / max(len(latencies), 1), "slowest": sorted(slowest, reverse=True)[:8]}


# ----- wrk (closed loop), when available -------------------------------------------------------------------------

def find_wrk(mode: str) -> str | None:
    if mode == "no":
        return None
    path = shutil.which("wrk")
    if path:
        return path
    if mode == "install":
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            log("wrk is missing and cannot be installed here (needs root and apt-get): using the Python generator only")
            return None
        log("wrk is missing: installing it with `apt-get install -y wrk` (asked for with --wrk install)")
        result = subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, text=True)
        if result.returncode != 0:
            log("apt-get install wrk failed: using the Python generator only\n" + result.stderr[-500:])
            return None
        return shutil.which("wrk")
    log("wrk is not installed: the closed-loop rows are skipped (--wrk install installs it)")
    return None


def run_wrk(wrk: str, port: int, ids: list[str], connections: int, seconds: int, folder: Path) -> dict:
    script = folder / "similar.lua"
    script.write_text("local ids = {" + ",".join(f'"{i}"' for i in ids) + "}\n"
                      "math.randomseed(7)\n"
                      "request = function()\n"
                      "  return wrk.format('GET', '/api/jobs/' .. ids[math.random(#ids)] .. '/similar')\n"
                      "end\n")
    threads = min(2, connections)
    result = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s",
                             "-s", str(script), f"http://{HOST}:{port}"], capture_output=True, text=True,
                            timeout=seconds + 60)
    text = result.stdout

    def ms(token: str) -> float:
        value, unit = float(token.rstrip("usm")), token.lstrip("0123456789.")
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    row = {"target": f"max, {connections} conn. (wrk)", "achieved": float("nan"), "p50": float("nan"),
           "p99": float("nan"), "errors": 0, "sent": 0}
    for line in text.splitlines():
        parts = line.split()
        if line.strip().startswith("50%"):
            row["p50"] = ms(parts[1])
        elif line.strip().startswith("99%"):
            row["p99"] = ms(parts[1])
        elif line.startswith("Requests/sec:"):
            row["achieved"] = float(parts[1])
        elif "requests in" in line:
            row["sent"] = int(parts[0])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            row["errors"] += int(parts[-1])
        elif line.strip().startswith("Socket errors:"):
            row["errors"] += sum(int(p.strip(",")) for p in parts[3::2])
    if result.returncode != 0:
        row["errors"] = row["errors"] or -1
    return row


# ----- the database's slow operations (--slow-ops) -----------------------------------------------------------

def slow_ops_on(slowms: int) -> None:
    from jobflow.models import Job
    Job._get_db().command("profile", 1, slowms=slowms)
    log(f"the database records operations slower than {slowms} ms (system.profile)")


def _shape(value):
    """A command's shape: its keys, with values replaced (ids and times vary; the query's form does not)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("lsid", "$db", "$clusterTime", "txnNumber")}
    if isinstance(value, list):
        return [_shape(value[0]), f"×{len(value)}"] if value else []
    return type(value).__name__


def report_slow_ops(slowms: int) -> None:
    from jobflow.models import Job
    db = Job._get_db()
    db.command("profile", 0)
    entries = list(db["system.profile"].find().sort("ts", 1))
    groups: dict[str, list] = {}
    for entry in entries:
        command = entry.get("command") or {}
        key = f"{entry.get('op')} {entry.get('ns')} {_shape(command)}"[:300]
        groups.setdefault(key, []).append(entry)
    print(f"\nDatabase operations slower than {slowms} ms during the steps: {len(entries):,}, "
          f"{sum(e.get('millis', 0) for e in entries) / 1000:.1f} s in all.\n")
    print("| count | total s | max ms | operation |")
    print("|---:|---:|---:|---|")
    for key, group in sorted(groups.items(), key=lambda kv: -sum(e.get("millis", 0) for e in kv[1]))[:15]:
        print(f"| {len(group)} | {sum(e.get('millis', 0) for e in group) / 1000:.1f} | "
              f"{max(e.get('millis', 0) for e in group)} | `{key}` |")
    print("\nThe slowest:")
    for entry in sorted(entries, key=lambda e: -e.get("millis", 0))[:10]:
        at = entry["ts"].replace(tzinfo=__import__("datetime").timezone.utc).timestamp()
        print(f"- {entry.get('millis')} ms at {clock(at)}: {entry.get('op')} {entry.get('ns')} "
              f"{str(_shape(entry.get('command') or {}))[:200]}")


# ----- the run ---------------------------------------------------------------------------------------------------

def run(args) -> int:
    from jobflow.db import EmbeddedServer, connect, free_port, where
    from jobflow.models import ensure_indexes
    from jobflow.timeutil import utcnow

    folder = Path(tempfile.mkdtemp(prefix="jobflow-load-"))
    stack = Stack(folder)
    rows: list[dict] = []
    load_before, remaining = os.getloadavg(), None
    try:
        stack.db = EmbeddedServer(folder / "secantus")
        stack.uri = stack.db.ensure()
        connect(stack.uri)
        ensure_indexes()
        log(f"SecantusDB at {where(stack.uri)} (data in {folder})")
        base_url = start_provider(stack, args.latency)
        log(f"loopback provider at {base_url}, {args.latency} s per call")
        ids = seed(args.embedded, args.backlog)
        port = free_port()
        env = app_env(stack, base_url, port)
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "recompute-all"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError("recompute-all failed:\n" + result.stdout[-2000:] + result.stderr[-2000:])
        log(f"recompute-all: {result.stdout.strip().splitlines()[-1]} in {time.monotonic() - started:.1f} s")
        stack.spawn("gunicorn", [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py"], env)
        wait_http(port, "/api/health/embeddings", 60)
        if args.worker:
            stack.spawn("worker", [sys.executable, "-m", "flask", "--app", "app", "worker"], env)
        log(f"gunicorn on http://{HOST}:{port} and {'one worker' if args.worker else 'no worker'} started; "
            f"backlog {backlog_left():,} items")
        rng = random.Random(3)
        run_step(port, ids, 20, 2, rng)                                  # warm up connections and caches
        if env.get("READ_MODEL", "true").lower() not in ("false", "0", "no", "off"):
            wait_read_model(folder / "gunicorn.log", 2, 300)
        if args.worker:                                                  # and let the worker get going
            first = backlog_left()
            deadline = time.monotonic() + 120
            while backlog_left() == first and time.monotonic() < deadline:
                time.sleep(1)
            log(f"the worker is draining: backlog {backlog_left():,} items")
        if args.slow_ops:
            slow_ops_on(args.slow_ops)
        load_before = os.getloadavg()
        for rate in args.rates:
            started, cpu_before = utcnow(), cpu_seconds(stack)
            row = run_step(port, ids, rate, args.step_seconds, rng)
            row["cpu"] = cpu_shares(cpu_before, cpu_seconds(stack), row["seconds"])
            row["drained"] = completed_since(started)          # counted after the step, not during it
            row["loadavg"] = os.getloadavg()[0]
            rows.append(row)
            log(f"target {rate}/s: achieved {row['achieved']:.0f}/s, p50 {row['p50']:.1f} ms, "
                f"p99 {row['p99']:.1f} ms, errors {row['errors']} {row['error_kinds'] or ''}, "
                f"backlog drained {row['drained']:,}")
            log("CPU, % of one core: " + ", ".join(f"{name} {share:.0f}" for name, share in row["cpu"].items())
                + f" (all {sum(row['cpu'].values()):.0f} of {100 * (os.cpu_count() or 1)})")
            if row["slowest"]:
                log("slowest requests: " + ", ".join(f"{ms:.0f} ms at {clock(at)}" for ms, at in row["slowest"]))
            if row["achieved"] < 0.9 * rate or row["p99"] > 1000 or row["errors"]:
                log("the server no longer holds this rate: ramp stopped")
                break
        if args.freeze:
            rows.append(frozen_step(stack, port, ids, args.freeze, rng))
        wrk = find_wrk(args.wrk)
        if wrk:
            for connections in (4, 16):
                started = utcnow()
                row = run_wrk(wrk, port, ids, connections, int(args.step_seconds), folder)
                row["drained"] = completed_since(started)
                row["loadavg"] = os.getloadavg()[0]
                rows.append(row)
                log(f"wrk {connections} connections: {row['achieved']:.0f}/s, p50 {row['p50']:.1f} ms, "
                    f"p99 {row['p99']:.1f} ms, errors {row['errors']}")
        remaining = backlog_left()
        stats = [line for line in (folder / "worker.log").read_text(errors="replace").splitlines()
                 if "WORKER STATS" in line] if (folder / "worker.log").exists() else []
        if stats:
            log("the worker's last stats: " + stats[-1].split("WORKER STATS", 1)[1].strip())
        if args.slow_ops:
            report_slow_ops(args.slow_ops)
    finally:
        stack.close()
        shutil.rmtree(folder, ignore_errors=True)
    print_report(rows, args, load_before, remaining)
    return 0 if rows else 1


def wait_read_model(gunicorn_log: Path, processes: int, timeout: float) -> None:
    """Until every web process says its read model is loaded (READ_MODEL on; the first request starts it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = gunicorn_log.read_text(errors="replace") if gunicorn_log.exists() else ""
        if text.count("active jobs in memory") >= processes:
            log("read model: " + text.split("read model: ")[-1].splitlines()[0])
            return
        time.sleep(0.5)
    log("the read model did not report loaded: answers come from the database")


def frozen_step(stack: Stack, port: int, ids: list[str], seconds: float, rng: random.Random, rate: float = 50) -> dict:
    """``rate`` requests a second while the database process is stopped (SIGSTOP) for ``seconds``."""
    pid = stack.db.process.pid
    log(f"database frozen (SIGSTOP) for {seconds:.0f} s at {rate:.0f} req/s ...")
    os.kill(pid, signal.SIGSTOP)
    try:
        row = run_step(port, ids, rate, seconds, rng)
    finally:
        os.kill(pid, signal.SIGCONT)
    row["target"] = f"{rate:.0f}, database frozen {seconds:.0f} s"
    row["drained"], row["loadavg"] = 0, os.getloadavg()[0]
    log(f"frozen: achieved {row['achieved']:.0f}/s, p50 {row['p50']:.1f} ms, p99 {row['p99']:.1f} ms, "
        f"errors {row['errors']} {row['error_kinds'] or ''}, from a stored list {row.get('cached', 0):.0%}")
    return row


def print_report(rows: list[dict], args, load_before, remaining: int) -> None:
    held = [r for r in rows if isinstance(r["target"], (int, float)) and not r["errors"]
            and r["achieved"] >= 0.9 * r["target"] and r["p99"] < P99_GOAL_MS]
    print(f"\nGET /api/jobs/<id>/similar on gunicorn (gunicorn.conf.py: 2 processes × 4 threads), SecantusDB, "
          f"one worker draining a {args.backlog:,}-job backlog ({args.latency} s provider latency), "
          f"{os.cpu_count()} cores, load average {load_before[0]:.2f} at the start.\n")
    print("| target req/s | achieved req/s | p50 ms | p99 ms | errors | from a precomputed list "
          "| backlog drained during the step | load avg | CPU % of one core: " + " / ".join(CPU_PARTS) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        target = f"{r['target']:.0f}" if isinstance(r["target"], (int, float)) else r["target"]
        cached = f"{r['cached']:.0%}" if "cached" in r else "–"
        cpu = " / ".join(f"{r['cpu'][name]:.0f}" if name in r.get("cpu", {}) else "–" for name in CPU_PARTS)
        print(f"| {target} | {r['achieved']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} | {cached} | "
              f"{r['drained']:,} | {r['loadavg']:.2f} | {cpu} |")
    best = max(held, key=lambda r: r["target"], default=None)
    print(f"\nHighest rate held with no errors and p99 under {P99_GOAL_MS:.0f} ms: "
          + (f"{best['target']:.0f} req/s (p99 {best['p99']:.1f} ms)." if best else "none of the steps."))
    print(f"Backlog left when the load stopped: {remaining:,} of {args.backlog:,}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=10_000, help="jobs queued for embedding")
    parser.add_argument("--embedded", type=int, default=2_000, help="jobs already embedded, with lists")
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                        default=[25, 50, 75, 100, 150, 200, 300, 400], help="target requests per second, in order")
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument("--freeze", type=float, default=0, metavar="SECONDS",
                        help="after the ramp, stop the database process (SIGSTOP) this long while 50 req/s go on")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the loopback provider takes per call")
    parser.add_argument("--no-worker", dest="worker", action="store_false",
                        help="no worker: the read path alone, for comparison")
    parser.add_argument("--wrk", choices=["auto", "install", "no"], default="install",
                        help="install (default): apt-get install wrk if missing (root only; says so), else the "
                             "Python generator alone; auto: use wrk only if installed; no: never")
    parser.add_argument("--slow-ops", type=int, default=0, metavar="MS",
                        help="record the database's operations slower than MS ms during the steps and summarise "
                             "them (SecantusDB's profiler, system.profile)")
    args = parser.parse_args(argv)
    if args.embedded < 1 or args.step_seconds <= 0 or not args.rates or min(args.rates) <= 0:
        parser.error("--embedded, --step-seconds and every rate must be positive")
    if args.step_seconds * max(args.rates) > 100_000:
        parser.error("a step would send more than 100,000 requests: lower --rates or --step-seconds")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    try:
        return run(args)
    except KeyboardInterrupt:
        log("interrupted: everything it started was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
