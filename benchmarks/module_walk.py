"""Which product modules a job id passes through, seen at run time, on the write and the read path.

``python -m benchmarks.module_walk`` builds the app on a throw-away embedded
database with the local model, then records every ``jobflow`` module whose
code runs while one job goes from ``POST /api/jobs`` to its stored list (the
request, then a worker's drain) and while ``GET /api/jobs/<id>/similar``
answers for it. It prints each path's modules grouped by folder.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from collections import OrderedDict

TOKEN = "walk-" + "t" * 32
JOB = {"title": "Night nurse", "description": "Hospital night shift nurse for the emergency ward", "company": "C",
       "location": "L", "category": "Health"}


def walk() -> tuple[list[str], list[str]]:
    """(modules of the write path, modules of the read path), in the order first seen."""
    os.environ["JOBFLOW_INSTANCE_PATH"] = tempfile.mkdtemp(prefix="jobflow-walk-")
    from jobflow import create_app
    from jobflow.worker.loop import Worker
    app = create_app({"TESTING": True, "DEMO_DATA": False, "ADMIN_API_TOKEN": TOKEN, "SIMILARITY_MIN_SCORE": 0.0})
    seen: OrderedDict[str, None] = OrderedDict()

    def note(frame, event, arg):
        module = frame.f_globals.get("__name__", "")
        if event == "call" and module.startswith("jobflow"):
            seen.setdefault(module, None)

    def recorded(action) -> list[str]:
        seen.clear()
        sys.setprofile(note)
        threading.setprofile(note)
        try:
            action()
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
        return list(seen)

    client, headers = app.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    with app.app_context():
        worker = Worker.from_app(app)
        worker.start(scheduler=False)
        try:
            for n in range(3):      # neighbours, so the job's list is not empty
                client.post("/api/jobs", json={**JOB, "title": f"Nurse {n}"}, headers=headers)
            worker.process_queue()
            posted = {}

            def write():
                posted.update(client.post("/api/jobs", json=JOB, headers=headers).get_json())
                worker.process_queue()
            write_path = recorded(write)
            job_id = posted.get("id") or posted["job"]["id"]
            answer = {}
            read_path = recorded(lambda: answer.update(client.get(f"/api/jobs/{job_id}/similar").get_json()))
            if not answer.get("similarJobs"):
                raise SystemExit(f"no similar jobs for {job_id}: {answer}")
        finally:
            worker.stop(timeout=5)
    return write_path, read_path


def by_folder(modules: list[str]) -> dict[str, list[str]]:
    """Modules grouped by their package under jobflow (the top-level modules under ``jobflow``)."""
    groups: dict[str, list[str]] = {}
    for module in modules:
        parts = module.split(".")
        is_package = hasattr(sys.modules.get(module), "__path__")
        folder = ".".join(parts[:2]) if len(parts) > 2 or (len(parts) == 2 and is_package) else "jobflow"
        groups.setdefault(folder, []).append(module[len(folder) + 1:] if module != folder else "__init__")
    return groups


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m benchmarks.module_walk", description=__doc__.split("\n")[0]).parse_args(argv)
    write_path, read_path = walk()
    for name, modules in (("write: POST /api/jobs to the stored list", write_path),
                          ("read: GET /api/jobs/<id>/similar", read_path)):
        print(f"\n{name}: {len(modules)} modules")
        print("| folder | modules |\n|---|---|")
        for folder, members in by_folder(modules).items():
            print(f"| {folder} | {', '.join(members)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
