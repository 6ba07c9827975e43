"""Query-string values of the API, parsed or refused with a 400 that names them."""
from flask import request

from jobflow.web.errors import APIError


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """The whole number ``name`` from the query string (``default`` when absent), or a 400 naming it."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise APIError(400, "invalid_input", f"{name} must be a whole number.", {name: "expected a whole number"})
    if not low <= value <= high:
        raise APIError(400, "invalid_input", f"{name} must be between {low} and {high}.",
                       {name: f"expected {low} to {high}"})
    return value


def language_arg(name: str = "language") -> str | None:
    """A language code from the query string (``en``, ``sq``, ``en-GB``, ``eng``, ``English``), None when absent,
    or a 400 naming the parameter and the value when it names no language a job can have."""
    from jobflow.embeddings.language import KNOWN_LANGUAGES, normalise
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    code = normalise(raw)
    if code not in KNOWN_LANGUAGES:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise APIError(400, "invalid_input", f"{name}={shown!r} names no language; send a code such as en or sq.",
                       {name: "expected a language code such as en or sq"})
    return code
