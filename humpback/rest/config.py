"""``humpback rest`` configuration (YAML); defaults are the ReST-EM paper's (Singh et al. 2023).

E-step: 32 samples per problem at temperature 0.7 with top-k 40, at most 10 correct solutions kept per
problem. M-step: fine-tune the *base* model on them, every iteration. Iterations: 3 (the paper's MATH
setting; on APPS the second iteration already regressed), stopping early once held-out pass@1 stops
improving.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..core.config import ConfigError, EngineConfig, StrictModel, apply_overrides, load_yaml, validate_config
from ..core.models import DEFAULT_MODEL
from ..stages.train.config import TrainConfig
from .wordproblems import LEVELS


class GenerateProblems(StrictModel):
    """Make the problems with the shipped word-problem generator (seeded) instead of reading files."""

    train: int = Field(64, ge=1)
    heldout: int = Field(64, ge=1)
    levels: list[int] = Field(default_factory=lambda: sorted(LEVELS))
    seed: int = 0

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x not in LEVELS]
        if not v or bad:
            raise ValueError(f"levels must be a non-empty list of {sorted(LEVELS)}, got {v}")
        return v


class ProblemsConfig(StrictModel):
    """Where problems come from: one file split by ``heldout_fraction``, two files, or ``generate``."""

    path: str | None = None  # JSONL/Parquet with id, problem, answer (or tests)
    heldout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 0
    train: str | None = None
    heldout: str | None = None
    generate: GenerateProblems | None = None
    max_train: int | None = Field(None, ge=1)  # use only the first N (after the split)
    max_heldout: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> ProblemsConfig:
        sources = [self.path is not None, self.train is not None or self.heldout is not None,
                   self.generate is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of: path (split by heldout_fraction), train + heldout, or generate")
        if (self.train is None) != (self.heldout is None):
            raise ValueError("train and heldout go together")
        return self


class RewardConfig(StrictModel):
    kind: str = "math-answer"  # math-answer | code-tests | a registered name | package.module:ClassName
    options: dict[str, Any] = Field(default_factory=dict)  # the reward's own keys (checked by the reward)


class Decoding(StrictModel):
    """How solutions are sampled: shared by the E-step and the held-out evaluation."""

    temperature: float = Field(0.7, ge=0.0)
    top_k: int | None = Field(40, ge=1)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    stop: list[str] = Field(default_factory=list)


class SamplingConfig(Decoding):
    samples: int = Field(32, ge=1)  # N per problem
    seed: int = 0
    chunk_problems: int = Field(8, ge=1)  # problems per checkpointed chunk: a kill loses at most one chunk


class EStepConfig(SamplingConfig):
    max_per_problem: int = Field(10, ge=1)  # correct solutions kept per problem (after removing duplicates)
    # Solutions cut off by max_tokens are not trained on: the model would learn not to stop.
    keep_truncated: bool = False


class EvalConfig(Decoding):
    """Held-out evaluation after every iteration (and of the base model as iteration 0)."""

    greedy: bool = True  # pass@1 from one greedy solution per problem
    samples: int = Field(8, ge=0)  # k sampled solutions per problem for pass@k and majority vote (0: none)
    seed: int = 1234
    chunk_problems: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _something(self) -> EvalConfig:
        if not self.greedy and self.samples == 0:
            raise ValueError("eval needs greedy: true or samples > 0")
        return self


class EarlyStopConfig(StrictModel):
    enabled: bool = True
    # pass@1 is greedy when eval.greedy, else the mean over samples; pass@k / maj@k use the eval samples
    metric: Literal["pass@1", "pass@k", "maj@k"] = "pass@1"
    min_delta: float = Field(0.0, ge=0.0)  # an iteration must beat the best so far by more than this


class RestConfig(StrictModel):
    run_dir: str = "runs/rest"
    model: str = DEFAULT_MODEL  # the base model: every M-step starts from it
    template: str | None = None  # prompt template; default rest_math or rest_code by reward
    problems: ProblemsConfig
    reward: RewardConfig = Field(default_factory=RewardConfig)
    iterations: int = Field(3, ge=1)
    early_stop: EarlyStopConfig = Field(default_factory=EarlyStopConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    estep: EStepConfig = Field(default_factory=EStepConfig)
    mstep: TrainConfig = Field(default_factory=lambda: TrainConfig(tags=False))
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _mstep_from_base(self) -> RestConfig:
        if "base_model" in self.mstep.model_fields_set:
            raise ValueError("mstep.base_model: ReST-EM fine-tunes the base model every iteration; set the "
                             "top-level `model` instead")
        if self.mstep.tags and "tags" in self.mstep.model_fields_set:
            raise ValueError("mstep.tags: ReST-EM solutions carry no Humpback system tags; leave it out")
        return self

    def template_name(self) -> str:
        if self.template:
            return self.template
        return "rest_code" if self.reward.kind == "code-tests" else "rest_math"

    def train_config(self) -> TrainConfig:
        return TrainConfig.model_validate({**self.mstep.model_dump(), "base_model": self.model, "tags": False})


def load_rest_config(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> RestConfig:
    data = apply_overrides(load_yaml(path) if path else {}, overrides, str(path) if path else "<config>")
    if "problems" not in data:
        raise ConfigError(f"{path or '<config>'}: problems: missing (path, train + heldout, or generate)")
    return validate_config(RestConfig, data, source=str(path) if path else "<config>")


__all__ = ["EStepConfig", "EarlyStopConfig", "EvalConfig", "GenerateProblems", "ProblemsConfig", "RestConfig",
           "RewardConfig", "SamplingConfig", "load_rest_config"]
