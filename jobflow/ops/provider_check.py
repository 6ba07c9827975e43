"""``flask test-embeddings``: the seed's seven checks and the change capture's mode, each ok or a one-line reason."""
from __future__ import annotations

from typing import Callable

import numpy as np
from bson import ObjectId

from jobflow.db import get_db
from jobflow.embeddings import ProviderError, check_vector, get_provider, min_score
from jobflow.jobs import queue
from jobflow.models import Job, QueueItem

SAMPLE_A = "Senior Software Engineer position requiring 5 years of experience in React and Node.js"
SAMPLE_B = "Junior Developer role seeking 2 years experience with JavaScript and React"
SAMPLE_C = "Registered nurse for the night shift of a hospital emergency department"


# The original specification's .env example ships OPENAI_API_KEY=sk-your-openai-api-key-here (and
# sk-your-actual-openai-api-key-here); its own test script stopped at any key starting "sk-your".
PLACEHOLDER_KEY_PREFIX = "sk-your"


class CheckFailed(Exception):
    """A check did not pass; the message is the reason."""


def is_placeholder_key(key: str | None) -> bool:
    """Whether an API key is the specification's placeholder rather than a key."""
    return bool(key) and key.strip().lower().startswith(PLACEHOLDER_KEY_PREFIX)


def placeholder_key_problem(settings) -> str | None:
    """One line naming OPENAI_API_KEY when the OpenAI provider would be called with the placeholder; else None."""
    if settings.get("EMBEDDING_PROVIDER") == "openai" and is_placeholder_key(settings.get("OPENAI_API_KEY")):
        return (f"OPENAI_API_KEY is still the placeholder of the example settings ({PLACEHOLDER_KEY_PREFIX}...), "
                "not a key: set your OpenAI API key in .env or the environment")
    return None


def _database(settings, state):
    get_db().command("ping")
    return f"connected ({Job.objects.count()} jobs)"


def _configuration(settings, state):
    if settings["EMBEDDING_PROVIDER"] == "openai":
        key = settings["OPENAI_API_KEY"]
        if not key or is_placeholder_key(key):
            raise CheckFailed("OPENAI_API_KEY is not set to a real key")
        state["provider_ready"] = True
        return f"provider openai, model {settings['OPENAI_EMBEDDING_MODEL']}, key set"
    state["provider_ready"] = True
    return "provider local (bundled multilingual-e5-small), no key needed"


def _generation(settings, state):
    if not state.get("provider_ready"):
        raise CheckFailed("skipped: the provider configuration failed, so nothing is sent to the provider")
    provider = get_provider(settings)
    try:
        batch = provider.embed([provider.prepare(t) for t in (SAMPLE_A, SAMPLE_B, SAMPLE_C)])
    except ProviderError as exc:
        raise CheckFailed(str(exc)) from None
    vectors = [check_vector(v, provider.dimensions) for v in batch.vectors]
    state["vectors"] = vectors
    return f"{len(vectors[0])} dimensions from {batch.model}"


def _similarity(settings, state):
    if "vectors" not in state:
        raise CheckFailed("skipped: no embeddings from the previous check")
    a, b, c = (v / np.linalg.norm(v) for v in state["vectors"])
    related, unrelated = float(a @ b), float(a @ c)
    if not related > unrelated:
        raise CheckFailed(f"two developer jobs scored {related:.3f}, below developer vs nurse {unrelated:.3f}")
    threshold = min_score(settings)
    kind = "language-balanced scores" if settings.get("SIMILARITY_LANGUAGE_BALANCE", True) else "raw scores"
    return (f"raw cosine: developer vs developer {related:.3f}, developer vs nurse {unrelated:.3f} "
            f"(lists use a minimum of {threshold} on {kind})")


def _queue(settings, state):
    probe = ObjectId()
    try:
        if not queue.enqueue(probe, source="test-embeddings"):
            raise CheckFailed("could not enqueue a probe item")
        item = QueueItem.objects(jobId=probe, status="pending").first()
        if item is None:
            raise CheckFailed("the probe item was not found pending")
        return "enqueue and read back work"
    finally:
        QueueItem.objects(jobId=probe).delete()


def _indexes(settings, state):
    wanted = {"jobs": {"status_1", "embedding_status_model"},
              "jobqueues": {"claim_order", "one_pending_per_job", "expire"}}
    missing = []
    for collection, names in wanted.items():
        have = set(get_db()[collection].index_information())
        missing += [f"{collection}.{n}" for n in sorted(names - have)]
    if missing:
        raise CheckFailed("missing indexes: " + ", ".join(missing) + " (start the app once to create them)")
    return "jobs and queue indexes present"


def _settings(settings, state):
    notes = ["MONGODB_URI set" if settings.get("MONGODB_URI") else "embedded database (MONGODB_URI unset)"]
    if not settings["EMBEDDING_WORKER_ENABLED"]:
        notes.append("EMBEDDING_WORKER_ENABLED=false: nothing will be embedded")
    return "; ".join(notes)


def _capture(settings, state):
    """Which change capture mode is in force, and why (the database's capabilities decide ``auto``)."""
    from pymongo.errors import OperationFailure

    from jobflow.models import CaptureState, Job
    setting = settings["CHANGE_CAPTURE"]
    if setting == "off":
        return "off (CHANGE_CAPTURE=off): only writes through /api/jobs are noticed"
    try:
        Job._get_collection().watch(max_await_time_ms=1).close()
        streams = True
    except OperationFailure:
        streams = False
    if setting == "stream" and not streams:
        raise CheckFailed("CHANGE_CAPTURE=stream, but the database offers no change streams (a standalone server); "
                          "use auto or poll")
    if setting == "poll" or not streams:
        mode = "poll: " + ("CHANGE_CAPTURE=poll" if setting == "poll" else "the database offers no change streams") \
               + "; updatedAt is polled and every job compared each CHANGE_CAPTURE_SWEEP_INTERVAL"
    else:
        mode = f"stream: the database offers change streams (CHANGE_CAPTURE={setting})"
    doc = CaptureState._get_collection().find_one({"_id": "jobs"}, {"owner": 1, "heartbeatAt": 1}) or {}
    if doc.get("owner"):
        mode += f"; worker {doc['owner']} captures"
    return mode


CHECKS: list[tuple[str, Callable]] = [
    ("database connection", _database),
    ("provider configuration", _configuration),
    ("embedding generation", _generation),
    ("cosine similarity", _similarity),
    ("queue operations", _queue),
    ("database indexes", _indexes),
    ("settings", _settings),
    ("change capture", _capture),
]


def run_checks(settings: dict, echo: Callable[[str], None]) -> bool:
    """Run every check, printing one line each; True when all passed."""
    state: dict = {}
    passed = True
    for number, (name, check) in enumerate(CHECKS, start=1):
        try:
            detail = check(settings, state)
            echo(f"[{number}/{len(CHECKS)}] {name}: ok - {detail}")
        except Exception as exc:
            passed = False
            echo(f"[{number}/{len(CHECKS)}] {name}: FAILED - {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return passed
