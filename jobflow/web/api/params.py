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


# The languages a job can have: every ISO 639-1 code (a ``language`` field, also as en-GB, eng or English) and
# the codes py3langid 0.4.0 gives a text without one (its 3-letter codes below; the rest are ISO 639-1).
KNOWN_LANGUAGES = frozenset((
    "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el "
    "en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu "
    "ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na "
    "nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so "
    "sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu "
    "ace ary arz bcl crh ext fuv gcf gcr gom grc gug guw hbo kab kik lij ltg nso pcm sdh uzs vec wuu yue zxx"
).split())


def language_arg(name: str = "language") -> str | None:
    """A language code from the query string (``en``, ``sq``, ``en-GB``, ``eng``, ``English``), None when absent,
    or a 400 naming the parameter and the value when it names no language a job can have."""
    from jobflow.embeddings.language import normalise
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    code = normalise(raw)
    if code not in KNOWN_LANGUAGES:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise APIError(400, "invalid_input", f"{name}={shown!r} names no language; send a code such as en or sq.",
                       {name: "expected a language code such as en or sq"})
    return code
