"""A job's language: its ``language`` field when given, otherwise detected from its text (py3langid).

The detector loads on the first job that needs it, so a board whose jobs all
carry ``language`` never loads it; a text too short or mixed to tell is ``und``.
"""
from __future__ import annotations

import re
import threading

from jobflow.embeddings.text import strip_markup

UNKNOWN = "und"
MIN_CONFIDENCE = 0.6       # below this, py3langid's normalised probability is mostly a guess on short titles
MIN_LETTERS = 20           # fewer letters than this: not worth asking
DETECT_CHARS = 2_000       # the start of the text tells the language as well as all of it

_CODE = re.compile(r"^([a-z]{2,3})(?:[-_][a-z0-9]{1,8})*$")
# Names people write in a ``language`` field instead of a code, for the languages a board is likely to have.
_NAMES = {
    "english": "en", "albanian": "sq", "shqip": "sq", "german": "de", "deutsch": "de", "french": "fr",
    "francais": "fr", "français": "fr", "italian": "it", "italiano": "it", "spanish": "es", "español": "es",
    "espanol": "es", "portuguese": "pt", "português": "pt", "dutch": "nl", "nederlands": "nl", "polish": "pl",
    "polski": "pl", "greek": "el", "turkish": "tr", "türkçe": "tr", "serbian": "sr", "srpski": "sr",
    "croatian": "hr", "hrvatski": "hr", "macedonian": "mk", "romanian": "ro", "română": "ro", "bulgarian": "bg",
    "russian": "ru", "ukrainian": "uk", "czech": "cs", "slovak": "sk", "slovenian": "sl", "hungarian": "hu",
    "swedish": "sv", "danish": "da", "norwegian": "no", "finnish": "fi", "arabic": "ar", "chinese": "zh",
    "japanese": "ja", "korean": "ko", "hindi": "hi",
}
# ISO 639-2 codes of the same languages, so "eng" and "en" are one language.
_THREE = {"eng": "en", "sqi": "sq", "alb": "sq", "deu": "de", "ger": "de", "fra": "fr", "fre": "fr", "ita": "it",
          "spa": "es", "por": "pt", "nld": "nl", "dut": "nl", "pol": "pl", "ell": "el", "gre": "el", "tur": "tr",
          "srp": "sr", "hrv": "hr", "mkd": "mk", "mac": "mk", "ron": "ro", "rum": "ro", "bul": "bg", "rus": "ru",
          "ukr": "uk", "ces": "cs", "cze": "cs", "slk": "sk", "slo": "sk", "slv": "sl", "hun": "hu", "swe": "sv",
          "dan": "da", "nor": "no", "fin": "fi", "ara": "ar", "zho": "zh", "chi": "zh", "jpn": "ja", "kor": "ko",
          "hin": "hi"}

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

_lock = threading.Lock()
_identifier = None


def normalise(value) -> str | None:
    """A language code from a ``language`` field (``"en-GB"``, ``"EN"``, ``"eng"``, ``"English"`` -> ``"en"``).

    None when the value is empty or not recognisable as a language, so that the text decides.
    """
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if not text:
        return None
    if text in _NAMES:
        return _NAMES[text]
    match = _CODE.match(text)
    if not match:
        return None
    code = match.group(1)
    if code == UNKNOWN:
        return None
    return _THREE.get(code, code)


def _get_identifier():
    global _identifier
    with _lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
            _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return _identifier


def release() -> bool:
    """Let go of the detector's model; True if it was loaded.

    A worker calls this when a drain ends: detection is needed only for jobs without a ``language``, which come
    in drains (an import, a migration), so an idle worker does not keep the model.
    """
    global _identifier
    with _lock:
        loaded, _identifier = _identifier is not None, None
    if loaded:
        import gc
        gc.collect()
    return loaded


def detect(text: str) -> str:
    """The language of a text as an ISO 639 code, or ``und`` when it is too short or unclear."""
    text = (text or "")[:DETECT_CHARS]
    if sum(ch.isalpha() for ch in text) < MIN_LETTERS:
        return UNKNOWN
    code, confidence = _get_identifier().classify(text)
    return code if confidence >= MIN_CONFIDENCE else UNKNOWN


def language_text(job) -> str:
    """What detection reads: title, category and description, without the field labels of the embedded text."""
    get = job.get if isinstance(job, dict) else (lambda name, default=None: getattr(job, name, default))
    return "\n".join(strip_markup(get(name) or "") for name in ("title", "category", "description")).strip()


def stored_language(job) -> str:
    """The language a stored job counts as (a document or its dict): its ``language`` field, else the one detected
    when it was embedded (``embedding.language``), else ``und``."""
    if isinstance(job, dict):
        given, embedding = job.get("language"), job.get("embedding") or {}
        detected = embedding.get("language")
    else:
        given, embedding = getattr(job, "language", None), getattr(job, "embedding", None)
        detected = getattr(embedding, "language", None)
    return normalise(given) or detected or UNKNOWN


def job_language(job) -> tuple[str, bool]:
    """(language, detected): the job's ``language`` field when it names one, else what its text reads as."""
    get = job.get if isinstance(job, dict) else (lambda name, default=None: getattr(job, name, default))
    given = normalise(get("language"))
    if given:
        return given, False
    return detect(language_text(job)), True
