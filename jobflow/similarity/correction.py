"""Language correction of embeddings: each language's vectors re-centred and re-shaped to a common form.

A multilingual model places a text's language before its meaning, so the same
role in two languages scores below two jobs in one. Pure numpy: arrays in,
arrays out. The map and why it was chosen: RELIABILITY.md, "Design notes".
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

POOLED = "*"          # the mean of every job and the pooled shape
UNDETERMINED = "und"
MIN_JOBS = 20         # a language needs this many jobs for statistics of its own
# Each language's covariance is shrunk towards a sphere by at least MIN_SHRINKAGE (1.0 would be plain centring):
# chosen on postings and titles together (issue 22, benchmarks/quality.py). On postings the shape hardly matters
# (demo precision@10 0.60 from 0.2 to 1.0) and an outside check found plain centring a little better; on titles
# it is what crosses languages: melo_deu_mixed (300 queries) English share 0.34 at 0.65, 0.36 at 0.5, 0.38 at
# 0.35, 0.40 at 0.2, MAP@10 0.44 throughout (0.25 English share with plain centring, 100-query sample).
MIN_SHRINKAGE = 0.35
MAX_RANK = 768        # eigen-directions scaled one by one; the rest share one scale (1536-d models)
MOVEMENT_SAMPLE = 500  # jobs per language compared when measuring how far a new fit moves vectors
LW_SAMPLE = 500       # rows per language the shrinkage is estimated from
KEEP_MEAN = 0.0       # share of the common mean kept: none (0.1 and 0.25 lost on postings and titles, issue 22)
APPLY_ROWS = 1000     # rows corrected at once (bounds the float64 temporaries: about 12 MB each at 1,536-d)


def counted_languages(languages, keys) -> list[str]:
    """What a fit counts each job as: its own language, or for an undetermined one the language it is
    corrected as (``keys``), so that bare titles count towards their language's statistics."""
    return [key if lang == UNDETERMINED and key else lang for lang, key in zip(languages, keys)]


@dataclass
class Spectral:
    """A symmetric positive map in eigen form: ``scales`` along the rows of ``basis``, ``rest`` elsewhere."""
    basis: np.ndarray             # (r, d) orthonormal rows
    scales: np.ndarray            # (r,)
    rest: float

    def apply(self, rows: np.ndarray) -> np.ndarray:
        return rows * self.rest + ((rows @ self.basis.T) * (self.scales - self.rest)) @ self.basis

    def inverse(self) -> "Spectral":
        return Spectral(self.basis, 1.0 / self.scales, 1.0 / self.rest)

    @classmethod
    def power(cls, cov: np.ndarray, shrinkage: float, exponent: float) -> "Spectral":
        """((1 - a) C + a tau I) ** exponent, tau the mean eigenvalue of C."""
        d = cov.shape[0]
        tau = max(float(np.trace(cov)) / d, 1e-12)
        eigenvalues, eigenvectors = np.linalg.eigh(cov)      # ascending: reversed views, no d x d copy
        eigenvalues, eigenvectors = np.clip(eigenvalues[::-1], 0.0, None), eigenvectors[:, ::-1]
        scales = ((1 - shrinkage) * eigenvalues + shrinkage * tau) ** exponent
        rank = min(d, MAX_RANK)
        rest = float(((1 - shrinkage) * eigenvalues[rank:].mean() + shrinkage * tau) ** exponent) if rank < d \
            else float(scales[-1])
        return cls(eigenvectors[:, :rank].T.copy(), scales[:rank].copy(), rest)


@dataclass
class LanguageTransform:
    """One language's mean and ``shape``: C_l^(-1/2), which takes its cloud to a sphere. The POOLED entry holds
    the mean of every job and P^(1/2), which gives every sphere the pooled shape."""
    language: str
    count: int
    shrinkage: float
    mean: np.ndarray              # (d,)
    shape: Spectral               # C_l^(-1/2) for a language; P^(1/2) for POOLED


class Moments:
    """Count, sum and scatter of one language's unit vectors, added a block at a time (bounded memory).
    ``mean_only``: count and sum alone (the mean of every job needs no scatter)."""

    def __init__(self, language: str, dims: int, mean_only: bool = False):
        self.language = language
        self.count = 0
        self.total = np.zeros(dims)
        self.scatter = None if mean_only else np.zeros((dims, dims))
        self.sample: list[np.ndarray] = []       # the first rows, for the shrinkage

    def add(self, rows: np.ndarray) -> None:
        self.count += len(rows)
        self.total += rows.sum(axis=0)
        if self.scatter is None:
            return
        self.scatter += rows.T @ rows
        room = LW_SAMPLE - sum(len(s) for s in self.sample)
        if room > 0:
            self.sample.append(rows[:room].copy())

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count

    def finish(self) -> tuple[np.ndarray, float]:
        """(covariance, shrinkage) once every block is added; the scatter is dropped (its memory freed)."""
        cov, self.scatter = self.scatter, None       # in place: one d x d array, not three
        cov /= self.count
        cov -= np.outer(self.mean, self.mean)
        return cov, max(MIN_SHRINKAGE, _ledoit_wolf(np.vstack(self.sample) - self.mean, cov, self.count))


