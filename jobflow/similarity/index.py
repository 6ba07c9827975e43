"""In-memory cosine-similarity index over L2-normalised float32 embeddings.

Pure vector math: arrays in, arrays out. Knows nothing of Flask or MongoDB.
Ids are any hashable, mutually orderable keys (in practice str ObjectIds);
orderability is needed because equal scores are tie-broken by id.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Hashable, Iterable, Iterator, Sequence

import numpy as np

Neighbours = list[tuple[Hashable, float]]


class VectorIndex:
    """Growable matrix of unit vectors (one row per item) with an id <-> row map."""

    def __init__(self, dim: int, capacity: int = 1024):
        """Create an empty index for `dim`-dimensional vectors."""
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self._dim = int(dim)
        self._mat = np.empty((max(1, int(capacity)), self._dim), dtype=np.float32)
        self._n = 0
        self._ids: list[Hashable] = []  # row -> id, len == live rows
        self._rows: dict[Hashable, int] = {}  # id -> row
        # Re-entrant so public methods may call each other while holding it.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ basics
    @property
    def dim(self) -> int:
        """Vector dimensionality."""
        return self._dim

    @property
    def capacity(self) -> int:
        """Rows allocated (live rows plus spare room)."""
        return self._mat.shape[0]

    def __len__(self) -> int:
        """Number of items."""
        return self._n

    def __contains__(self, id_: object) -> bool:
        """Whether `id_` is in the index."""
        with self._lock:
            return id_ in self._rows

    def ids(self) -> list:
        """Ids in row order (a copy)."""
        with self._lock:
            return list(self._ids)

    def vector(self, id_: Hashable) -> np.ndarray:
        """Copy of the stored (normalised) vector; KeyError if unknown."""
        with self._lock:
            return self._mat[self._rows[id_]].copy()

    def vectors(self, ids: Sequence[Hashable]) -> np.ndarray:
        """Copies of the stored vectors of ``ids`` (n, dim); KeyError if one is unknown."""
        with self._lock:
            return self._mat[[self._rows[i] for i in ids]].copy()

    def memory_bytes(self) -> int:
        """Approximate footprint: allocated matrix plus id containers (not the id objects)."""
        with self._lock:
            return self._mat.nbytes + sys.getsizeof(self._ids) + sys.getsizeof(self._rows)

    # --------------------------------------------------------------- mutation
    def upsert(self, ids: Sequence[Hashable], vectors) -> None:
        """Add or replace rows; the whole batch is rejected (ValueError naming the id) if any vector is invalid."""
        ids = list(ids)
        unit = self._normalise_batch(ids, vectors)  # validate everything before touching state
        with self._lock:
            new = sum(1 for i in dict.fromkeys(ids) if i not in self._rows)
            self._reserve(self._n + new)
            for id_, vec in zip(ids, unit):
                row = self._rows.get(id_)
                if row is None:
                    row = self._n
                    self._rows[id_] = row
                    self._ids.append(id_)
                    self._n += 1
                self._mat[row] = vec

    def remove(self, ids: Iterable[Hashable]) -> None:
        """Remove ids in O(1) each by swap-remove; unknown ids are ignored."""
        with self._lock:
            for id_ in ids:
                row = self._rows.pop(id_, None)
                if row is None:
                    continue
                last = self._n - 1
                if row != last:
                    # Fill the hole with the last row so live rows stay contiguous.
                    self._mat[row] = self._mat[last]
                    moved = self._ids[last]
                    self._ids[row] = moved
                    self._rows[moved] = row
                self._ids.pop()
                self._n = last

    def _reserve(self, needed: int) -> None:
        """Ensure room for `needed` rows, doubling so appends are amortised O(1)."""
        cap = self._mat.shape[0]
        if needed <= cap:
            return
        while cap < needed:
            cap *= 2
        grown = np.empty((cap, self._dim), dtype=np.float32)
        grown[: self._n] = self._mat[: self._n]
        self._mat = grown

    def _normalise_batch(self, ids: list, vectors) -> np.ndarray:
        """Validate and L2-normalise a batch; returns float32 (len(ids), dim)."""
        if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
            if vectors.shape[0] != len(ids):
                raise ValueError(f"{len(ids)} ids but {vectors.shape[0]} vectors")
            if vectors.shape[1] != self._dim and len(ids):
                raise ValueError(
                    f"vector for id {ids[0]!r} has length {vectors.shape[1]}, expected {self._dim}"
                )
            arr = vectors.astype(np.float64, copy=False)
        else:
            rows = list(vectors)
            if len(rows) != len(ids):
                raise ValueError(f"{len(ids)} ids but {len(rows)} vectors")
            arr = np.empty((len(ids), self._dim), dtype=np.float64)
            for i, (id_, v) in enumerate(zip(ids, rows)):
                v = np.asarray(v, dtype=np.float64)
                if v.shape != (self._dim,):
                    raise ValueError(f"vector for id {id_!r} has shape {v.shape}, expected ({self._dim},)")
                arr[i] = v
        # float64 for the norm: float32 squares of large components can overflow to inf.
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            raise ValueError(f"vector for id {ids[int(np.argmin(finite))]!r} has non-finite values")
        norms = np.linalg.norm(arr, axis=1)
        if (norms == 0).any():
            raise ValueError(f"vector for id {ids[int(np.argmin(norms))]!r} has zero norm")
        return (arr / norms[:, None]).astype(np.float32)

    def _normalise_query(self, query) -> np.ndarray:
        """Validate and normalise a single query vector."""
        return self._normalise_batch(["<query>"], [query])[0]

    # ---------------------------------------------------------------- queries
    def top_k(
        self, query: np.ndarray, k: int, min_score: float = -1.0, exclude: Iterable[Hashable] = ()
    ) -> Neighbours:
        """The k most cosine-similar items to `query`, best first, ties by id; `exclude` ids left out."""
        q = self._normalise_query(query)
        with self._lock:
            scores = self._scores(q[None, :])
            drop = [r for r in map(self._rows.get, exclude) if r is not None]
            scores[0, drop] = -np.inf
            return self._select(scores, k, min_score)[0]

    def top_k_for_ids(self, ids: Iterable[Hashable], k: int, min_score: float = -1.0) -> dict:
        """Neighbours of items already indexed (self excluded), one GEMM for the batch; KeyError if unknown."""
        ids = list(dict.fromkeys(ids))
        with self._lock:
            rows = np.fromiter((self._rows[i] for i in ids), dtype=np.intp, count=len(ids))
            return dict(zip(ids, self._top_k_rows(rows, k, min_score)))

    def scores_against(self, query: np.ndarray, ids: Iterable[Hashable] | None = None):
        """Cosine scores of `query` against all rows, or the given ids (unknown ones skipped): (ids, scores)."""
        q = self._normalise_query(query)
        with self._lock:
            if ids is None:
                keys = list(self._ids)
                scores = self._mat[: self._n] @ q
            else:
                keys = [i for i in ids if i in self._rows]
                rows = [self._rows[i] for i in keys]
                scores = self._mat[rows] @ q
        np.clip(scores, -1.0, 1.0, out=scores)
        return np.fromiter(keys, dtype=object, count=len(keys)), scores

    def scores_many(self, queries: np.ndarray):
        """Cosine scores of several queries against all rows in one GEMM: (ids, scores of shape (b, n))."""
        q = self._normalise_batch([f"<query {i}>" for i in range(len(queries))], queries)
        with self._lock:
            keys = np.fromiter(self._ids, dtype=object, count=self._n)
            scores = self._scores(q)
        return keys, scores

    def all_top_k(
        self, k: int, min_score: float = -1.0, block_size: int = 500
    ) -> Iterator[tuple[list, list[Neighbours]]]:
        """Yield (block_ids, neighbour_lists) for every item, block_size queries per GEMM; self excluded.

        Ids are snapshotted at start; the lock is taken per block (never across a
        yield), so concurrent edits are seen by later blocks and ids removed
        meanwhile are skipped.
        """
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        snapshot = self.ids()
        for start in range(0, len(snapshot), block_size):
            with self._lock:
                block = [i for i in snapshot[start : start + block_size] if i in self._rows]
                rows = np.fromiter((self._rows[i] for i in block), dtype=np.intp, count=len(block))
                lists = self._top_k_rows(rows, k, min_score)
            if block:
                yield block, lists

    # ---------------------------------------------------------------- helpers
    def _scores(self, queries: np.ndarray) -> np.ndarray:
        """Cosine scores (b, n) of unit queries against live rows; clipped since float32 rounding exceeds ±1."""
        scores = queries @ self._mat[: self._n].T
        return np.clip(scores, -1.0, 1.0, out=scores)

    def _top_k_rows(self, rows: np.ndarray, k: int, min_score: float) -> list[Neighbours]:
        """Top-k for stored rows with the query row itself masked out."""
        scores = self._scores(self._mat[rows])
        scores[np.arange(len(rows)), rows] = -np.inf
        return self._select(scores, k, min_score)

    def _select(self, scores: np.ndarray, k: int, min_score: float) -> list[Neighbours]:
        """Per-row top-k of a (b, n) score matrix; -inf marks excluded entries."""
        b, n = scores.shape
        if k <= 0 or n == 0:
            return [[] for _ in range(b)]
        if k < n:
            # Top k land (unordered) in the last k slots; O(n) per row instead of a full sort.
            part = np.argpartition(scores, n - k, axis=1)[:, n - k :]
            kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
            # Rows whose k-th score is tied with entries outside the partition need
            # widening, otherwise which tied id survives would be arbitrary.
            tied = np.count_nonzero(scores >= kth[:, None], axis=1) > k
        ids = self._ids
        out = []
        for r in range(b):
            if k >= n:
                cand = np.arange(n)
            elif tied[r]:
                cand = np.flatnonzero(scores[r] >= kth[r])
            else:
                cand = part[r]
            s = scores[r, cand]
            keep = (s >= min_score) & (s > -np.inf)
            pairs = sorted(
                zip((ids[c] for c in cand[keep]), s[keep].tolist()), key=lambda p: (-p[1], p[0])
            )
            out.append(pairs[:k])
        return out
