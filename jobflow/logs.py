"""Logging to stdout with timestamps, and a filter that keeps secrets out of every line.

``LOG_FORMAT=text`` writes one line per event; ``LOG_FORMAT=json`` one JSON object per line (time, level,
logger, process, message) for log shippers. Both go through the same filter: the values of every secret
setting (the settings table's ``secret`` flags), anything shaped like an API key or a Bearer token, and the
password of any ``mongodb://`` URI become ``***``, and a record's traceback becomes one line naming the error.
"""
import atexit
import logging
import re
import sys
from urllib.parse import unquote, urlsplit

from pythonjsonlogger.json import JsonFormatter

from jobflow.config import SECRET_NAMES

_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+[A-Za-z0-9._\-]{6,})")
# The password of a mongodb:// or mongodb+srv:// URI: user:PASSWORD@host (a literal @ in it must be %40).
_URI_PASSWORD = re.compile(r"(mongodb(?:\+srv)?://[^:@/\s]*:)[^@\s]+(@)", re.IGNORECASE)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"

# How a long drain looks: the scheduler skips a run while the previous one still works. Not worth a line;
# every other scheduler warning (a missed run, say) is.
_SCHEDULER_NOISE = "skipped: maximum number of running instances reached"


# Warnings of start-up (create_app) from before setup_logging installed the handler, held for it.
_held: list[logging.LogRecord] = []


def warn_early(logger: logging.Logger, msg: str, *args) -> None:
    """A start-up warning: logged now when the root logger has a handler, else held until setup_logging.

    So it gets the configured format (text or JSON) and redaction; a process that never sets up logging (a
    short command) still writes it, to stderr, when it exits.
    """
    if logging.getLogger().handlers:
        logger.warning(msg, *args)
        return
    if not _held:
        atexit.register(_release_held)
    _held.append(logger.makeRecord(logger.name, logging.WARNING, __file__, 0, msg, args, None))


def _release_held() -> None:
    while _held:
        record = _held.pop(0)
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def brief(exc: BaseException, limit: int = 300) -> str:
    """An error in one short line: a bulk write's first error without the documents it carried."""
    details = getattr(exc, "details", None)
    errors = details.get("writeErrors") if isinstance(details, dict) else None
    if errors:
        text = f"{len(errors)} write error(s), the first: {errors[0].get('errmsg', '')}"
    else:
        text = str(exc).split(", full error:")[0] or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def secret_values(settings: dict) -> list[str]:
    """The values to redact: every setting marked secret, and the password inside MONGODB_URI."""
    values = [str(settings.get(name) or "") for name in sorted(SECRET_NAMES)]
    uri = settings.get("MONGODB_URI") or ""
    try:
        password = urlsplit(uri).password if uri else None
    except ValueError:
        password = None
    if password:
        values += [password, unquote(password)]
    return values


class RedactSecrets(logging.Filter):
    """Replace configured secrets, URI passwords and anything shaped like an API key with ***."""

    def __init__(self, secrets=()):
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # No tracebacks in a running service's log: one line that names the error instead.
            exc = record.exc_info[1]
            message = f"{message} ({type(exc).__name__}: {str(exc)[:500]})"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        clean = self.redact(message)
        if clean != record.msg or record.args:
            record.msg, record.args = clean, None
        return True

    def redact(self, text: str) -> str:
        """The text with secrets replaced by ***."""
        clean = _URI_PASSWORD.sub(r"\1***\2", text)
        clean = _KEY_PATTERN.sub("***", clean)
        for secret in self.secrets:
            clean = clean.replace(secret, "***")
        return clean


class QuietScheduler(logging.Filter):
    """Drop APScheduler's "skipped: maximum number of running instances reached"; let its other lines through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("apscheduler") and _SCHEDULER_NOISE in record.getMessage())


class JsonLines(JsonFormatter):
    """One JSON object per record with exactly: time, level, logger, process, message."""

    def __init__(self):
        super().__init__(datefmt=DATE_FORMAT)

    def add_fields(self, log_data, record: logging.LogRecord, message_dict) -> None:
        log_data["time"] = self.formatTime(record, self.datefmt)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["process"] = record.process
        log_data["message"] = record.getMessage()


def formatter(settings: dict) -> logging.Formatter:
    """The formatter of LOG_FORMAT: text lines or JSON lines."""
    if str(settings.get("LOG_FORMAT", "text")).lower() == "json":
        return JsonLines()
    return logging.Formatter(TEXT_FORMAT, DATE_FORMAT)


def style_handler(handler: logging.Handler, settings: dict, reformat: bool = True) -> logging.Handler:
    """Give ``handler`` the redaction filter (once) and, with ``reformat`` or LOG_FORMAT=json, our format."""
    if reformat or str(settings.get("LOG_FORMAT", "text")).lower() == "json":
        handler.setFormatter(formatter(settings))
    for existing in [f for f in handler.filters if isinstance(f, (RedactSecrets, QuietScheduler))]:
        handler.removeFilter(existing)
    handler.addFilter(RedactSecrets(secret_values(settings)))
    handler.addFilter(QuietScheduler())
    return handler


def setup_logging(settings: dict) -> None:
    """Log to stdout, one line (text or JSON) per record with a timestamp, secrets redacted."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_jobflow", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler._jobflow = True
    style_handler(handler, settings)
    root.addHandler(handler)
    root.setLevel(settings.get("LOG_LEVEL", "INFO").upper())
    debug_any = any(settings.get(n) for n in ("DEBUG_EMBEDDINGS", "DEBUG_WORKER", "DEBUG_QUEUE"))
    for name, flag in (("jobflow.embeddings", "DEBUG_EMBEDDINGS"), ("jobflow.worker", "DEBUG_WORKER"),
                       ("jobflow.queue", "DEBUG_QUEUE")):
        logging.getLogger(name).setLevel(logging.DEBUG if settings.get(flag) else logging.INFO)
    if debug_any:
        root.setLevel(min(root.level, logging.INFO))
    for noisy in ("pymongo", "httpx", "httpx2", "httpcore", "openai", "werkzeug", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _release_held()
