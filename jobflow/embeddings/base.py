"""The provider interface: a batch of texts in; float32 vectors, token counts and the model name out."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ProviderError(RuntimeError):
    """A call failed; ``retryable`` says whether the same input may succeed later."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class RateLimited(ProviderError):
    """The provider asked us to slow down; wait ``retry_after`` seconds. Spends no attempt."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message, retryable=True)
        self.retry_after = retry_after


class ConfigurationError(ProviderError):
    """Bad key, unknown model, no quota: no item can succeed until an operator acts."""

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


class BadInput(ProviderError):
    """The provider refused the request's input (one text may be the cause)."""

    def __init__(self, message: str):
        super().__init__(message, retryable=False)


class InvalidVector(ValueError):
    """A vector that must not be stored: wrong length, not finite, or zero."""


@dataclass
class EmbeddingBatch:
    """The result of one provider call."""
    vectors: np.ndarray          # (n, dimensions) float32
    tokens: list[int]            # per text
    model: str


def check_vector(vector: np.ndarray, dimensions: int) -> np.ndarray:
    """The vector as float32 when it may be stored; InvalidVector naming the problem otherwise."""
    array = np.asarray(vector, dtype=np.float32).ravel()
    if array.shape[0] != dimensions:
        raise InvalidVector(f"vector has {array.shape[0]} dimensions, expected {dimensions}")
    if not np.all(np.isfinite(array)):
        raise InvalidVector("vector contains NaN or infinite values")
    if not np.any(array):
        raise InvalidVector("vector is all zeros")
    return array


class EmbeddingProvider:
    """Base class: subclasses set the attributes and implement ``embed``."""
    name = "base"
    model = ""
    dimensions = 0
    max_batch_inputs = 64          # texts per call
    max_batch_tokens = 250_000     # estimated tokens per call
    max_input_chars = 16_000       # each text is cut to this before sending
    max_concurrent: int | None = None  # None = EMBEDDING_MAX_CONCURRENT
    default_min_score = 0.7        # calibrated per provider, see README
    balanced_min_score = 0.10      # the same, for language-balanced (corrected) scores
    cost_per_million_tokens = 0.0

    def embed(self, texts: list[str]) -> EmbeddingBatch:
        """Embed a batch of texts (already cut to ``max_input_chars``)."""
        raise NotImplementedError

    def prepare(self, text: str) -> str:
        """Cut a text to the model's input limit."""
        return text[: self.max_input_chars]

    def estimate_tokens(self, text: str) -> int:
        """A cautious token estimate for batching (multilingual text runs about 3 characters a token)."""
        return len(text) // 3 + 1

    def batches(self, texts: list[str], inputs_each: int = 1) -> list[list[int]]:
        """Indexes of ``texts`` grouped into calls within the input and token limits.

        ``inputs_each``: how many inputs each entry sends (a job sends its headline and its full text).
        """
        groups: list[list[int]] = []
        current: list[int] = []
        tokens = 0
        per_call = max(1, self.max_batch_inputs // inputs_each)
        for i, text in enumerate(texts):
            cost = self.estimate_tokens(text)
            if current and (len(current) >= per_call or tokens + cost > self.max_batch_tokens):
                groups.append(current)
                current, tokens = [], 0
            current.append(i)
            tokens += cost
        if current:
            groups.append(current)
        return groups

    def describe(self) -> str:
        """Provider and model, for logs and the dashboard."""
        return f"{self.name}:{self.model}"
