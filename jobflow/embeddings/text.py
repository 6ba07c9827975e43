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
    """The job's title: what a person reads first, and what decides most of a job's neighbours."""
    get = job.get if isinstance(job, dict) else (lambda name, default=None: getattr(job, name, default))
    return strip_markup(get("title") or "")


def full_text(job) -> str:
    """What the model reads of a whole job: "title. description", markup stripped, no field labels.

    The labelled form ("Title: ..", "Company: ..", "Location: ..", then the description) scored a little lower
    on postings (demo precision@10 0.58 against 0.60, SkillSpan 0.41 against 0.42) and about the same on titles
    (issue 22, benchmarks/quality.py). The category is left out too: a job's own category in its text is what
    made the old recipe look good when scored by category, and its worth cannot be measured without that."""
    get = job.get if isinstance(job, dict) else (lambda name, default=None: getattr(job, name, default))
    title, description = strip_markup(get("title") or ""), strip_markup(get("description") or "")
    if title and description:
        return f"{title}. {description}"
    return title or description or job_text(job)


# A job is embedded as two texts, its title and its full text, and its vector is the weighted mean of the two
# unit vectors, the title weighing TITLE_WEIGHT: the full text alone lets a long description drown the role.
# Chosen with benchmarks/quality.py on postings scored by a label their text does not contain and on two
# title sets (issue 22): on the demo postings, category withheld, precision@10 0.60 at 0.4 against 0.50 for
# the full text alone (0.59 at 0.3 and 0.5); SkillSpan's role 0.42 against 0.32; a bare title is unaffected
# (both its texts are the title).
TEXTS_PER_JOB = 2
TITLE_WEIGHT = 0.4
WEIGHTS = (TITLE_WEIGHT, 1.0 - TITLE_WEIGHT)


def embedded_texts(job) -> list[str]:
    """The texts embedded for a job: [title, full text] (see ``full_text``)."""
    text = full_text(job)
    return [headline(job) or text, text]


def combine(vectors) -> np.ndarray:
    """One unit vector from the job's text vectors: the WEIGHTS-weighted mean of their unit vectors."""
    units = [np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for v in vectors]
    weights = WEIGHTS if len(units) == len(WEIGHTS) else (1.0,) * len(units)
    mean = np.sum([w * u for w, u in zip(weights, units)], axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


# How texts become a vector: stored with each embedding (``embedding.recipe``). It changes whenever the way changes;
# ``migrate-embeddings`` then finds the jobs made the old way, as it finds another model's, and the board keeps
# serving their lists until the new ones exist.
# "headline+text/2": headline "Title (Category)" and the labelled full text, averaged, e5 "passage:" (to 2026-12).
RECIPE = "title.4+title.description/query"
LEGACY_RECIPE = "headline+text/2"     # what an embedding stored without a recipe was made with
# The text hash names the text alone (``job_text``, every field the product reads), so that a new recipe is not
# taken for a changed text (which would stop the old list being served). Its salt is the first recipe's name, kept
# so that stored hashes still match.
HASH_SALT = LEGACY_RECIPE


def text_hash(text: str) -> str:
    """SHA-256 of the job's embedded text (hex): equal hashes mean an equal text."""
    return hashlib.sha256(f"{HASH_SALT}\n{text}".encode("utf-8")).hexdigest()


def recipe_of(embedding: dict | None) -> str:
    """The recipe a stored embedding was made with."""
    return (embedding.get("recipe") if isinstance(embedding, dict) else None) or LEGACY_RECIPE


def older_recipe_query():
    """A query value of ``embedding.recipe`` that matches embeddings made with another recipe than the current."""
    return {"$nin": [RECIPE, None]} if RECIPE == LEGACY_RECIPE else {"$ne": RECIPE}


def recipe_query():
    """A query value of ``embedding.recipe`` that matches embeddings made with the current recipe."""
    return {"$in": [RECIPE, None]} if RECIPE == LEGACY_RECIPE else RECIPE
