"""The ``openai`` provider: the official SDK, any OpenAI-compatible server."""
from __future__ import annotations

import logging
import math
import time
import uuid

import numpy as np
import openai

from jobflow.embeddings.base import BadInput, ConfigurationError, EmbeddingBatch, EmbeddingProvider, ProviderError, RateLimited

log = logging.getLogger("jobflow.embeddings")

KNOWN_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
PRICE_PER_MILLION = {"text-embedding-3-small": 0.02, "text-embedding-3-large": 0.13, "text-embedding-ada-002": 0.10}


RETRY_AFTER_LIMIT = 120.0   # seconds; like the openai SDK, a longer (or non-finite) wait is not believed


def _retry_after(exc: openai.APIStatusError, default: float = 5.0) -> float:
    """The wait the provider asks for, in seconds; ``default`` (the worker's own back-off) when absent or absurd.

    A ``Retry-After: 86400`` would stop the worker for a day and ``1e400`` (infinite) forever, while it showed
    "running": values that are not finite or are over RETRY_AFTER_LIMIT fall back to ``default``.
    """
    headers = exc.response.headers if exc.response is not None else {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue
            if math.isfinite(seconds) and 0 <= seconds <= RETRY_AFTER_LIMIT:
                return seconds
            return default
    return default


class OpenAIProvider(EmbeddingProvider):
    """Embeddings from the OpenAI API (or any server speaking it)."""
    name = "openai"
    max_batch_inputs = 128
    max_batch_tokens = 250_000   # the API allows 300,000 per request; estimates are rough
    max_input_chars = 16_000     # about 8,000 tokens of the model's 8,191
    default_min_score = 0.7   # the original specification's value; see README
    balanced_min_score = 0.10  # the local model's calibration of balanced scores, carried over (local.py)

    def __init__(self, api_key: str, model: str, timeout_ms: int, base_url: str = ""):
        self.model = model
        self.dimensions = KNOWN_DIMENSIONS.get(model, 0)
        self.cost_per_million_tokens = PRICE_PER_MILLION.get(model, 0.0)
        # Retries are the queue's job (with its own delays); the SDK must not retry behind our back.
        self.client = openai.OpenAI(api_key=api_key, base_url=base_url or None,
                                    timeout=timeout_ms / 1000.0, max_retries=0)

    def embed(self, texts: list[str]) -> EmbeddingBatch:
        """One embeddings request for the batch."""
        call_id = uuid.uuid4().hex[:8]
        started = time.monotonic()
        log.debug("embed call %s: %d texts, %d characters, model %s", call_id, len(texts), sum(map(len, texts)),
                  self.model)
        try:
            response = self.client.embeddings.create(model=self.model, input=texts)
        except openai.RateLimitError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            if (body.get("code") or getattr(exc, "code", None)) == "insufficient_quota":
                raise ConfigurationError("the provider account has no quota left") from None
            raise RateLimited("rate limited by the provider (429)", _retry_after(exc)) from None
        except (openai.AuthenticationError, openai.PermissionDeniedError):
            raise ConfigurationError("the provider refused the API key (check OPENAI_API_KEY)") from None
        except openai.NotFoundError:
            raise ConfigurationError(f"the provider does not know the model {self.model!r} "
                                     "(check OPENAI_EMBEDDING_MODEL)") from None
        except openai.BadRequestError as exc:
            raise BadInput(f"the provider refused the input (400): {_message(exc)}") from None
        except openai.APITimeoutError:
            raise ProviderError("the provider did not answer in time (OPENAI_API_TIMEOUT)") from None
        except openai.APIConnectionError:
            raise ProviderError("could not connect to the provider") from None
        except openai.APIStatusError as exc:
            raise ProviderError(f"the provider answered {exc.status_code}") from None
        except (ValueError, AttributeError, TypeError):
            raise ProviderError("the provider's answer was not valid embeddings JSON") from None
        data = sorted(response.data, key=lambda d: d.index)
        if len(data) != len(texts):
            raise ProviderError(f"the provider returned {len(data)} vectors for {len(texts)} texts")
        rows = [np.asarray(d.embedding, dtype=np.float32) for d in data]
        if not self.dimensions:
            self.dimensions = int(np.bincount([len(r) for r in rows]).argmax())
        total = int(getattr(response.usage, "prompt_tokens", 0) or 0)
        log.debug("embed call %s: %d vectors, %d tokens in %.0f ms", call_id, len(rows), total,
                  (time.monotonic() - started) * 1000)
        return EmbeddingBatch(vectors=rows, tokens=_share(total, texts), model=self.model)


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message") or (body.get("error") or {}).get("message") if isinstance(body, dict) else None
    return str(message or "bad request")[:300]


def _share(total: int, texts: list[str]) -> list[int]:
    """Split a request's token count over its texts by length."""
    lengths = [max(len(t), 1) for t in texts]
    whole = sum(lengths)
    return [round(total * n / whole) for n in lengths]