def _ledoit_wolf(rows: np.ndarray, cov: np.ndarray, n: int) -> float:
    """Ledoit-Wolf's shrinkage intensity towards tau * I for ``n`` vectors (estimated from centred ``rows``)."""
    d = cov.shape[0]
    tau = float(np.trace(cov)) / d
    if n < 2:
        return 1.0
    # |C - tau I|_F^2 without a d x d temporary (three of them at 1,536 dimensions were 57 MB of a refit's peak)
    cov_norm = float(np.einsum("ij,ij->", cov, cov))
    delta = (cov_norm - 2 * tau * float(np.trace(cov)) + tau * tau * d) / d
    if delta <= 0:
        return 1.0
    # sum_k ||z_k z_k^T - S||_F^2 = sum_k |z_k|^4 - 2 sum_k z_k^T S z_k + m |S|_F^2, without d x d per row
    norms = (rows ** 2).sum(axis=1)
    beta = (float((norms ** 2).sum()) - 2 * float(((rows @ cov) * rows).sum())
            + len(rows) * cov_norm) / len(rows) / d / n
    return float(min(max(beta, 0.0), delta) / delta)


@dataclass
class LanguageCorrection:
    """The fitted transforms of one model's vectors; ``version`` 0 with no transforms is the identity."""
    version: int = 0
    transforms: dict[str, LanguageTransform] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Whether anything is corrected (no fit yet, or the setting off: vectors are only normalised)."""
        return POOLED in self.transforms

    def rounded(self) -> "LanguageCorrection":
        """This correction rounded to what storing keeps (float32), so its writer computes what readers will."""
        f32 = lambda array: np.asarray(array, dtype=np.float32).astype(np.float64)
        for transform in self.transforms.values():
            transform.mean = f32(transform.mean)
            shape = transform.shape
            transform.shape = Spectral(f32(shape.basis), f32(shape.scales), float(np.float32(shape.rest)))
        return self

    def counts(self) -> dict[str, int]:
        """Jobs each language's statistics came from (``*`` = all)."""
        return {lang: t.count for lang, t in self.transforms.items()}

    def keys(self, raw: np.ndarray, languages) -> np.ndarray:
        """The transform each row is corrected with: its language's own, else the language whose mean is nearest.

        A job whose language is undetermined (a bare title) or has too few jobs for statistics of its own
        still reads as one of the fitted languages to the model (that is the trouble being corrected): the
        nearest mean names it right for 98% of melo_deu_mixed's titles. None for every row while inactive.
        """
        languages = np.asarray(list(languages), dtype=object)
        if not self.active:
            return np.full(len(languages), None, dtype=object)
        own = [lang for lang in self.transforms if lang != POOLED]
        keys = languages.copy()
        missing = np.array([lang not in own for lang in languages.tolist()], dtype=bool)
        if missing.any():
            means = np.vstack([self.transforms[lang].mean for lang in own])
            # argmin |x - m|^2 = argmax x.m - |m|^2 / 2
            nearest = np.argmax(raw[missing] @ means.T - 0.5 * (means ** 2).sum(axis=1), axis=1)
            keys[missing] = np.asarray(own, dtype=object)[nearest]
        return keys

    @staticmethod
    def _groups(keys: np.ndarray) -> list[tuple[str, np.ndarray]]:
        return [(key, np.flatnonzero(keys == key)) for key in set(keys.tolist()) if key is not None]

    def apply(self, vectors, languages) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unit corrected vectors as float32 (n, d), their lengths before normalising, the transform keys) for
        raw vectors and their jobs' languages. Worked out APPLY_ROWS at a time: the float64 temporaries of a
        whole load (5,000 x 1,536) would take half a gigabyte."""
        vectors = np.asarray(vectors)
        if vectors.ndim == 2 and len(vectors) > APPLY_ROWS:
            languages = list(languages)
            parts = [self.apply(vectors[i:i + APPLY_ROWS], languages[i:i + APPLY_ROWS])
                     for i in range(0, len(vectors), APPLY_ROWS)]
            return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))
        raw = np.asarray(vectors, dtype=np.float64)
        if raw.ndim == 1:
            raw = raw[None, :]
        raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        keys = self.keys(raw, languages)
        out = raw.copy()
        if self.active:
            pooled = self.transforms[POOLED]
            for key, rows in self._groups(keys):
                own = self.transforms[key]
                out[rows] = pooled.shape.apply(own.shape.apply(raw[rows] - own.mean)) + KEEP_MEAN * pooled.mean
        lengths = np.linalg.norm(out, axis=1)
        lengths[lengths == 0] = 1.0
        return (out / lengths[:, None]).astype(np.float32), lengths, keys

    def invert(self, units, lengths, keys) -> np.ndarray:
        """The unit raw vectors back from what ``apply`` returned (to fit again without the database)."""
        if len(units) > APPLY_ROWS:
            keys, lengths = list(keys), np.asarray(lengths)
            return np.concatenate([self.invert(units[i:i + APPLY_ROWS], lengths[i:i + APPLY_ROWS],
                                               keys[i:i + APPLY_ROWS]) for i in range(0, len(units), APPLY_ROWS)])
        mapped = np.asarray(units, dtype=np.float64) * np.asarray(lengths, dtype=np.float64)[:, None]
        out = mapped.copy()
        if self.active:
            pooled = self.transforms[POOLED]
            for key, rows in self._groups(np.asarray(list(keys), dtype=object)):
                own = self.transforms[key]
                out[rows] = own.shape.inverse().apply(pooled.shape.inverse().apply(
                    mapped[rows] - KEEP_MEAN * pooled.mean)) + own.mean
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    @classmethod
    def fit(cls, blocks: Iterable[tuple[np.ndarray, Sequence[str]]], version: int) -> "LanguageCorrection":
        """Fitted from (raw unit vectors, languages) blocks; the identity while there are fewer than
        ``MIN_JOBS`` jobs of one language."""
        everything: Moments | None = None
        per_language: dict[str, Moments] = {}
        for vectors, languages in blocks:
            raw = np.asarray(vectors, dtype=np.float64)
            if not len(raw):
                continue
            raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)
            languages = np.asarray(list(languages), dtype=object)
            everything = everything or Moments(POOLED, raw.shape[1], mean_only=True)
            everything.add(raw)
            for language in set(languages.tolist()):
                if language not in (UNDETERMINED, POOLED):
                    per_language.setdefault(language, Moments(language, raw.shape[1])).add(raw[languages == language])
        own = {lang: m for lang, m in sorted(per_language.items()) if m.count >= MIN_JOBS}
        if everything is None or not own:
            return cls(version)
        transforms = {}
        pooled_cov = np.zeros((everything.total.shape[0],) * 2)
        centred_sample = []
        for language, moments in own.items():
            cov, shrinkage = moments.finish()
            transforms[language] = LanguageTransform(language, moments.count, round(shrinkage, 4), moments.mean,
                                                     Spectral.power(cov, shrinkage, -0.5))
            pooled_cov += cov * moments.count
            centred_sample.append(np.vstack(moments.sample) - moments.mean)
        count = sum(m.count for m in own.values())
        pooled_cov /= count
        rows = np.vstack(centred_sample)
        shrinkage = max(MIN_SHRINKAGE, _ledoit_wolf(rows, pooled_cov, count))
        transforms[POOLED] = LanguageTransform(POOLED, everything.count, round(shrinkage, 4), everything.mean,
                                               Spectral.power(pooled_cov, shrinkage, 0.5))
        return cls(version, transforms)

    def refit(self, blocks: Iterable[tuple[np.ndarray, Sequence[str]]], version: int,
              threshold: float) -> tuple["LanguageCorrection", float, bool]:
        """(new fit rounded as stored, how far it moves vectors from this one, whether it replaces this one):
        fitted on (raw unit vectors, counted languages) blocks; adopted the first time or past ``threshold``."""
        samples: dict[str, list[np.ndarray]] = {}

        def sampled():
            for raw, languages in blocks:
                raw = np.asarray(raw, dtype=np.float64)
                languages = list(languages)
                for language in set(languages):
                    have = sum(len(x) for x in samples.setdefault(language, []))
                    if have < MOVEMENT_SAMPLE:
                        rows = raw[[i for i, lang in enumerate(languages) if lang == language]]
                        samples[language].append(rows[:MOVEMENT_SAMPLE - have])
                yield raw, languages

        fitted = LanguageCorrection.fit(sampled(), version)
        if not fitted.active:
            return fitted, 0.0, False
        fitted = fitted.rounded()
        moved = self.movement(fitted, {k: np.vstack(v) for k, v in samples.items()})
        return fitted, moved, not self.active or moved > threshold

    def movement(self, other: "LanguageCorrection", samples: dict[str, np.ndarray]) -> float:
        """How far ``other`` moves corrected vectors from where this one puts them.

        ``samples``: raw unit vectors of some jobs of each language. The mean distance between the two
        unit corrected vectors of the same jobs, the largest over languages: 0 is no change, 0.1 moves a
        typical job's vector by a tenth of its length (its scores by about as much).
        """
        worst = 0.0
        for language, raw in samples.items():
            if not len(raw):
                continue
            languages = [language] * len(raw)
            mine = self.apply(raw, languages)[0]
            theirs = other.apply(raw, languages)[0]
            worst = max(worst, float(np.linalg.norm(mine - theirs, axis=1).mean()))
        return round(worst, 4)
