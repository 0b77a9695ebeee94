"""The engine interface every back-end implements (in-process transformers, OpenAI endpoint, vLLM)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Optional, Sequence

GENERATE = "generate"
CHOICE_LOGPROBS = "choice_logprobs"
CONTINUATION_LOGPROBS = "continuation_logprobs"


class EngineCapabilityError(RuntimeError):
    """The back-end cannot do an operation a stage needs; raised before any work starts."""


@dataclass
class GenerationRequest:
    """Either chat ``messages`` (rendered with the model's chat template) or a raw ``prompt``."""

    messages: Optional[list[dict[str, str]]] = None
    prompt: Optional[str] = None
    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: Optional[int] = None
    max_tokens: int = 128
    stop: list[str] = field(default_factory=list)
    seed: Optional[int] = None
    id: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a GenerationRequest needs exactly one of `messages` or `prompt`")
        if self.n < 1 or self.max_tokens < 1:
            raise ValueError("n and max_tokens must be >= 1")


@dataclass
class GenerationResult:
    texts: list[str]
    finish_reasons: list[str]  # "stop" (EOS or stop string) | "length"
    prompt_tokens: int
    completion_tokens: list[int]
    id: Optional[str] = None

    @property
    def text(self) -> str:
        return self.texts[0]


@dataclass
class ContinuationScore:
    token_logprobs: list[float]

    @property
    def n_tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def sum(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def mean(self) -> float:
        return self.sum / self.n_tokens if self.token_logprobs else 0.0


class Engine(abc.ABC):
    """Generation and scoring over one model."""

    capabilities: frozenset[str] = frozenset()

    def __init__(self, model: str) -> None:
        self.model_ref = model

    def require(self, *operations: str) -> None:
        missing = [op for op in operations if op not in self.capabilities]
        if missing:
            raise EngineCapabilityError(
                f"engine '{type(self).__name__}' for model '{self.model_ref}' cannot do {', '.join(missing)}; "
                f"it supports {', '.join(sorted(self.capabilities)) or 'nothing'}"
            )

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, in request order."""

    def choice_logprobs(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]:
        """Log-probabilities (full-vocabulary softmax) of single-token ``choices`` after each prompt."""
        self.require(CHOICE_LOGPROBS)
        raise NotImplementedError  # pragma: no cover - require() raised already

    def continuation_logprobs(
        self, prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[ContinuationScore]:
        """Per-token log-probabilities of each continuation given its prompt."""
        self.require(CONTINUATION_LOGPROBS)
        raise NotImplementedError  # pragma: no cover

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (back-ends with a local tokenizer)."""
        raise EngineCapabilityError(f"{type(self).__name__} has no local tokenizer")

    def choice_token_ids(self, choices: Sequence[str]) -> list[int]:
        """The single token id of each choice; a choice that is several tokens cannot be scored by one lookup."""
        ids = []
        for c in choices:
            toks = self.encode(c)
            if len(toks) != 1:
                raise ValueError(f"choice {c!r} is {len(toks)} tokens for this tokenizer; choices must be one token")
            ids.append(toks[0])
        return ids

    def format_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render chat messages to the raw prompt string this model expects."""
        raise EngineCapabilityError(f"{type(self).__name__} cannot render chat templates locally")

    def close(self) -> None:
        """Release resources (servers, GPU memory)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
