"""Every setting of JobFlow Similar, parsed and validated once at start-up.

The table below is the single source of truth: it feeds ``load_settings``,
the settings page (secrets masked) and ``.env.example``. Durations keep the
seed's units (milliseconds) and names so an existing ``.env`` works as is.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable


class ConfigError(ValueError):
    """Settings with values that cannot be used: ``problems`` holds one line for each, naming it."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _int(minimum: int = 0, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and {maximum}" if maximum is not None else ""
            raise ValueError(f"expected a whole number between {minimum}{upper}" if upper
                             else f"expected a whole number of at least {minimum}")
        return value
    return parse


def _fraction(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a fraction between 0 and 1, such as 0.85") from None
    if not 0 < value <= 1:
        raise ValueError("expected a fraction between 0 and 1, such as 0.85")
    return value


def _score(raw: str) -> float | None:
    if not raw.strip():
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a cosine score between -1 and 1, such as 0.7") from None
    if not -1 <= value <= 1:
        raise ValueError("expected a cosine score between -1 and 1, such as 0.7")
    return value


def _ms_list(raw: str) -> list[int]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise ValueError("expected comma-separated milliseconds, such as 60000,300000,900000")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError("expected comma-separated milliseconds, such as 60000,300000,900000") from None
    if any(v < 0 for v in values):
        raise ValueError("expected non-negative milliseconds")
    return values


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError("expected one of " + ", ".join(options))
        return value
    return parse


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Empty is None (decided later from other settings), anything else is ``parse``d."""
    return lambda raw: parse(raw) if raw.strip() else None


def _text(raw: str) -> str:
    return raw.strip()


def _email(raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
        raise ValueError("expected an email address")
    return value


def _emails(raw: str) -> list[str]:
    return [_email(p) for p in raw.split(",") if p.strip()]


def _origins(raw: str) -> list[str]:
    return [p.strip().rstrip("/") for p in raw.split(",") if p.strip()]


def _mongodb_uri(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("mongodb://", "mongodb+srv://")):
        raise ValueError("expected a mongodb:// or mongodb+srv:// URI")
    return value


def _secret(minimum: int) -> Callable[[str], str]:
    """A secret of at least ``minimum`` characters, or empty (generated); the error never shows the value."""
    def parse(raw: str) -> str:
        value = raw.strip()
        if value and len(value) < minimum:
            raise ValueError(f"too short: expected at least {minimum} characters (or empty to generate one)")
        return value
    return parse


def _share(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a share between 0 and 1, such as 0.05") from None
    if not 0 <= value <= 1:
        raise ValueError("expected a share between 0 and 1, such as 0.05")
    return value


# The job fields the product reads from a board's own collection (JOBS_FIELD_MAP names where each one is).
SOURCE_FIELDS = ("title", "description", "company", "location", "category", "status", "language", "updatedAt",
                 "createdAt", "employmentType", "salaryRange", "externalId")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")


def _collection(raw: str) -> str:
    value = raw.strip()
    if value and (value.startswith("system.") or "$" in value or "\0" in value or len(value) > 120):
        raise ValueError("expected a collection name (no $, not system.*)")
    return value


def _field_map(raw: str) -> dict[str, str]:
    """``title=headline,company=employer.name``: where each field the product reads is in the board's documents."""
    mapping = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, path = (x.strip() for x in part.partition("="))
        if not sep or not path:
            raise ValueError(f"{part!r}: expected field=path, such as title=headline")
        if name not in SOURCE_FIELDS:
            raise ValueError(f"{name!r} is not a field the product reads (one of {', '.join(SOURCE_FIELDS)})")
        if not _PATH.fullmatch(path):
            raise ValueError(f"{path!r}: expected a field name or a dotted path, such as employer.name")
        mapping[name] = path
    return mapping


def _values(raw: str) -> list[str]:
    values = [p.strip() for p in raw.split(",") if p.strip()]
    if not values:
        raise ValueError("expected at least one value, comma-separated")
    return values


def _base_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if value and not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", value):
        raise ValueError("expected an http:// or https:// URL, such as https://jobs.example.com")
    return value


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False
    group: str = "General"


SETTINGS: list[Setting] = [
    # Embedding provider
    Setting("EMBEDDING_PROVIDER", "", _choice("", "openai", "local"),
            "openai or local; empty = openai when OPENAI_API_KEY is set, else the bundled local model", group="Embeddings"),
    Setting("OPENAI_API_KEY", "", _text, "OpenAI (or compatible) API key", secret=True, group="Embeddings"),
    Setting("OPENAI_EMBEDDING_MODEL", "text-embedding-3-small", _text, "embedding model name", group="Embeddings"),
    Setting("OPENAI_API_TIMEOUT", "30000", _int(100), "provider call timeout, ms", group="Embeddings"),
    Setting("OPENAI_BASE_URL", "", _text, "base URL of an OpenAI-compatible server; empty = api.openai.com", group="Embeddings"),
    # Worker
    Setting("EMBEDDING_WORKER_ENABLED", "true", _bool, "claim and embed queue items; false = a worker claims nothing but still checks alerts and records metrics", group="Worker"),
    Setting("EMBEDDING_WORKER_INTERVAL", "5000", _int(100), "queue poll interval when idle, ms", group="Worker"),
    Setting("EMBEDDING_MAX_CONCURRENT", "3", _int(1, 64), "provider calls in flight at once", group="Worker"),
    Setting("WORKER_YIELD_LATENCY", "30", _int(0, 10000), "a draining worker times one read by _id before each write command and, when it took longer than this, waits twice that long so the API's reads catch up (0 = never wait), ms", group="Worker"),
    Setting("EMBEDDING_BATCH_SIZE", "500", _int(1, 100000), "rows per block when recomputing similarity", group="Worker"),
    # Queue
    Setting("QUEUE_MAX_ATTEMPTS", "3", _int(1, 100), "attempts before an item is failed", group="Queue"),
    Setting("QUEUE_RETRY_DELAYS", "60000,300000,900000", _ms_list, "wait before each retry, ms", group="Queue"),
    Setting("QUEUE_STUCK_TIMEOUT", "600000", _int(1000), "an item held this long by a dead worker (3x: by any) returns to pending, ms", group="Queue"),
    Setting("QUEUE_CLEANUP_DAYS", "7", _int(1, 3650), "finished queue items are deleted after this many days", group="Queue"),
    # Worker health
    Setting("WORKER_HEARTBEAT_INTERVAL", "60000", _int(100), "worker heartbeat period, ms", group="Worker health"),
    Setting("WORKER_DEAD_THRESHOLD", "180000", _int(100), "a worker without heartbeat this long is dead, ms", group="Worker health"),
    Setting("WORKER_GRACEFUL_SHUTDOWN_TIMEOUT", "30000", _int(0), "time to finish in-flight work on SIGTERM; at its end a provider call still out is abandoned, its items go back (attempt refunded) and the process exits, ms", group="Worker health"),
    Setting("WORKER_MEMORY_THRESHOLD", "0.85", _fraction, "pause claiming above this share of available memory", group="Worker health"),
    Setting("WORKER_PAUSE_ON_HIGH_MEMORY", "true", _bool, "enable the memory pause", group="Worker health"),
    # Change capture
    Setting("CHANGE_CAPTURE", "auto", _choice("auto", "stream", "poll", "off"), "how jobs written by other applications are noticed: auto (the change stream where the database has one, else polling updatedAt), stream, poll, or off (only /api/jobs writes)", group="Change capture"),
    Setting("CHANGE_CAPTURE_LEASE", "15000", _int(3000), "one worker at a time captures changes; one silent this long hands over to another, ms", group="Change capture"),
    Setting("CHANGE_CAPTURE_SWEEP_INTERVAL", "3600000", _int(60000), "in poll mode, every job is compared by text hash and status this often (writers that leave updatedAt alone), ms", group="Change capture"),
    Setting("JOBS_SOURCE_COLLECTION", "", _collection, "the board's own collection of jobs, when it is not the product's jobs collection in the product's shape: capture follows it and keeps jobs as the product's copy, fields mapped by JOBS_FIELD_MAP (README, Existing boards); empty = the board writes jobs itself", group="Change capture"),
    Setting("JOBS_FIELD_MAP", "", _field_map, "where the product's fields are in JOBS_SOURCE_COLLECTION's documents, comma-separated field=path (title=headline,company=employer.name,updatedAt=modified); a field not named keeps its own name", group="Change capture"),
    Setting("JOBS_ACTIVE_STATUSES", "active", _values, "the status values of JOBS_SOURCE_COLLECTION that mean a job is open (comma-separated); a job without a status is open, any other value closes it", group="Change capture"),
    Setting("ALERT_CAPTURE_LAG", "60000", _int(1000), "alert (and health degraded) when change capture is down or further behind than this, ms", group="Change capture"),
    # Read path
    Setting("READ_MODEL", "true", _bool, "each web process holds every active job's card and list in memory and answers /similar, an active job's JSON and its page from it, also while the database does not answer (README, The read path); false = every answer reads the database", group="Read path"),
    # Similarity
    Setting("SIMILARITY_TOP_N", "10", _int(1, 200), "similar jobs kept per job", group="Similarity"),
    Setting("SIMILARITY_LANGUAGE_BALANCE", "true", _bool, "correct each language's vectors by its own statistics so lists cross languages (README, Similarity quality); the same in every process", group="Similarity"),
    Setting("SIMILARITY_MIN_SCORE", "", _score, "minimum cosine score; empty = the provider's calibrated default (with or without language balance)", group="Similarity"),
    Setting("SIMILARITY_FLUSH_INTERVAL", "10000", _int(0, 600000), "while a backlog drains, the lists it changes are written this often (and whenever the queue is empty): a list shows a new job within this plus one batch; longer writes each list fewer times (less database work during a drain, so faster reads), ms", group="Similarity"),
    Setting("SIMILARITY_RECOMPUTE_INTERVAL", "604800000", _int(60000), "full recompute period, ms", group="Similarity"),
    # Debugging
    Setting("DEBUG_EMBEDDINGS", "true", _bool, "debug logs of the embedding provider", group="Debugging"),
    Setting("DEBUG_WORKER", "true", _bool, "debug logs of the worker", group="Debugging"),
    Setting("DEBUG_QUEUE", "true", _bool, "debug logs of the queue", group="Debugging"),
    Setting("LOG_LEVEL", "INFO", _choice("debug", "info", "warning", "error"), "log level", group="Debugging"),
    Setting("LOG_FORMAT", "text", _choice("text", "json"), "text (one line per event) or json (one JSON object per line, for log shippers)", group="Debugging"),
    # Alerts and mail
    Setting("ALERT_EMAIL_ENABLED", "false", _bool, "send alert emails", group="Alerts"),
    Setting("ALERT_EMAIL_TO", "admin@example.com", _emails, "alert recipients, comma-separated", group="Alerts"),
    Setting("ALERT_EMAIL_FROM", "noreply@example.com", _email, "alert sender", group="Alerts"),
    Setting("ALERT_THRESHOLD_FAILURES", "10", _int(1), "alert when failures in the last hour exceed this", group="Alerts"),
    Setting("ALERT_THRESHOLD_QUEUE_SIZE", "100", _int(1), "alert (and health degraded) when pending items exceed this", group="Alerts"),
    Setting("ALERT_THRESHOLD_FAILED_ITEMS", "50", _int(1), "health degraded (and a dashboard banner) when failed queue items reach this", group="Alerts"),
    Setting("ALERT_CHECK_INTERVAL", "60000", _int(1000), "how often a worker checks the alert rules (one process at a time), ms", group="Alerts"),
    Setting("MAIL_SERVER", "", _text, "SMTP host (EMAIL_HOST is accepted too)", group="Alerts"),
    Setting("MAIL_PORT", "", _optional(_int(1, 65535)), "SMTP port (EMAIL_PORT is accepted too); empty = 587", group="Alerts"),
    Setting("MAIL_USERNAME", "", _text, "SMTP user (EMAIL_USER is accepted too)", group="Alerts"),
    Setting("MAIL_PASSWORD", "", _text, "SMTP password (EMAIL_PASS is accepted too)", secret=True, group="Alerts"),
    Setting("MAIL_USE_TLS", "", _optional(_bool), "STARTTLS; empty = on for port 587", group="Alerts"),
    Setting("MAIL_TIMEOUT", "10000", _int(100), "SMTP connection and reply timeout, ms", group="Alerts"),
    Setting("ALERT_REMINDER_INTERVAL", "3600000", _int(1000), "while an alert stays open, a reminder email at most this often, ms", group="Alerts"),
    Setting("ALERT_COVERAGE_DROP", "0.05", _share, "alert when embedding coverage of active jobs fell by more than this share within the last hour", group="Alerts"),
    Setting("ALERT_COVERAGE_MIN", "0", _share, "alert when embedding coverage of active jobs is below this share; 0 = off (0.95 suits a migrated board)", group="Alerts"),
    Setting("PUBLIC_BASE_URL", "", _base_url, "the dashboard's address as admins reach it, for links in alert emails; empty = http://HOST:PORT (127.0.0.1 when HOST is 0.0.0.0 or ::)", group="Alerts"),
    # Database and web
    Setting("MONGODB_URI", "", _mongodb_uri, "MongoDB URI with database name; empty = embedded SecantusDB under instance/", secret=True, group="Web and database"),
    Setting("PORT", "5001", _int(1, 65535), "HTTP port", group="Web and database"),
    Setting("HOST", "127.0.0.1", _text, "address python app.py and gunicorn listen on; 0.0.0.0 = every interface (put a reverse proxy with TLS in front)", group="Web and database"),
    Setting("TRUSTED_PROXIES", "0", _int(0, 10), "reverse proxies in front of the app whose X-Forwarded-For/-Proto/-Host are trusted (0 = none)", group="Web and database"),
    Setting("SESSION_COOKIE_SECURE", "", _choice("", "true", "false"), "dashboard cookies over HTTPS only, and HSTS; empty = when PUBLIC_BASE_URL is https", group="Web and database"),
    Setting("SESSION_IDLE_MINUTES", "30", _int(1, 1440), "a dashboard session unused this long is signed out (the live regions of a visible page keep it in use)", group="Web and database"),
    Setting("SESSION_MAX_HOURS", "12", _int(1, 720), "a dashboard session ends this long after its sign-in, in use or not", group="Web and database"),
    Setting("SECRET_KEY", "", _secret(32), "session signing key, at least 32 characters; empty = generated once and kept in instance/secret_key", secret=True, group="Web and database"),
    Setting("ADMIN_API_TOKEN", "", _secret(16), "Bearer token for job writes and the admin API, at least 16 characters; empty = generated once and kept in instance/api_token", secret=True, group="Web and database"),
    Setting("API_MAX_BODY_BYTES", "1048576", _int(1024), "largest accepted request body, bytes", group="Web and database"),
    Setting("CORS_ORIGINS", "", _origins, "origins allowed to fetch the public JSON API, comma-separated; * = any", group="Web and database"),
    Setting("METRICS_RETENTION_DAYS", "14", _int(1, 3650), "per-minute dashboard samples are kept this many days", group="Web and database"),
    Setting("METRICS_PUBLIC", "false", _bool, "serve /metrics without the API token", group="Web and database"),
    Setting("DEMO_DATA", "true", _bool, "load the demo postings on first run when the jobs collection is empty", group="Web and database"),
]

_ALIASES = {"MAIL_SERVER": "EMAIL_HOST", "MAIL_PORT": "EMAIL_PORT",
            "MAIL_USERNAME": "EMAIL_USER", "MAIL_PASSWORD": "EMAIL_PASS"}

SECRET_NAMES = frozenset(s.name for s in SETTINGS if s.secret)


def load_settings(environ: dict[str, str] | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parse every setting from ``environ`` (default ``os.environ``); raise ConfigError naming every bad one."""
    env = dict(os.environ if environ is None else environ)
    overrides = overrides or {}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        if setting.name in overrides:
            values[setting.name] = overrides[setting.name]
            continue
        raw = env.get(setting.name)
        if raw is None and setting.name in _ALIASES:
            raw = env.get(_ALIASES[setting.name])
        if raw is None:
            raw = setting.default
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            shown = "(hidden)" if setting.secret else repr(raw)
            problems.append(f"{setting.name}={shown}: {exc}")
    if not problems:
        problems += _derive(values)
    if problems:
        raise ConfigError(problems)
    return values


def _derive(values: dict[str, Any]) -> list[str]:
    """Fill the settings that follow from others; the problems of combinations."""
    problems = []
    if not values["EMBEDDING_PROVIDER"]:
        values["EMBEDDING_PROVIDER"] = "openai" if values["OPENAI_API_KEY"] else "local"
    if values["EMBEDDING_PROVIDER"] == "openai" and not values["OPENAI_API_KEY"]:
        problems.append("OPENAI_API_KEY: required when EMBEDDING_PROVIDER=openai")
    if values["MAIL_PORT"] in ("", None):
        values["MAIL_PORT"] = 587
    if values["MAIL_USE_TLS"] in ("", None):
        values["MAIL_USE_TLS"] = values["MAIL_PORT"] == 587
    values["MAIL_DEFAULT_SENDER"] = values["ALERT_EMAIL_FROM"]
    if not values["PUBLIC_BASE_URL"]:   # where this machine reaches the app; loopback when it listens on every interface
        host = values["HOST"].strip("[]") if values["HOST"].strip("[]") not in ("", "0.0.0.0", "::") else "127.0.0.1"
        values["PUBLIC_BASE_URL"] = f"http://{f'[{host}]' if ':' in host else host}:{values['PORT']}"
    if values["WORKER_DEAD_THRESHOLD"] <= values["WORKER_HEARTBEAT_INTERVAL"]:
        problems.append("WORKER_DEAD_THRESHOLD: must be longer than WORKER_HEARTBEAT_INTERVAL")
    if values["JOBS_SOURCE_COLLECTION"] == "jobs":
        problems.append("JOBS_SOURCE_COLLECTION=jobs: that is the product's own collection; leave it empty when the "
                        "board writes jobs in the product's shape")
    elif not values["JOBS_SOURCE_COLLECTION"]:
        if values["JOBS_FIELD_MAP"]:
            problems.append("JOBS_FIELD_MAP: needs JOBS_SOURCE_COLLECTION (the product's own jobs collection keeps "
                            "its own field names)")
        if values["JOBS_ACTIVE_STATUSES"] != ["active"]:
            problems.append("JOBS_ACTIVE_STATUSES: needs JOBS_SOURCE_COLLECTION (in the jobs collection an open job's "
                            "status is active)")
    return problems


# Names a .env may hold that are not settings of the table: read by gunicorn.conf.py, the commands or Flask.
OTHER_NAMES = frozenset({"WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_TIMEOUT",
                         "GUNICORN_GRACEFUL_TIMEOUT", "JOBFLOW_INSTANCE_PATH", "DRY_RUN", "FLASK_APP", "FLASK_DEBUG",
                         "FLASK_RUN_PORT", "FLASK_RUN_HOST", "NODE_ENV"})


def unknown_names(names) -> list[str]:
    """A warning for each name that is no setting, with the likely setting when one is close."""
    import difflib
    known = [s.name for s in SETTINGS] + list(_ALIASES.values()) + sorted(OTHER_NAMES)
    canonical = {alias: setting for setting, alias in _ALIASES.items()}
    warnings = []
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean {canonical.get(close[0], close[0])}?)" if close else ""
        warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings


def masked(values: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(group, name, shown value, help) for every setting, secrets masked."""
    rows = []
    for setting in SETTINGS:
        value = values.get(setting.name)
        if setting.secret:
            shown = "(set)" if value else "(not set)"
        elif isinstance(value, list):
            shown = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            shown = ",".join(f"{k}={v}" for k, v in value.items())
        else:
            shown = "" if value is None else str(value)
        rows.append((setting.group, setting.name, shown, setting.help))
    return rows


def env_example() -> str:
    """The text of ``.env.example``: every setting with its default and a one-line comment."""
    lines = ["# JobFlow Similar settings. Copy to .env, then uncomment and change the lines you need;",
             "# a commented line is the default.", ""]
    group = None
    for setting in SETTINGS:
        if setting.group != group:
            group = setting.group
            lines += ["", f"# --- {group} ---"] if len(lines) > 3 else [f"# --- {group} ---"]
        lines.append(f"# {setting.help}")
        lines.append(f"# {setting.name}={setting.default}")
    return "\n".join(lines) + "\n"


def readme_table() -> str:
    """The README's configuration table (kept current by a test)."""
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        default = f"`{setting.default}`" if setting.default else "(empty)"
        rows.append(f"| `{setting.name}` | {default} | {setting.help} |")
    return "\n".join(rows) + "\n"
