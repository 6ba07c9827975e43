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


# How texts become a vector: stored with each embedding (``embedding.recipe``). It changes whenever the way changes;
# ``migrate-embeddings`` then finds the jobs made the old way, as it finds another model's, and the board keeps
# serving their lists until the new ones exist.
RECIPE = "headline+text/2"
LEGACY_RECIPE = "headline+text/2"     # what an embedding stored without a recipe was made with
# The text hash names the text alone, so that a new recipe is not taken for a changed text (which would stop the
# old list being served). Its salt is the first recipe's name, kept so that stored hashes still match.
HASH_SALT = "headline+text/2"


def text_hash(text: str) -> str:
    """SHA-256 of the job's embedded text (hex): equal hashes mean an equal text."""
    return hashlib.sha256(f"{HASH_SALT}\n{text}".encode("utf-8")).hexdigest()


def recipe_of(embedding: dict | None) -> str:
    """The recipe a stored embedding was made with."""
    return ((embedding or {}).get("recipe") or LEGACY_RECIPE) if isinstance(embedding, dict) else LEGACY_RECIPE


def older_recipe_query():
    """A query value of ``embedding.recipe`` that matches embeddings made with another recipe than the current."""
    return {"$nin": [RECIPE, None]} if RECIPE == LEGACY_RECIPE else {"$ne": RECIPE}


def recipe_query():
    """A query value of ``embedding.recipe`` that matches embeddings made with the current recipe."""
    return {"$in": [RECIPE, None]} if RECIPE == LEGACY_RECIPE else RECIPE
