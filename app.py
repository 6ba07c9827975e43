"""JobFlow Similar. ``python app.py`` runs the whole product on one machine.

The web app, the embedding worker (as a thread) and the embedded database
(when MONGODB_URI is unset), with demo data on the first run. In production
run gunicorn (``gunicorn.conf.py``) and ``flask --app app worker`` as separate
processes. A bad setting or an unreachable database stops start-up with one
line each (exit code 2).
"""
import sys

from jobflow.startup import build_app

if __name__ == "__main__":
    from jobflow.runner import run_all_in_one
    from jobflow.worker.threads import exit_process
    code = run_all_in_one(build_app())
    if code:
        sys.exit(code)      # it did not start: nothing runs yet
    exit_process(code)

app = build_app()


def _add_dev_commands(flask_app) -> None:
    """``flask --app app benchmark``, from ``benchmarks/cli.py`` when that folder is beside this file.

    Not part of the product package (``jobflow`` never imports ``benchmarks``); a copy of the product
    without the repository's dev folders simply lacks the command. The import is cheap: the benchmark
    modules load only when the command runs.
    """
    try:
        from benchmarks.cli import benchmark_command
    except ModuleNotFoundError as exc:
        if exc.name not in ("benchmarks", "benchmarks.cli"):
            raise
        return
    flask_app.cli.add_command(benchmark_command)


_add_dev_commands(app)
