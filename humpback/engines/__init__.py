"""Engines: one interface (``Engine``), several back-ends. ``make_engine`` picks one from config."""

from __future__ import annotations

import os
from typing import Callable

from ..core.config import EngineConfig
from ..core.registry import Registry
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


# Each entry is "module:factory", imported only when a config names it (torch, vllm are heavy); a factory is
# called as factory(model, config, run_dir=run_dir) and returns an Engine.
ENGINES: Registry[Callable[..., Engine]] = Registry("engine", "engine.kind")
ENGINES.register("transformers", "humpback.engines.transformers_engine:TransformersEngine")
ENGINES.register("endpoint", "humpback.engines.endpoint:EndpointEngine")
ENGINES.register("vllm", "humpback.engines.vllm_engine:make_vllm_engine")


def make_engine(model: str | None, config: EngineConfig | None = None, *,
                run_dir: str | os.PathLike | None = None) -> Engine:
    """The back-end named by ``config.kind``. For endpoints ``model`` is the name the server serves;
    ``run_dir`` (a stage's work folder) holds the request cache and the token ledger of that run."""
    config = config or EngineConfig()
    return ENGINES.get(config.kind)(model, config, run_dir=run_dir)


__all__ = [
    "CHOICE_LOGPROBS", "CONTINUATION_LOGPROBS", "ENGINES", "GENERATE", "ContinuationScore", "Engine",
    "EngineCapabilityError", "EngineConfig", "GenerationRequest", "GenerationResult", "make_engine",
]
