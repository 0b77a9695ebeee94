"""Engines: one interface (``Engine``), several back-ends. ``make_engine`` picks one from config."""

from __future__ import annotations

from ..config import EngineConfig
from .base import (
    CHOICE_LOGPROBS,
    CONTINUATION_LOGPROBS,
    GENERATE,
    ContinuationScore,
    Engine,
    EngineCapabilityError,
    GenerationRequest,
    GenerationResult,
)


def make_engine(model: str | None, config: EngineConfig | None = None) -> Engine:
    config = config or EngineConfig()
    if config.kind == "transformers":
        from .transformers_engine import TransformersEngine

        return TransformersEngine(model, config)
    raise EngineCapabilityError(
        f"engine kind '{config.kind}' is not available in this version; use 'transformers'"
    )


__all__ = [
    "CHOICE_LOGPROBS", "CONTINUATION_LOGPROBS", "GENERATE", "ContinuationScore", "Engine",
    "EngineCapabilityError", "EngineConfig", "GenerationRequest", "GenerationResult", "make_engine",
]
