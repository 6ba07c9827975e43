"""A job's embedded text, built in one place, and its hash."""
import hashlib
import html
import re

import numpy as np

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


def headline(job) -> str:
    """Title and category: what a person reads first, and what decides most of a job's neighbours."""
    get = job.get if isinstance(job, dict) else (lambda name, default=None: getattr(job, name, default))
    title = strip_markup(get("title") or "")
    category = strip_markup(get("category") or "")
    return f"{title} ({category})" if category else title


# A job is embedded as two texts, its headline and its full text, and the two unit vectors are averaged:
# the full text alone lets long descriptions drown the role (README, "Similarity quality").
TEXTS_PER_JOB = 2


def embedded_texts(job) -> list[str]:
    """The texts embedded for a job: [headline, full text]."""
    return [headline(job) or job_text(job), job_text(job)]


def combine(vectors) -> np.ndarray:
    """One unit vector from the job's text vectors: the mean of their unit vectors."""
    units = [np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for v in vectors]
    mean = np.mean(units, axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


# Changes whenever the way texts become a vector changes, so stored embeddings made the old way count as stale.
RECIPE = "headline+text/2"


def text_hash(text: str) -> str:
    """SHA-256 of the embedding recipe and the job's text (hex): equal hashes mean an equal embedding."""
    return hashlib.sha256(f"{RECIPE}\n{text}".encode("utf-8")).hexdigest()
