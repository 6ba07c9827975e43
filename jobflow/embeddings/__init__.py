"""Embedding providers: a small base class, a registry and a getter."""
from __future__ import annotations

from jobflow.embeddings.base import (
    BadInput,
    ConfigurationError,
    EmbeddingBatch,
    EmbeddingProvider,
    InvalidVector,
    ProviderError,
    RateLimited,
    check_vector,
)


def _openai(settings: dict) -> EmbeddingProvider:
    from jobflow.embeddings.openai_provider import OpenAIProvider
    return OpenAIProvider(api_key=settings["OPENAI_API_KEY"], model=settings["OPENAI_EMBEDDING_MODEL"],
                          timeout_ms=settings["OPENAI_API_TIMEOUT"], base_url=settings.get("OPENAI_BASE_URL", ""))


def _local(settings: dict) -> EmbeddingProvider:
    from jobflow.embeddings.local import LocalProvider
    return LocalProvider()


PROVIDERS = {"openai": _openai, "local": _local}


def get_provider(settings: dict) -> EmbeddingProvider:
    """The provider named by EMBEDDING_PROVIDER."""
    return PROVIDERS[settings["EMBEDDING_PROVIDER"]](settings)


def provider_model(settings: dict) -> str:
    """The model name the configured provider writes on embeddings (no provider is built)."""
    if settings["EMBEDDING_PROVIDER"] == "local":
        from jobflow.embeddings.local import LocalProvider
        return LocalProvider.model
    return settings["OPENAI_EMBEDDING_MODEL"]


def min_score(settings: dict, raw: bool = False) -> float:
    """SIMILARITY_MIN_SCORE, or the configured provider's calibrated default for language-balanced scores (raw
    ones when ``raw`` or SIMILARITY_LANGUAGE_BALANCE=false: a board's scores before its first correction)."""
    if settings.get("SIMILARITY_MIN_SCORE") is not None:
        return settings["SIMILARITY_MIN_SCORE"]
    if settings["EMBEDDING_PROVIDER"] == "local":
        from jobflow.embeddings.local import LocalProvider
        scores = LocalProvider
    else:
        from jobflow.embeddings.openai_provider import OpenAIProvider
        scores = OpenAIProvider
    balanced = settings.get("SIMILARITY_LANGUAGE_BALANCE", True) and not raw
    return scores.balanced_min_score if balanced else scores.default_min_score


__all__ = ["BadInput", "ConfigurationError", "EmbeddingBatch", "EmbeddingProvider", "InvalidVector",
           "ProviderError", "RateLimited", "check_vector", "get_provider", "provider_model", "min_score", "PROVIDERS"]
