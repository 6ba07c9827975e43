"""A job's embedded text, built in one place, and its hash."""
import hashlib
import html
import re

_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"[ \t\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")

TEXT_FIELDS = ("title", "company", "category", "location", "description")


def strip_markup(text: str) -> str:
    """Plain text from HTML or text: tags and scripts removed, entities decoded, spaces tidied."""
    text = _TAGS.sub(" ", text or "")
    text = html.unescape(text).replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def job_text(job) -> str:
    """The text a job's embedding is made from: title, company, category, location, description."""
    get = job.get if isinstance(job, dict) else (lambda name, default=None: getattr(job, name, default))
    parts = []
    for label, name in (("Title", "title"), ("Company", "company"), ("Category", "category"),
                        ("Location", "location")):
        value = strip_markup(get(name) or "")
        if value:
            parts.append(f"{label}: {value}")
    description = strip_markup(get("description") or "")
    if description:
        parts.append("")
        parts.append(description)
    return "\n".join(parts)


def text_hash(text: str) -> str:
    """SHA-256 of the embedded text (hex)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
