"""flask import-jobs: CSV and JSON lines, counts and reasons, idempotent."""
import json

import pytest

from jobflow.models import Job, QueueItem
from tests.support import SHARED_DATA


def test_import_jsonl_reports_invalid_rows_and_skips_repeats(app, tmp_path):
    path = tmp_path / "jobs.jsonl"
    rows = [{"id": "a1", "title": "Chef", "description": "Cook Albanian food.", "category": "Hospitality & Tourism"},
            {"id": "a2", "title": "", "category": "Sales"},
            "not an object",
            {"id": "a1", "title": "Chef again", "description": "Duplicate id"},
            {"id": "a3", "title": "Waiter", "description": "Serve tables.", "status": "closed"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["import-jobs", str(path)])
    assert result.exit_code == 0, result.output
    assert "imported: 2  skipped: 1  invalid: 3  queued for embedding: 1" in result.output
    assert "row 2: title: required" in result.output
    assert "row 6" in result.output  # the broken line is named
    assert Job.objects.count() == 2 and QueueItem.objects.count() == 1
    again = runner.invoke(args=["import-jobs", str(path)])
    assert "imported: 0  skipped: 3" in again.output
    assert Job.objects.count() == 2


def test_import_names_a_missing_or_unknown_file(app, tmp_path):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["import-jobs", str(tmp_path / "nope.csv")])
    assert result.exit_code != 0 and "no such file" in result.output
    other = tmp_path / "jobs.xlsx"
    other.write_text("x")
    result = runner.invoke(args=["import-jobs", str(other)])
    assert result.exit_code != 0 and "expected a .csv" in result.output


@pytest.mark.shared_data
def test_import_shared_postings_csv(app):
    path = SHARED_DATA / "skillspan_postings" / "postings.csv"
    result = app.test_cli_runner().invoke(args=["import-jobs", str(path)])
    assert result.exit_code == 0, result.output
    assert Job.objects.count() == 263
    assert QueueItem.objects(status="pending").count() == 263
    job = Job.objects(externalId="train:tech:1").first()
    assert job.title.startswith("Senior QA Engineer")
    assert "taken from the posting's first line" in result.output
    assert all(0 < len(j.title) <= 200 for j in Job.objects.only("title"))


def test_demo_data_is_rich_and_loads(app):
    from jobflow.ops.importer import DEMO_DIR, load_demo_data
    rows = [json.loads(line) for path in DEMO_DIR.glob("*.jsonl") for line in path.open()]
    assert len(rows) >= 150
    assert len({r["category"] for r in rows}) >= 12
    titles = " ".join(r["title"] + r["description"] for r in rows)
    assert "ë" in titles and " the " in titles  # Albanian and English
    report = load_demo_data()
    assert report.imported == len(rows) and report.invalid == 0
    assert load_demo_data().imported == 0  # a second load adds nothing


# --- hostile files (issue 24, finding 5): one line naming the file and the line, bounded memory --------------

def _import_process(path, db_uri, tmp_path, timeout=60):
    """``flask --app app import-jobs PATH`` as an operator runs it; (exit code, stdout + stderr)."""
    import os
    import subprocess
    import sys

    from tests.support import ROOT
    env = {**os.environ, "MONGODB_URI": db_uri, "EMBEDDING_PROVIDER": "local", "DEMO_DATA": "false",
           "JOBFLOW_INSTANCE_PATH": str(tmp_path / "instance"), "SECRET_KEY": "s" * 40, "ADMIN_API_TOKEN": "t" * 20}
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "import-jobs", str(path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output[-3000:]
    return lines[0]


def test_deeply_nested_json_is_one_line_naming_the_file_and_line(app, db_uri, tmp_path):
    lines = tmp_path / "nested.jsonl"
    lines.write_text(json.dumps({"title": "Chef", "description": "Cook."}) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    code, output = _import_process(lines, db_uri, tmp_path)
    assert code == 1
    assert _one_error_line(output) == f"Error: cannot import {lines}: line 2: JSON nested too deeply"
    array = tmp_path / "nested.json"
    array.write_text('[{"title": "Chef", "description": "Cook."},\n' + '{"a":' * 50_000 + "1" + "}" * 50_000 + "]")
    code, output = _import_process(array, db_uri, tmp_path)
    assert code == 1
    assert _one_error_line(output) == f"Error: cannot import {array}: element 2 (line 2): JSON nested too deeply"
    assert Job.objects.count() == 0                         # the whole file is read before anything is stored


def test_special_files_are_refused_without_reading_them(app, db_uri, tmp_path):
    import os
    zero = tmp_path / "zero.jsonl"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)                                           # nobody writes: opening it must not wait
    folder = tmp_path / "folder.json"
    folder.mkdir()
    for path, kind in ((zero, "a device"), (fifo, "a FIFO"), (folder, "a directory")):
        code, output = _import_process(path, db_uri, tmp_path, timeout=30)
        assert code == 1
        assert _one_error_line(output) == f"Error: cannot import {path}: {kind}, not a regular file"


def test_a_row_longer_than_the_limit_stops_the_import_with_bounded_memory(app, tmp_path):
    from jobflow.ops.importer import MAX_ROW_CHARS
    runner = app.test_cli_runner()
    endless = tmp_path / "endless.jsonl"
    with open(endless, "wb") as handle:
        handle.write(b'{"title": "Chef", "description": "Cook."}\n')
        handle.truncate(8 * 1024 ** 3)                      # 8 GiB of NUL bytes and no newline: sparse, instant
    result = runner.invoke(args=["import-jobs", str(endless)])
    assert result.exit_code == 1
    assert _one_error_line(result.output) == (f"Error: cannot import {endless}: line 2: longer than "
                                              f"{MAX_ROW_CHARS:,} characters, the most a row may hold")
    unclosed = tmp_path / "unclosed.csv"
    unclosed.write_text('title,description\nChef,"Cook.\n' + ("x" * 1000 + "\n") * 2000)
    result = runner.invoke(args=["import-jobs", str(unclosed)])
    assert result.exit_code == 1 and "a record longer than 1,048,576 characters" in result.output
    assert "line 1050:" in result.output and Job.objects.count() == 0    # 12 + 1,048 lines of 1,001 characters
    binary = tmp_path / "latin1.jsonl"
    binary.write_bytes(b'{"title": "Chef", "description": "Cook."}\n{"title": "Caf\xe9"}\n')
    result = runner.invoke(args=["import-jobs", str(binary)])
    assert _one_error_line(result.output) == f"Error: cannot import {binary}: line 2: not UTF-8 text (byte 15 of the line)"


def test_a_json_array_is_streamed_element_by_element(tmp_path):
    from jobflow.ops.importer import read_rows
    rows = [{"id": f"r{n}", "title": f"Job {n}", "description": "word " * (n * 37 % 4000), "salary": 10 ** (n % 30)}
            for n in range(300)]                           # elements and numbers cut at every chunk boundary
    path = tmp_path / "jobs.json"
    path.write_text("\ufeff [\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    assert path.stat().st_size > 5 * 65_536
    assert [row for _, row in read_rows(path)] == rows
    broken = tmp_path / "broken.json"
    broken.write_text('[{"title": "Chef"}, {"title": "Waiter"')
    with pytest.raises(Exception, match=r"element 2 \(line 1\): not valid JSON"):
        list(read_rows(broken))
