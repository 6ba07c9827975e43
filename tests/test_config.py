"""Settings: parsed once, bad values stop start-up with one line naming the variable."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobflow.config import SETTINGS, ConfigError, env_example, load_settings, unknown_names

ROOT = Path(__file__).resolve().parent.parent


def test_seed_defaults():
    s = load_settings({})
    assert s["EMBEDDING_WORKER_INTERVAL"] == 5000
    assert s["EMBEDDING_MAX_CONCURRENT"] == 3
    assert s["EMBEDDING_BATCH_SIZE"] == 500
    assert s["QUEUE_RETRY_DELAYS"] == [60000, 300000, 900000]
    assert s["QUEUE_STUCK_TIMEOUT"] == 600000
    assert s["WORKER_MEMORY_THRESHOLD"] == 0.85
    assert s["SIMILARITY_TOP_N"] == 10
    assert s["SIMILARITY_RECOMPUTE_INTERVAL"] == 604800000
    assert s["ALERT_EMAIL_ENABLED"] is False
    assert s["PORT"] == 5001
    assert s["EMBEDDING_PROVIDER"] == "local"


def test_provider_defaults_to_openai_with_a_key():
    assert load_settings({"OPENAI_API_KEY": "sk-abc"})["EMBEDDING_PROVIDER"] == "openai"


@pytest.mark.parametrize("name,value,expected", [
    ("QUEUE_RETRY_DELAYS", "60000, 5m", "comma-separated milliseconds"),
    ("WORKER_MEMORY_THRESHOLD", "85", "fraction between 0 and 1"),
    ("EMBEDDING_WORKER_ENABLED", "maybe", "true or false"),
    ("EMBEDDING_MAX_CONCURRENT", "0", "between 1 and 64"),
    ("PORT", "http", "whole number"),
    ("EMBEDDING_PROVIDER", "cohere", "one of"),
    ("SIMILARITY_MIN_SCORE", "2", "cosine score"),
    ("MONGODB_URI", "postgres://x", "mongodb://"),
    ("JOBS_FIELD_MAP", "salary=pay", "'salary' is not a field the product reads"),
    ("JOBS_FIELD_MAP", "title", "expected field=path"),
    ("JOBS_FIELD_MAP", "title=$where", "a field name or a dotted path"),
    ("JOBS_SOURCE_COLLECTION", "system.users", "collection name"),
])
def test_bad_value_names_variable(name, value, expected):
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert message.startswith(name + "=")
    assert expected in message
    assert "\n" not in message


def test_secret_value_is_not_echoed():
    with pytest.raises(ConfigError) as info:
        load_settings({"MONGODB_URI": "redis://user:hunter2@db"})
    assert "hunter2" not in str(info.value)


def test_a_boards_own_collection_and_its_field_names():
    s = load_settings({"JOBS_SOURCE_COLLECTION": "postings", "JOBS_FIELD_MAP": "title=headline, company=employer.name",
                       "JOBS_ACTIVE_STATUSES": "published, live"})
    assert s["JOBS_FIELD_MAP"] == {"title": "headline", "company": "employer.name"}
    assert s["JOBS_ACTIVE_STATUSES"] == ["published", "live"]
    with pytest.raises(ConfigError, match="JOBS_FIELD_MAP: needs JOBS_SOURCE_COLLECTION"):
        load_settings({"JOBS_FIELD_MAP": "title=headline"})
    with pytest.raises(ConfigError, match="JOBS_SOURCE_COLLECTION=jobs: that is the product's own collection"):
        load_settings({"JOBS_SOURCE_COLLECTION": "jobs"})


def test_openai_provider_needs_key():
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        load_settings({"EMBEDDING_PROVIDER": "openai"})


def test_seed_email_names_are_accepted():
    s = load_settings({"EMAIL_HOST": "smtp.example.com", "EMAIL_PORT": "2525", "EMAIL_USER": "u", "EMAIL_PASS": "p"})
    assert (s["MAIL_SERVER"], s["MAIL_PORT"], s["MAIL_USERNAME"], s["MAIL_PASSWORD"]) == ("smtp.example.com", 2525, "u", "p")
    assert s["MAIL_USE_TLS"] is False
    assert load_settings({"EMAIL_PORT": "587"})["MAIL_USE_TLS"] is True


def test_env_example_lists_every_setting_and_is_current():
    text = env_example()
    for setting in SETTINGS:
        assert f"\n# {setting.name}=" in text     # commented out: a copied .env.example changes nothing
    assert (ROOT / ".env.example").read_text() == text, "regenerate .env.example: flask --app app env-example"


def test_every_bad_setting_is_named_at_once():
    with pytest.raises(ConfigError) as info:
        load_settings({"MAIL_USE_TLS": "maybe", "PORT": "abc", "OPENAI_API_KEY": "sk-secret-value",
                       "QUEUE_MAX_ATTEMPTS": "0"})
    problems = info.value.problems
    assert [p.split("=")[0] for p in problems] == ["QUEUE_MAX_ATTEMPTS", "MAIL_USE_TLS", "PORT"]
    assert "MAIL_USE_TLS='maybe': expected true or false" in problems
    assert all("\n" not in p and "sk-secret-value" not in p for p in problems)


def test_unknown_names_get_the_likely_setting():
    warnings = unknown_names(["MAIL_HOST", "EMBEDING_PROVIDER", "PORT", "EMAIL_HOST", "WEB_CONCURRENCY", "XYZZY"])
    assert warnings == ["MAIL_HOST is not a setting and is ignored (did you mean MAIL_SERVER?)",
                        "EMBEDING_PROVIDER is not a setting and is ignored (did you mean EMBEDDING_PROVIDER?)",
                        "XYZZY is not a setting and is ignored"]


def test_start_up_with_bad_value_prints_one_line(tmp_path):
    env = {**os.environ, "QUEUE_RETRY_DELAYS": "soon", "JOBFLOW_INSTANCE_PATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "QUEUE_RETRY_DELAYS='soon'" in lines[0]


def test_readme_settings_table_is_current():
    from jobflow.config import readme_table
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index("<!-- settings:start -->\n"), readme.index("<!-- settings:end -->")
    assert readme[start + len("<!-- settings:start -->\n"):end] == readme_table()


@pytest.mark.parametrize("name,minimum", [("SECRET_KEY", 32), ("ADMIN_API_TOKEN", 16)])
def test_secrets_have_a_minimum_length_named_without_the_value(name, minimum):
    short = "Zq7-" + "x" * (minimum - 5)
    with pytest.raises(ConfigError) as info:
        load_settings({name: short})
    (line,) = info.value.problems
    assert line.startswith(f"{name}=(hidden): ") and f"at least {minimum} characters" in line
    assert short not in line and "Zq7" not in line
    assert load_settings({name: short + "x"})[name] == short + "x"      # exactly the minimum
    assert load_settings({name: ""})[name] == ""                        # empty: generated in instance/


def test_start_up_with_a_short_token_prints_one_line_without_it(tmp_path):
    env = {**os.environ, "ADMIN_API_TOKEN": "short-Zq7", "JOBFLOW_INSTANCE_PATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["jobflow: cannot start: ADMIN_API_TOKEN=(hidden): too short: expected at least 16 characters "
                     "(or empty to generate one)"]
    assert "Zq7" not in result.stdout + result.stderr


def test_public_base_url_follows_host_and_port_unless_set():
    """Alert emails link to the port the app listens on (it stayed at 5001 when PORT changed)."""
    assert load_settings({})["PUBLIC_BASE_URL"] == "http://127.0.0.1:5001"
    assert load_settings({"PORT": "8080"})["PUBLIC_BASE_URL"] == "http://127.0.0.1:8080"
    assert load_settings({"PORT": "8080", "HOST": "0.0.0.0"})["PUBLIC_BASE_URL"] == "http://127.0.0.1:8080"
    assert load_settings({"HOST": "::", "PORT": "8081"})["PUBLIC_BASE_URL"] == "http://127.0.0.1:8081"
    assert load_settings({"HOST": "::1", "PORT": "8081"})["PUBLIC_BASE_URL"] == "http://[::1]:8081"
    assert load_settings({"HOST": "10.0.0.5", "PORT": "8082"})["PUBLIC_BASE_URL"] == "http://10.0.0.5:8082"
    explicit = {"PORT": "8080", "PUBLIC_BASE_URL": "https://jobs.example.com/"}
    assert load_settings(explicit)["PUBLIC_BASE_URL"] == "https://jobs.example.com"
    with pytest.raises(ConfigError, match="PUBLIC_BASE_URL='ftp://x': expected an http:// or https:// URL"):
        load_settings({"PUBLIC_BASE_URL": "ftp://x"})
    assert "\n# PUBLIC_BASE_URL=\n" in env_example()     # the default follows PORT: nothing to copy


def test_alert_email_links_follow_the_port(make_app):
    from datetime import datetime, timezone

    from jobflow.alerts.notify import render_alert_email
    app = make_app(PORT=8123)
    assert app.config["PUBLIC_BASE_URL"] == "http://127.0.0.1:8123"
    alert = {"key": "queue", "title": "Queue too long", "page": "/admin/embeddings/queue",
             "openedAt": datetime(2025, 1, 1, tzinfo=timezone.utc)}
    with app.app_context():
        _, text, html = render_alert_email(alert, "opened", datetime(2025, 1, 1, 1, tzinfo=timezone.utc), app.config)
    assert "http://127.0.0.1:8123/admin/embeddings/queue" in text and "127.0.0.1:5001" not in text + html


def test_session_lifetimes_are_settings():
    s = load_settings({})
    assert (s["SESSION_IDLE_MINUTES"], s["SESSION_MAX_HOURS"]) == (30, 12)
    assert load_settings({"SESSION_IDLE_MINUTES": "5", "SESSION_MAX_HOURS": "1"})["SESSION_IDLE_MINUTES"] == 5
    for name, value in (("SESSION_IDLE_MINUTES", "0"), ("SESSION_MAX_HOURS", "1000"), ("SESSION_IDLE_MINUTES", "1h")):
        with pytest.raises(ConfigError, match=f"^{name}="):
            load_settings({name: value})
