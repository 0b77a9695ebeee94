"""Training configuration (``TrainConfig``): paper defaults, every key overridable from YAML or the CLI."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ...core.config import StrictModel
from ...core.models import DEFAULT_MODEL

# The paper's system prompts: seed data is tagged S_a, self-augmented data S_w.
SEED_TAG = "Answer in the style of an AI Assistant."
WEB_TAG = "Answer with knowledge from web search."

# Below this many training examples the paper uses batch 8, otherwise 32.
SMALL_DATA_EXAMPLES = 3000

# trl SFTConfig fields that humpback sets itself (sft.build_trainer), and what to set instead: a key under
# `sft:` must not silently override them, nor be silently overridden.
MANAGED_SFT_FIELDS = {
    "output_dir": "the training's output folder (--output)",
    "per_device_train_batch_size": "micro_batch_size",
    "gradient_accumulation_steps": "batch_size and micro_batch_size",
    "learning_rate": "learning_rate",
    "lr_scheduler_type": "min_lr_ratio and warmup_ratio (humpback's own linear schedule)",
    "lr_scheduler_kwargs": "min_lr_ratio and warmup_ratio (humpback's own linear schedule)",
    "weight_decay": "weight_decay",
    "warmup_steps": "warmup_ratio",
    "max_grad_norm": "max_grad_norm",
    "num_train_epochs": "epochs",
    "max_steps": "max_steps",
    "max_length": "max_length",
    "packing": "batching",
    "packing_strategy": "batching",
    "padding_free": "batching",
    "train_sampling_strategy": "batching and group_by_length",
    "completion_only_loss": "nothing: humpback always trains on the completion only",
    "model_init_kwargs": "dropout and attn_implementation (humpback loads the model itself)",
    "bf16": "precision",
    "fp16": "precision",
    "use_cpu": "device",
    "activation_checkpointing": "activation_checkpointing",
    "gradient_checkpointing": "activation_checkpointing",
    "logging_steps": "logging_steps",
    "logging_first_step": "logging_steps",
    "save_strategy": "save_steps",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "resume_from_checkpoint": "nothing: a rerun resumes from the newest complete checkpoint by itself",
    "report_to": "nothing: a data-engine run reports to no service",
    "disable_tqdm": "nothing: humpback logs one line per step",
    "dataloader_num_workers": "nothing: humpback loads batches in the training process",
    "seed": "seed",
    "data_seed": "seed",
}


class LoraSettings(StrictModel):
    """LoRA (peft) instead of full fine-tuning."""

    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: Union[str, list[str]] = "all-linear"
    # adapter: a small peft folder (resolved on its base by humpback.core.models); merged: a full model folder.
    save: Literal["adapter", "merged"] = "adapter"


class TrainConfig(StrictModel):
    """Hyperparameters and run settings for ``humpback train backward|forward``."""

    # Every round starts from this model, as in the paper; pass a previous round's folder to continue instead.
    base_model: str = DEFAULT_MODEL

    # --- optimisation (paper: lr 1e-5 decaying linearly to 9e-6, weight decay 0.1, dropout 0.1)
    learning_rate: Optional[float] = Field(None, gt=0.0)  # None: 1e-5 full fine-tuning, 1e-4 LoRA
    min_lr_ratio: float = Field(0.9, ge=0.0, le=1.0)  # final lr = learning_rate * min_lr_ratio
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.1, ge=0.0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # applied to the model config's dropout fields that exist
    max_grad_norm: float = Field(1.0, gt=0.0)
    batch_size: Optional[int] = Field(None, ge=1)  # examples per optimizer step; None: 8 below 3000 examples, else 32
    # Examples per forward pass; gradient accumulation makes up the rest. None: 8 on a GPU, 2 on CPU, where
    # fp32 activations of 8 SmolLM2 examples of ~900 tokens took 17 GB (sdpa materialises attention there).
    micro_batch_size: Optional[int] = Field(None, ge=1)
    epochs: float = Field(3.0, gt=0.0)  # steps = ceil(epochs * examples / batch_size) unless max_steps is set
    max_steps: Optional[int] = Field(None, ge=1)
    max_length: int = Field(2048, ge=16)  # examples longer than this (in tokens) are dropped, and counted
    # padded: right-padded rows (grouped by length, see below); padding_free: a micro-batch is one flattened
    # sequence, no pad tokens, examples kept apart by position ids; packing: best-fit packed rows of
    # max_length, also flattened (batch sizes then count rows). auto: padding_free with a varlen attention
    # kernel (flash_attention_*), else padded -- with sdpa/eager attention a flattened micro-batch pays
    # attention over its whole length, which costs more than padding saves (docs/train.md).
    batching: Literal["auto", "padded", "padding_free", "packing"] = "auto"
    group_by_length: bool = True  # padded: batch examples of similar length together (less padding)
    attn_implementation: Optional[str] = None  # e.g. flash_attention_2 on a GPU; None: the model's default
    seed: int = 0

    # --- hardware
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on a bf16 GPU or a CPU with bf16 units (AMX, AVX512-BF16), else fp32; bfloat16 is
    # fp32 too on a CPU without them, where torch emulates bf16 many times slower
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    threads: Optional[int] = Field(None, ge=1)
    # data-parallel training processes (torchrun, DDP): one per GPU of the node; batch_size stays the global
    # batch (each process takes batch_size / processes of every step)
    processes: int = Field(1, ge=1)
    activation_checkpointing: bool = False

    # --- checkpoints, logging
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    keep_checkpoints: bool = False  # keep OUTPUT.partial/checkpoints after the model is published
    logging_steps: int = Field(1, ge=1)

    # --- forward data
    tags: bool = True  # False: no system tag at all (the paper's ablation)
    seed_tag: str = SEED_TAG
    web_tag: str = WEB_TAG
    min_score: Optional[float] = None  # augmented rows need score >= min_score

    lora: LoraSettings = Field(default_factory=LoraSettings)

    # Any other trl SFTConfig field, passed through as given (e.g. optim, adam_beta2, torch_compile). Key
    # names are checked here; values by trl when the trainer is built.
    sft: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sft")
    @classmethod
    def _sft_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key in MANAGED_SFT_FIELDS:
                raise PydanticCustomError("sft_managed", "set by humpback; use {instead}",
                                          {"subkey": key, "instead": MANAGED_SFT_FIELDS[key]})
        unknown = sorted(set(v) - sft_config_fields()) if v else []
        if unknown:
            raise PydanticCustomError("sft_unknown", "not a trl SFTConfig field", {"subkey": unknown[0]})
        return v

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.batch_size is not None and self.batch_size % self.processes:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of processes {self.processes}: every "
                             "process takes an equal share of each step's batch")
        if self.tags and (not self.seed_tag.strip() or not self.web_tag.strip()):
            raise ValueError("seed_tag and web_tag must be non-empty while tags are on (set tags: false instead)")
        return self

    def effective_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        # LoRA updates a low-rank delta from zero; at the full fine-tuning rate it barely moves in a short run.
        return 1e-4 if self.lora.enabled else 1e-5

    def effective_batch_size(self, n_examples: int) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 8 if n_examples < SMALL_DATA_EXAMPLES else 32

    def micro_and_accumulation(self, batch_size: int, device: str = "cpu") -> tuple[int, int]:
        """The largest micro-batch <= micro_batch_size that divides batch_size, and the accumulation steps."""
        limit = self.micro_batch_size or (2 if device == "cpu" else 8)
        micro = min(limit, batch_size)
        while batch_size % micro:
            micro -= 1
        return micro, batch_size // micro


def sft_config_fields() -> set[str]:
    import dataclasses

    from trl import SFTConfig  # only when `sft:` has keys: importing trl costs seconds

    return {f.name for f in dataclasses.fields(SFTConfig) if f.init}


# Keys that change how a run is executed or kept, not what it trains: a resumed or re-run training may
# change them without being treated as a different training.
OPERATIONAL_KEYS = frozenset(
    {"device", "threads", "activation_checkpointing", "save_steps", "save_total_limit", "keep_checkpoints",
     "logging_steps"}
)
