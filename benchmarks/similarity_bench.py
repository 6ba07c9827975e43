"""Benchmark VectorIndex: build, top_k, top_k_for_ids, all_top_k and memory per index size.

Run from the repo root: python -m benchmarks.similarity_bench [--sizes 1000,10000] [--dim 384] [--k 10] [--full]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from jobflow.similarity.index import VectorIndex

ALL_TOP_K_LIMIT = 20_000  # all_top_k is O(N^2): skipped above this unless --full
BUILD_BATCH = 1_000  # upsert in batches, as a sync would, so growth by doubling is exercised


def blas_info() -> str:
    """One line naming the BLAS numpy uses (threadpoolctl if installed, else numpy's build config)."""
    try:
        from threadpoolctl import threadpool_info

        libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if libs:
            return ", ".join(f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)" for i in libs)
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"numpy {np.__version__}, BLAS {blas.get('name')} {blas.get('version')} (build config)"
    except Exception:  # older numpy: no mode="dicts"
        return f"numpy {np.__version__}"


def _ms(seconds: float) -> float:
    return seconds * 1e3


def bench_one(n: int, dim: int, k: int, full: bool, seed: int = 0) -> dict:
    """Measure one index size; returns a row dict (times in ms or s as named)."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, dim), dtype=np.float32)
    ids = [f"{i:024x}" for i in range(n)]  # ObjectId-like str keys

    t0 = time.perf_counter()
    index = VectorIndex(dim)
    for s in range(0, n, BUILD_BATCH):
        index.upsert(ids[s : s + BUILD_BATCH], data[s : s + BUILD_BATCH])
    build_s = time.perf_counter() - t0

    queries = rng.standard_normal((200, dim), dtype=np.float32)
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        index.top_k(q, k)
        lat.append(time.perf_counter() - t0)

    batch_lat = []
    for _ in range(5):
        sample = [ids[i] for i in rng.choice(n, size=min(100, n), replace=False)]
        t0 = time.perf_counter()
        index.top_k_for_ids(sample, k)
        batch_lat.append(time.perf_counter() - t0)

    all_s = None
    if full or n <= ALL_TOP_K_LIMIT:
        t0 = time.perf_counter()
        for _ in index.all_top_k(k):
            pass
        all_s = time.perf_counter() - t0

    return {
        "n": n,
        "dim": dim,
        "k": k,
        "build_s": build_s,
        "top_k_ms": _ms(statistics.median(lat)),
        "batch100_ms": _ms(statistics.median(batch_lat)),
        "all_top_k_s": all_s,
        "memory_mb": index.memory_bytes() / 2**20,
    }


def run(sizes, dim: int, k: int, full: bool = False) -> list[dict]:
    """Benchmark each size in `sizes`; rows are reusable by other commands."""
    return [bench_one(int(n), dim, k, full) for n in sizes]


def markdown(rows: list[dict]) -> str:
    """Render rows as a Markdown table."""
    head = "| N | build (s) | top_k median (ms) | top_k_for_ids ×100 (ms) | all_top_k (s) | memory (MiB) |"
    lines = [head, "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        all_s = "skipped" if r["all_top_k_s"] is None else f"{r['all_top_k_s']:.2f}"
        lines.append(
            f"| {r['n']:,} | {r['build_s']:.3f} | {r['top_k_ms']:.3f} | {r['batch100_ms']:.2f} "
            f"| {all_s} | {r['memory_mb']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="comma-separated index sizes")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--full", action="store_true", help=f"run all_top_k even when N > {ALL_TOP_K_LIMIT:,}")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(f"BLAS: {blas_info()}")
    print(f"dim={args.dim} k={args.k}\n")
    print(markdown(run(sizes, args.dim, args.k, args.full)))


if __name__ == "__main__":
    main()
