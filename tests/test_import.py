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
