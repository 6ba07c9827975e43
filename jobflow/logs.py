"""Logging to stdout with timestamps, and a filter that keeps secrets out of every line."""
import logging
import re
import sys

_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+[A-Za-z0-9._\-]{6,})")


class RedactSecrets(logging.Filter):
    """Replace configured secrets and anything shaped like an API key with ***."""

    def __init__(self, secrets=()):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # No tracebacks in a running service's log: one line that names the error instead.
            exc = record.exc_info[1]
            message = f"{message} ({type(exc).__name__}: {str(exc)[:500]})"
            record.exc_info, record.exc_text = None, None
        clean = self.redact(message)
        if clean != record.msg or record.args:
            record.msg, record.args = clean, None
        return True

    def redact(self, text: str) -> str:
        """The text with secrets replaced by ***."""
        clean = _KEY_PATTERN.sub("***", text)
        for secret in self.secrets:
            clean = clean.replace(secret, "***")
        return clean


def setup_logging(settings: dict) -> None:
    """Log to stdout, one line per record with a UTC timestamp, secrets redacted."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_jobflow", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler._jobflow = True
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
                                  "%Y-%m-%dT%H:%M:%S%z")
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets([settings.get(n) for n in ("OPENAI_API_KEY", "ADMIN_API_TOKEN",
                                                                "MAIL_PASSWORD", "SECRET_KEY")]))
    root.addHandler(handler)
    root.setLevel(settings.get("LOG_LEVEL", "INFO").upper())
    debug_any = any(settings.get(n) for n in ("DEBUG_EMBEDDINGS", "DEBUG_WORKER", "DEBUG_QUEUE"))
    for name, flag in (("jobflow.embeddings", "DEBUG_EMBEDDINGS"), ("jobflow.worker", "DEBUG_WORKER"),
                       ("jobflow.queue", "DEBUG_QUEUE")):
        logging.getLogger(name).setLevel(logging.DEBUG if settings.get(flag) else logging.INFO)
    if debug_any:
        root.setLevel(min(root.level, logging.INFO))
    for noisy in ("pymongo", "httpx", "httpx2", "httpcore", "openai", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # "skipped: maximum number of running instances" is how a long drain looks; not worth a line.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
