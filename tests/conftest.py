"""Shared fixtures: a tiny random Llama with the SmolLM2 tokenizer (fast), and the real SmolLM2."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """The packaged SmolLM2-135M-Instruct, converted once into the humpback cache."""
    from humpback.core.models import resolve

    return resolve("smollm2-135m-instruct").path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> str:
    """A 2-layer random Llama (hidden 64) with the SmolLM2 tokenizer: loads and runs in well under a second."""
    from humpback.core.models import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0,
                                tokenizer_from=smollm2_dir))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    from humpback.core.config import EngineConfig
    from humpback.engines.transformers_engine import TransformersEngine

    return TransformersEngine(tiny_model_dir, EngineConfig(dtype="float32", progress=False))
