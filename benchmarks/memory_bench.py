"""The worker's memory (RSS) with its similarity index loaded, at several board sizes and dimensions.

For each size, a fresh database on a throw-away SecantusDB gets that many active jobs already embedded
(random unit vectors, half English and half Albanian by their ``language`` field), with the language
correction fitted on them and stored, as a board that has run for a while has it. Then one
``flask --app app worker`` process starts with the OpenAI provider against a loopback server of the
same dimensions; once it has loaded the index, one job with no ``language`` is added (so its language
is detected: py3langid loads) and embedded. The RSS of the worker is sampled every 0.2 s throughout.

Run from the repo root: python -m benchmarks.memory_bench [--sizes 10000,100000] [--dims 384,1536]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jobflow.embeddings.text import RECIPE

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-memory-bench"
MODELS = {384: "bench-embedding-384", 1536: "text-embedding-3-small"}


def _seed(uri: str, n: int, dims: int, model: str) -> float:
    """Insert ``n`` embedded jobs and store the correction fitted on them; seconds taken."""
    from pymongo import MongoClient

    from jobflow.models.fields import vector_to_bson
    from jobflow.similarity.correction import LanguageCorrection
    from jobflow.timeutil import utcnow
    started = time.monotonic()
    client = MongoClient(uri)
    jobs = client.get_default_database()["jobs"]
    rng = np.random.default_rng(0)
    offsets = {"en": rng.standard_normal(dims), "sq": rng.standard_normal(dims)}
    chunk, now, blocks = 2000, utcnow(), []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        languages = ["en" if (start + i) % 2 else "sq" for i in range(size)]
        vectors = rng.standard_normal((size, dims)) + np.array([offsets[lang] for lang in languages])
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        jobs.insert_many([{"title": f"Job {start + i}", "description": "d", "status": "active", "language": lang,
                           "createdAt": now, "updatedAt": now,
                           "embedding": {"status": "completed", "model": model, "vector": vector_to_bson(v),
                                         "dimensions": dims, "textHash": f"h{start + i}", "language": lang,
                                         "recipe": RECIPE, "generatedAt": now}}
                          for i, (v, lang) in enumerate(zip(vectors, languages))])
        blocks.append((vectors, languages))
    client.close()
    from jobflow.similarity import stored_correction
    correction = LanguageCorrection.fit(blocks, version=1).rounded()
    stored_correction.save(model, correction, n, 1.0)
    stored_correction.lists_computed_with(model, 1)
    return time.monotonic() - started


def measure(n: int, dims: int, server, tmp: Path) -> dict:
    import psutil

    from jobflow import create_app
    from jobflow.jobs import queue
    from jobflow.models import Job
    from tests.support.openai_server import EmbeddingsServer
    model = MODELS[dims]
    uri = server.uri_for(f"memory_{n}_{dims}")
    app = create_app({"TESTING": True, "MONGODB_URI": uri, "INSTANCE_PATH": str(tmp), "EMBEDDING_PROVIDER": "local",
                      "OPENAI_API_KEY": "", "DEMO_DATA": False})
    with app.app_context(), EmbeddingsServer(dimensions=dims, api_key=KEY, models=[model]) as provider:
        seconds = _seed(uri, n, dims, model)
        env = {**os.environ, "MONGODB_URI": uri, "EMBEDDING_PROVIDER": "openai", "OPENAI_API_KEY": KEY,
               "OPENAI_BASE_URL": provider.base_url, "OPENAI_EMBEDDING_MODEL": model, "DEMO_DATA": "false",
               "EMBEDDING_WORKER_INTERVAL": "500", "JOBFLOW_INSTANCE_PATH": str(tmp / f"w{n}_{dims}"),
               "ALERT_EMAIL_ENABLED": "false"}
        log_path = tmp / f"worker_{n}_{dims}.log"
        with open(log_path, "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT, env=env,
                                      stdout=log, stderr=subprocess.STDOUT)
        process, peak, loaded_rss, started = psutil.Process(worker.pid), 0, None, time.monotonic()

        def sample() -> int:
            nonlocal peak
            rss = process.memory_info().rss
            peak = max(peak, rss)
            return rss
        try:
            while loaded_rss is None:
                assert worker.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() - started < 900, "the worker did not load its index in 15 minutes"
                rss = sample()
                if re.search(rf"started: provider openai:{model}, {n:,}|{n} jobs in the similarity index",
                             log_path.read_text(errors="replace")):
                    loaded_rss = rss
                time.sleep(0.2)
            load_seconds = time.monotonic() - started
            load_peak, peak = peak, 0
            job = Job(title="Zhvillues Python me përvojë", description="Kërkojmë një zhvillues me përvojë në Python "
                      "dhe Django për ekipin tonë në Tiranë.", status="active").save()
            queue.enqueue(job.id)
            while Job._get_collection().find_one({"_id": job.id}, {"embedding.status": 1}).get(
                    "embedding", {}).get("status") != "completed":
                assert worker.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() - started < 1200, "the new job was not embedded"
                sample()
                time.sleep(0.2)
            # The drain's end: the correction is fitted again (kept or adopted) before the worker idles.
            while not re.search(r"language correction (fitted on \d+ jobs moves|version \d+ fitted)",
                                log_path.read_text(errors="replace")):
                assert worker.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() - started < 1500, "the drain's refit did not happen"
                sample()
                time.sleep(0.2)
            after = sample()
        finally:
            worker.terminate()
            worker.wait(60)
    mib = 2 ** 20
    return {"jobs": n, "dimensions": dims, "seed s": round(seconds, 1), "index loaded after s": round(load_seconds, 1),
            "RSS loaded MiB": round(loaded_rss / mib), "peak while loading MiB": round(load_peak / mib),
            "RSS after a detected job and a refit MiB": round(after / mib), "peak then MiB": round(peak / mib),
            "vectors MiB": round(n * dims * 4 / mib)}


def run(sizes=(10_000, 100_000), dims=(384, 1536)) -> list[dict]:
    """One row per (size, dimensions)."""
    from jobflow.db import EmbeddedServer
    rows = []
    with tempfile.TemporaryDirectory(prefix="jobflow-memory-") as folder:
        tmp = Path(folder)
        server = EmbeddedServer(tmp / "secantus")
        server.ensure()
        try:
            for n in sizes:
                for d in dims:
                    rows.append(measure(n, d, server, tmp))
                    print(rows[-1], flush=True)
        finally:
            server.stop()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dims", default="384,1536")
    args = parser.parse_args(argv)
    rows = run([int(x) for x in args.sizes.split(",")], [int(x) for x in args.dims.split(",")])
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
