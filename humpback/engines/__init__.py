"""Engines: one interface (``Engine``), several back-ends. ``make_engine`` picks one from config."""

from __future__ import annotations

import os

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


def make_engine(model: str | None, config: EngineConfig | None = None, *,
                run_dir: str | os.PathLike | None = None) -> Engine:
    """The back-end named by ``config.kind``. For endpoints ``model`` is the name the server serves;
    ``run_dir`` (a stage's work folder) holds the request cache and the token ledger of that run."""
    config = config or EngineConfig()
    if config.kind == "transformers":
        from .transformers_engine import TransformersEngine

        return TransformersEngine(model, config)
    if config.kind == "endpoint":
        from .endpoint import EndpointEngine

        return EndpointEngine(model, config, run_dir=run_dir)
    if config.kind == "vllm":
        from .vllm_engine import make_vllm_engine

        return make_vllm_engine(model, config, run_dir=run_dir)
    raise EngineCapabilityError(f"engine kind '{config.kind}' is not available; use transformers, endpoint or vllm")


__all__ = [
    "CHOICE_LOGPROBS", "CONTINUATION_LOGPROBS", "GENERATE", "ContinuationScore", "Engine",
    "EngineCapabilityError", "EngineConfig", "GenerationRequest", "GenerationResult", "make_engine",
]
