"""``flask --app app benchmark``: the project's benchmarks as one command.

Registered by the top-level entry point ``app.py`` (not by the product package
``jobflow``, which never imports ``benchmarks``). The benchmark modules load
only when the command runs, so registering it costs nothing.
"""
from __future__ import annotations

import click


def _markdown(rows: list[dict]) -> str:
    """A Markdown table of rows that share their keys."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    def cell(value):
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    lines += ["| " + " | ".join(cell(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


@click.command("benchmark")
@click.option("--quick", is_flag=True, help="smaller sizes (about a minute instead of several)")
@click.option("--only", type=click.Choice(["index", "pipeline", "dashboard", "memory"]), multiple=True,
              help="run only these parts (repeatable)")
def benchmark_command(quick, only):
    """Run the project's benchmarks (each on its own throw-away database) and print their tables."""
    from . import dashboard_bench, memory_bench, pipeline_bench, similarity_bench
    parts = [
        ("index", "Similarity index (in memory, 384 dimensions, top 10)",
         lambda: similarity_bench.run([1000, 10000] if quick else [1000, 10000, 100000], 384, 10)),
        ("pipeline", "Pipeline: claim, embed, store, lists (loopback OpenAI server answering in 200 ms; local model)",
         lambda: pipeline_bench.run(jobs=500 if quick else 3000, local_jobs=50 if quick else 200)),
        ("dashboard", "Dashboard pages (median of 5, signed in)",
         lambda: dashboard_bench.run(items=10_000 if quick else 100_000, jobs=2_000 if quick else 20_000)),
        ("memory", "Worker memory (RSS) with the index loaded, OpenAI provider (loopback), correction in force",
         lambda: memory_bench.run([10_000] if quick else [10_000, 100_000], [384, 1536])),
    ]
    for key, title, run in parts:
        if only and key not in only:
            continue
        click.echo(f"\n## {title}\n")
        click.echo(_markdown(run()))
