"""Reading and writing a model's language correction (``similaritycorrections``).

A new version's language documents are written first, then the header is
switched to it, then older versions are deleted: a reader that finds the
header always finds its documents (or, in the instant of a switch, tries again
at its next sync).
"""
from __future__ import annotations

import numpy as np
from bson import Binary

from jobflow.embeddings import text
from jobflow.models import CorrectionHeader
from jobflow.similarity.correction import LanguageCorrection, LanguageTransform, Spectral
from jobflow.timeutil import utcnow


def _coll():
    return CorrectionHeader._get_collection()


def _bytes(array: np.ndarray) -> Binary:
    return Binary(np.ascontiguousarray(array, dtype="<f4").tobytes())


def _array(value, shape=None) -> np.ndarray:
    array = np.frombuffer(bytes(value), dtype="<f4").astype(np.float64)
    return array.reshape(shape) if shape else array


def key(model: str) -> str:
    """What a model's correction is kept under: the model, and the recipe once it is not the first one (a
    correction fitted on one recipe's vectors is no use on another's)."""
    return model if text.RECIPE == text.LEGACY_RECIPE else f"{model} {text.RECIPE}"


def header(model: str) -> dict:
    """The model's header document ({} before the first fit)."""
    return _coll().find_one({"_id": key(model)}) or {}


def load(model: str) -> LanguageCorrection:
    """The version in force for ``model`` (the identity before the first fit)."""
    head = header(model)
    version = int(head.get("version") or 0)
    if not version:
        return LanguageCorrection()
    transforms = {}
    for doc in _coll().find({"model": key(model), "version": version}):
        dims = int(doc["dimensions"])
        scales = _array(doc["scales"])
        transforms[doc["language"]] = LanguageTransform(
            doc["language"], int(doc["count"]), float(doc["shrinkage"]), _array(doc["mean"]),
            Spectral(_array(doc["basis"], (len(scales), dims)), scales, float(doc["restScale"])))
    if set(transforms) != set(head.get("counts") or {}):
        raise LookupError(f"correction version {version} of {model} is incomplete")
    return LanguageCorrection(version, transforms)


def save(model: str, correction: LanguageCorrection, jobs: int, movement: float) -> None:
    """Write a new version and put it in force; older versions are deleted."""
    version = correction.version
    model = key(model)
    for language, t in correction.transforms.items():
        _coll().replace_one({"_id": f"{model}|{version}|{language}"}, {
            "model": model, "version": version, "language": language, "count": t.count,
            "shrinkage": t.shrinkage, "dimensions": int(t.mean.shape[0]), "mean": _bytes(t.mean),
            "basis": _bytes(t.shape.basis), "scales": _bytes(t.shape.scales), "restScale": t.shape.rest}, upsert=True)
    _coll().update_one({"_id": model}, {"$set": {
        "version": version, "fittedAt": utcnow(), "jobs": int(jobs), "counts": correction.counts(),
        "movement": float(movement)}}, upsert=True)
    _coll().delete_many({"model": model, "version": {"$ne": version}})


def lists_computed_with(model: str, version: int) -> None:
    """Record that every stored list was computed with ``version`` (0: no correction)."""
    _coll().update_one({"_id": key(model)}, {"$set": {"listsVersion": int(version)}}, upsert=True)
