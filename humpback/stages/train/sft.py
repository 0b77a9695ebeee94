"""Fine-tuning with trl's ``SFTTrainer``: completion-only loss, resumable, published atomically.

Layout of a training into OUTPUT:

- ``OUTPUT.partial/`` while it runs: ``train_data.parquet``, ``fingerprint.json`` and
  ``checkpoints/checkpoint-N`` (HF Trainer checkpoints every ``save_steps``).
- ``OUTPUT/`` once it is done: the model folder itself (``config.json`` or, for a LoRA adapter,
  ``adapter_config.json``), the tokenizer, ``README.md`` (model card), ``loss_curve.png``,
  ``train_data.parquet`` and ``humpback_train.json`` (the completion marker and summary). It is assembled
  in ``OUTPUT.partial/final`` and renamed into place, so OUTPUT either does not exist or is complete.

A rerun of the same training resumes from the newest complete checkpoint, or does nothing if OUTPUT is
already published. A checkpoint is complete once its ``trainer_state.json`` (written last) parses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ...core.faults import fault_point
from ...core.hardware import cpu_dtype
from ...core.models import ResolvedModel, load_tokenizer, resolve
from ...core.records import write_json, write_parquet
from .card import plot_loss_curve, render_model_card
from .config import OPERATIONAL_KEYS, TrainConfig
from .data import (
    ORIGIN_AUGMENTED,
    ORIGIN_SEED,
    Example,
    SourceStats,
    backward_examples,
    forward_examples,
    load_augmented,
    load_seed,
)

log = logging.getLogger("humpback.train")

MARKER = "humpback_train.json"
FINGERPRINT = "fingerprint.json"
TRAIN_DATA = "train_data.parquet"
CHECKPOINTS = "checkpoints"

# Model-config fields that hold dropout probabilities, across the architectures transformers ships.
_DROPOUT_FIELDS = ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                   "hidden_dropout_prob", "attention_probs_dropout_prob")


class TrainingError(RuntimeError):
    """A training cannot start or resume as asked; the message says why and what to do."""


@dataclass
class TrainResult:
    output: Path
    skipped: bool  # True when OUTPUT was already a finished training of the same data and config
    summary: dict[str, Any]


# ---------------------------------------------------------------------------------------------- public API


def train_backward(
    seed: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    base: Optional[str] = None,
    config: Optional[TrainConfig] = None,
) -> TrainResult:
    """Fine-tune the backward model M_yx on reversed seed pairs (prompt: output, completion: instruction)."""
    config = _with_overrides(config, base_model=base)
    pairs, stats = load_seed(_as_list(seed))
    return run_training("backward", backward_examples(pairs), stats, output, config)


def train_forward(
    seed: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    augmented: Sequence[str | os.PathLike] = (),
    base: Optional[str] = None,
    config: Optional[TrainConfig] = None,
    min_score: Optional[float] = None,
    tags: Optional[bool] = None,
) -> TrainResult:
    """Fine-tune a forward model on seed pairs (tag S_a) plus augmented pairs (tag S_w)."""
    config = _with_overrides(config, base_model=base, min_score=min_score, tags=tags)
    seed_pairs, seed_stats = load_seed(_as_list(seed))
    aug_pairs, aug_stats = load_augmented(list(augmented), config.min_score, first_index=len(seed_stats))
    examples = forward_examples(seed_pairs, aug_pairs, config.tags, config.seed_tag, config.web_tag)
    return run_training("forward", examples, seed_stats + aug_stats, output, config)


def is_finished(output: str | os.PathLike) -> bool:
    return (Path(output) / MARKER).is_file()


# ---------------------------------------------------------------------------------------------- helpers


def _as_list(value) -> list:
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def _with_overrides(config: Optional[TrainConfig], **overrides) -> TrainConfig:
    config = config or TrainConfig()
    updates = {k: v for k, v in overrides.items() if v is not None}
    # model_validate (not model_copy) so the overridden values are validated like any config key.
    return TrainConfig.model_validate({**config.model_dump(), **updates}) if updates else config


def work_dir(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def _fingerprint(kind: str, examples: Sequence[Example], config: TrainConfig) -> dict[str, Any]:
    data = hashlib.sha256()
    for ex in examples:
        data.update(json.dumps([ex.origin, ex.messages], ensure_ascii=False, sort_keys=True).encode())
        data.update(b"\n")
    cfg = {k: v for k, v in config.model_dump(mode="json").items() if k not in OPERATIONAL_KEYS}
    for key, default in (("sft", {}), ("processes", 1)):
        if cfg[key] == default:
            del cfg[key]  # so that trainings from before the key existed keep their fingerprint (and resume)
    cfg_hash = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
    return {"kind": kind, "data_sha256": data.hexdigest(), "config_sha256": cfg_hash, "examples": len(examples)}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("humpback", "torch", "transformers", "trl", "peft"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def complete_checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint whose trainer_state.json parses, oldest first."""
    found = []
    if not checkpoint_dir.is_dir():
        return found
    for d in checkpoint_dir.iterdir():
        if not d.is_dir() or not d.name.startswith("checkpoint-"):
            continue
        try:
            step = int(d.name.split("-", 1)[1])
            state = json.loads((d / "trainer_state.json").read_text())
        except (ValueError, OSError, json.JSONDecodeError):
            continue
        if state.get("global_step") == step:
            found.append((step, d))
    return sorted(found)


def _latest_checkpoint(checkpoint_dir: Path) -> Optional[tuple[int, Path]]:
    complete = complete_checkpoints(checkpoint_dir)
    latest = complete[-1] if complete else None
    # A folder a kill interrupted mid-save is newer than the last complete one: drop it, or the Trainer's
    # rotation could later delete the complete checkpoint in its favour.
    if checkpoint_dir.is_dir():
        keep = {p for _, p in complete}
        for d in checkpoint_dir.iterdir():
            if d.is_dir() and d.name.startswith("checkpoint-") and d not in keep:
                log.warning("removing incomplete checkpoint %s (interrupted while saving)", d)
                shutil.rmtree(d, ignore_errors=True)
    return latest


def _device(config: TrainConfig) -> str:
    import torch

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for, but torch sees no CUDA device")
    return config.device


def _bf16(config: TrainConfig, device: str) -> bool:
    import torch

    if config.precision == "float32":
        return False
    if device == "cpu":
        # bf16 autocast pays on a CPU with bf16 units (AMX: ~4x an fp32 matmul), and is emulated, many times
        # slower than fp32, on one without (docs/train.md): there bfloat16 falls back to fp32
        return cpu_dtype("bfloat16") == "bfloat16"
    if config.precision == "bfloat16":
        return True
    return device == "cuda" and torch.cuda.is_bf16_supported()


def _load_model(resolved: ResolvedModel, config: TrainConfig):
    """The base model in fp32 (master weights), with the configured dropout set before its layers are built."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolved.base if resolved.kind == "adapter" else resolved.path
    model_config = AutoConfig.from_pretrained(path)
    for name in _DROPOUT_FIELDS:
        if isinstance(getattr(model_config, name, None), float):
            setattr(model_config, name, config.dropout)
    kwargs = {"attn_implementation": config.attn_implementation} if config.attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(path, config=model_config, dtype=torch.float32, **kwargs)
    if resolved.kind == "adapter":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, resolved.path).merge_and_unload()
    return model


def resolve_batching(config: TrainConfig, model) -> str:
    if config.batching != "auto":
        return config.batching
    attn = str(getattr(model.config, "_attn_implementation", "") or "")
    return "padding_free" if attn.startswith("flash_attention") else "padded"


def _token_lengths(tokenizer, examples: Sequence[Example]) -> list[int]:
    texts = [tokenizer.apply_chat_template(ex.messages, tokenize=False) for ex in examples]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _hf_dataset(examples: Sequence[Example]):
    from datasets import Dataset

    # Conversational prompt-completion rows: trl renders them through the chat template and masks the
    # prompt out of the loss (completion-only loss).
    return Dataset.from_list([{"prompt": ex.prompt, "completion": ex.completion} for ex in examples])


# ---------------------------------------------------------------------------------------------- trainer


def _trainer_class():
    import torch
    from transformers import TrainerCallback
    from trl import SFTTrainer

    class HumpbackSFTTrainer(SFTTrainer):
        def __init__(self, *args, min_lr_ratio: float = 1.0, batching: str = "padded", **kwargs):
            self._min_lr_ratio = min_lr_ratio
            self.batching = batching  # the resolved batching mode (config "auto" made concrete)
            super().__init__(*args, **kwargs)

        def create_scheduler(self, num_training_steps: int, optimizer=None):
            # Linear warmup, then linear decay to min_lr_ratio * lr (the paper: 1e-5 -> 9e-6). Built here
            # because the step count is only known once the Trainer has sized the dataloader.
            if self.lr_scheduler is None:
                warmup = self.args.get_warmup_steps(num_training_steps)
                floor = self._min_lr_ratio
                decay = max(1, num_training_steps - warmup)

                def factor(step: int) -> float:
                    if step < warmup:
                        return (step + 1) / (warmup + 1)
                    return 1.0 - (1.0 - floor) * min(1.0, (step - warmup) / decay)

                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
            return self.lr_scheduler

        def _compact_head_ok(self, model) -> bool:
            from trl.kernels.chunked_logprob import _use_triton

            if isinstance(model, torch.nn.parallel.DistributedDataParallel):
                return False  # the backbone called past DDP's forward would skip its gradient all-reduce
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            cfg = base.config.get_text_config()
            plain_head = not any(getattr(cfg, a, None) for a in (
                "final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                "logits_scaling"))
            return (not _use_triton(base.device) and plain_head and not self.aux_loss_enabled
                    and self.args.loss_type == "nll" and self.label_smoother is None
                    and self.compute_loss_func is None and hasattr(base, base.base_model_prefix))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # Without Triton (CPU), trl's fused LM head falls back to torch tiles that project every position,
            # prompt included, and recompute them in backward. Projecting only the completion positions is
            # the same loss and made SmolLM2 batches 1.3x faster on CPU (tools/bench/train.py, docs/train.md).
            if return_outputs or not self._compact_head_ok(model):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            labels = inputs["labels"]
            backbone_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            backbone_inputs["use_cache"] = False
            # accelerate puts bf16 autocast around the wrapped model's forward; the backbone called directly
            # here would run in fp32 without this (on a CPU with AMX, bf16 matmuls are ~4x faster)
            with torch.autocast(device_type=base.device.type, dtype=torch.bfloat16, enabled=bool(self.args.bf16)):
                hidden = getattr(base, base.base_model_prefix)(**backbone_inputs).last_hidden_state[:, :-1]
                targets = labels[:, 1:]
                mask = targets != -100
                logits = base.get_output_embeddings()(hidden[mask]).float()
            logp = torch.log_softmax(logits, dim=-1)
            picked = logp.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
            denom = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = -picked.sum() / torch.as_tensor(denom, device=picked.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            with torch.no_grad():
                n_valid = int(mask.sum())
                entropy = -(logp.exp() * logp).sum(-1).sum().item()
                correct = (logits.argmax(-1) == targets[mask]).sum().item()
                metrics = self._metrics["train" if model.training else "eval"]
                metrics["entropy"].append(entropy / n_valid if n_valid else 0.0)
                metrics["mean_token_accuracy"].append(correct / n_valid if n_valid else 0.0)
                if model.training:
                    if "attention_mask" in inputs:
                        self._total_train_tokens += int(inputs["attention_mask"].sum())
                    else:
                        self._total_train_tokens += int(inputs["position_ids"].size(1))
                metrics["num_tokens"] = [self._total_train_tokens]
            return loss

        def _send_telemetry(self):
            # A data-engine run never pings a hub.
            return None

        def create_model_card(self, *args, **kwargs):
            # Our own card is written when the model is published; none inside checkpoints.
            return None

    class ProgressCallback(TrainerCallback):
        """Logs one line per logged step and keeps step wall times for the card and the benchmark."""

        def __init__(self):
            self.step_times: list[float] = []
            self.tokens = 0.0
            self._t0 = 0.0
            self._started = None

        def on_train_begin(self, args, state, control, **kwargs):
            from ...core.progress import Meter

            self._started = time.perf_counter()
            if not state.is_world_process_zero:  # one live line for a torchrun: the first process's
                return
            # the live line only: the step lines below are the log's record
            self.meter = Meter("steps", state.max_steps, every_s=None)
            if state.global_step:  # resumed from a checkpoint
                self.meter.update(state.global_step, replayed=True)

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_times.append(time.perf_counter() - self._t0)

        def on_save(self, args, state, control, **kwargs):
            fault_point("train.checkpoint_saved")  # called once the checkpoint folder is complete

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "num_tokens" in logs:
                self.tokens = float(logs["num_tokens"])
            if "loss" in logs:
                step_s = self.step_times[-1] if self.step_times else float("nan")
                meter = getattr(self, "meter", None)
                if meter is not None:
                    meter.update(state.global_step - meter.done, extra=f"loss {logs['loss']:.3f}")
                log.info("step %d/%d  loss %.4f  lr %.3g  %.2f s/step", state.global_step, state.max_steps,
                         logs["loss"], logs.get("learning_rate", float("nan")), step_s)

    return HumpbackSFTTrainer, ProgressCallback


def build_trainer(
    examples: Sequence[Example], resolved: ResolvedModel, config: TrainConfig, checkpoint_dir: Path,
    tokenizer=None,
):
    """An ``SFTTrainer`` over ``examples`` (already length-filtered), and its progress callback."""
    from trl import SFTConfig

    device = _device(config)
    tokenizer = tokenizer or load_tokenizer(resolved)
    n = len(examples)
    batch_size = config.effective_batch_size(n)
    if batch_size % config.processes:
        raise TrainingError(f"batch size {batch_size} is not a multiple of processes {config.processes}; set "
                            "batch_size")
    micro, accumulation = config.micro_and_accumulation(batch_size // config.processes, device)
    model = _load_model(resolved, config)
    batching = resolve_batching(config, model)
    args = SFTConfig(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulation,
        learning_rate=config.effective_learning_rate(),
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a value below 1 is a fraction of the total steps
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        # Packing needs a row length; padding-free without packing must not truncate (trl refuses), and
        # over-long examples were already dropped.
        max_length=config.max_length if batching != "padding_free" else None,
        packing=batching == "packing",
        packing_strategy="bfd",
        padding_free=batching in ("padding_free", "packing"),
        completion_only_loss=True,
        bf16=_bf16(config, device),
        fp16=False,
        use_cpu=device == "cpu",
        activation_checkpointing=config.activation_checkpointing,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        train_sampling_strategy="group_by_length" if batching == "padded" and config.group_by_length
        else "random",
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=config.seed,
        data_seed=config.seed,
        **config.sft,  # never a field set above (TrainConfig refuses those)
    )
    peft_config = None
    if config.lora.enabled:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora.r, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                                 target_modules=config.lora.target_modules, task_type="CAUSAL_LM")
    trainer_cls, callback_cls = _trainer_class()
    progress = callback_cls()
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=_hf_dataset(examples),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[progress],
            min_lr_ratio=config.min_lr_ratio,
            batching=batching,
        )
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    # Our ProgressCallback logs each step as one line; the Trainer's printer would repeat it as a dict.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer, progress


# ---------------------------------------------------------------------------------------------- the run


def _check_output(output: Path, fingerprint: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The summary of a finished identical training at OUTPUT, None if OUTPUT is free; errors otherwise."""
    marker = output / MARKER
    if marker.is_file():
        summary = json.loads(marker.read_text())
        if summary.get("fingerprint") == fingerprint:
            return summary
        raise TrainingError(
            f"{output} already holds a finished {summary.get('kind', '?')} training of different data or "
            "config; choose another --output or remove that folder"
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise TrainingError(f"{output} exists and is not a finished humpback training; remove it or choose "
                            "another --output")
    return None


def run_training(
    kind: str, examples: list[Example], stats: list[SourceStats], output: str | os.PathLike, config: TrainConfig,
) -> TrainResult:
    """Train on ``examples`` into ``output`` (resuming, or skipping a finished run); see the module doc."""
    import torch

    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run_training(kind, examples, stats, output, config)
    finally:
        torch.set_num_threads(threads)


def _run_training(
    kind: str, examples: list[Example], stats: list[SourceStats], output: str | os.PathLike, config: TrainConfig,
) -> TrainResult:
    from filelock import FileLock, Timeout

    output = Path(output).expanduser().absolute()
    resolved = resolve(config.base_model)
    tokenizer = load_tokenizer(resolved)

    # Over-long examples are dropped rather than truncated: a truncated completion loses its end-of-turn
    # token and would teach the model not to stop.
    lengths = _token_lengths(tokenizer, examples)
    kept: list[Example] = []
    for ex, length in zip(examples, lengths):
        if length > config.max_length:
            stats[ex.source_index].too_long += 1
        else:
            kept.append(ex)
    if not kept:
        raise TrainingError(f"no training examples left: all {len(examples)} are longer than max_length "
                            f"{config.max_length} tokens")
    if len(kept) < len(examples):
        log.warning("dropped %d of %d examples longer than max_length=%d tokens",
                    len(examples) - len(kept), len(examples), config.max_length)
    examples = kept

    fingerprint = _fingerprint(kind, examples, config)
    finished = _check_output(output, fingerprint)
    work = work_dir(output)
    if finished is not None:
        log.info("%s is already trained (same data and config): nothing to do", output)
        shutil.rmtree(work, ignore_errors=True)  # left over if a kill came between publish and cleanup
        return TrainResult(output, True, finished)

    work.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(work / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TrainingError(f"another process is training into {output} right now") from None
    try:
        fp_path = work / FINGERPRINT
        if fp_path.is_file():
            previous = json.loads(fp_path.read_text())
            if previous != fingerprint:
                raise TrainingError(
                    f"{work} holds checkpoints of a different training (data or config changed); remove it to "
                    "start over, or rerun with the original inputs to resume"
                )
        else:
            shutil.rmtree(work / CHECKPOINTS, ignore_errors=True)
            write_json(fingerprint, fp_path)
        write_parquet([{"messages": ex.messages, "origin": ex.origin} for ex in examples], work / TRAIN_DATA,
                      "training")

        final = work / "final"
        assembled = _finished_summary(final, fingerprint)
        if assembled is not None:  # killed between assembling the model and publishing it
            log.info("publishing the model already assembled in %s", final)
            _publish(final, output)
            shutil.rmtree(work, ignore_errors=True)
            return TrainResult(output, False, assembled)

        checkpoint_dir = work / CHECKPOINTS
        latest = _latest_checkpoint(checkpoint_dir)
        if latest:
            log.info("resuming from %s (step %d)", latest[1], latest[0])
        else:
            log.info("training %s model on %d examples from %s%s", kind, len(examples), config.base_model,
                     f" in {config.processes} processes" if config.processes > 1 else "")
        started = time.perf_counter()
        shutil.rmtree(final, ignore_errors=True)
        if config.processes > 1:
            trained = _train_distributed(work, config, latest, final)
        else:
            trained = train_and_save(examples, resolved, config, checkpoint_dir, tokenizer, latest, final)
        runtime = time.perf_counter() - started

        fault_point(f"train.saved:{output.name}", final, actions={"perturb": lambda: perturb_weights(final)})
        shutil.copy2(work / TRAIN_DATA, final / TRAIN_DATA)
        summary = _summary(kind, examples, stats, config, resolved, trained, runtime, latest[0] if latest else 0,
                           fingerprint, output)
        plot_loss_curve(trained.log_history, final / "loss_curve.png", f"humpback {kind}: {output.name}")
        (final / "README.md").write_text(render_model_card(summary), encoding="utf-8")
        # The marker goes in last: a folder with it is a complete training.
        write_json(summary, final / MARKER)
        fault_point("train.before_publish")
        _publish(final, output)
    finally:
        lock.release()
    if config.keep_checkpoints:
        log.info("checkpoints kept in %s", checkpoint_dir)
    else:
        shutil.rmtree(work, ignore_errors=True)
    log.info("saved %s model to %s (final loss %s)", kind, output, summary["results"]["final_loss"])
    return TrainResult(output, False, summary)


@dataclass
class Trained:
    """What a finished trainer leaves for the summary: plain values, so a torchrun child can hand them over."""

    log_history: list[dict[str, Any]]
    global_step: int
    max_steps: int
    epoch: Optional[float]
    train_loss: float
    step_times: list[float]
    tokens: float
    learning_rate: float
    weight_decay: float
    max_grad_norm: float
    micro_batch_size: int
    gradient_accumulation: int
    processes: int
    bf16: bool
    device: str
    batching: str
    saved_as: str


def train_and_save(examples: Sequence[Example], resolved: ResolvedModel, config: TrainConfig, checkpoint_dir: Path,
                   tokenizer, latest: Optional[tuple[int, Path]], final: Path) -> Trained:
    """Train (resuming from ``latest``) and save the model into ``final``; in every process of a torchrun."""
    trainer, progress = build_trainer(examples, resolved, config, checkpoint_dir, tokenizer)
    if latest and _is_last(latest[1]):
        # transformers trains one step more when resumed from the checkpoint of its last step, so the weights
        # of that checkpoint are taken as they are
        log.info("the last step's checkpoint %s is complete: no training left", latest[1])
        train_output = _load_finished_checkpoint(trainer, latest[1])
    else:
        train_output = trainer.train(resume_from_checkpoint=str(latest[1]) if latest else None)
    saved_as = _save_model(trainer, tokenizer, config, resolved, final)
    args, state = trainer.args, trainer.state
    return Trained(log_history=state.log_history, global_step=state.global_step, max_steps=state.max_steps,
                   epoch=state.epoch, train_loss=train_output.training_loss, step_times=progress.step_times,
                   tokens=progress.tokens, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                   max_grad_norm=args.max_grad_norm, micro_batch_size=args.per_device_train_batch_size,
                   gradient_accumulation=args.gradient_accumulation_steps, processes=args.world_size,
                   bf16=bool(args.bf16), device=str(args.device), batching=trainer.batching, saved_as=saved_as)


DISTRIBUTED_SPEC = "distributed.json"
DISTRIBUTED_RESULT = "distributed_result.json"


def _train_distributed(work: Path, config: TrainConfig, latest: Optional[tuple[int, Path]], final: Path) -> Trained:
    """``config.processes`` data-parallel processes under torchrun (humpback.stages.train.distributed), each
    reading the examples from ``work``/train_data.parquet; the first one saves the model and what it trained."""
    import subprocess
    import sys

    from dataclasses import fields

    result = work / DISTRIBUTED_RESULT
    result.unlink(missing_ok=True)
    write_json({"config": config.model_dump(mode="json"), "latest": [latest[0], str(latest[1])] if latest else None,
                "final": str(final)}, work / DISTRIBUTED_SPEC)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={config.processes}",
               "-m", "humpback.stages.train.distributed", str(work)]
    log.info("torchrun: %s", " ".join(command))
    done = subprocess.run(command)
    if done.returncode != 0 or not result.is_file():
        raise TrainingError(f"distributed training ({config.processes} processes) failed with exit code "
                            f"{done.returncode}; its processes' output is above (or in the stage's log)")
    data = json.loads(result.read_text())
    return Trained(**{f.name: data[f.name] for f in fields(Trained)})


def _publish(final: Path, output: Path) -> None:
    if output.exists():
        output.rmdir()  # empty (checked before training); os.replace cannot replace a non-empty folder
    os.replace(final, output)


def _finished_summary(final: Path, fingerprint: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The summary of a model completely assembled in ``final`` for this very training, else None."""
    try:
        summary = json.loads((final / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("fingerprint") == fingerprint else None


def _is_last(checkpoint: Path) -> bool:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return 0 < state.get("max_steps", 0) <= state.get("global_step", 0)


def _load_finished_checkpoint(trainer, checkpoint: Path):
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return TrainOutput(trainer.state.global_step, sum(losses) / len(losses) if losses else float("nan"), {})


def _save_model(trainer, tokenizer, config: TrainConfig, resolved: ResolvedModel, final: Path) -> str:
    model = trainer.model
    if not config.lora.enabled:
        trainer.save_model(str(final))  # the first process of a torchrun writes it
        saved_as = "full"
    elif not trainer.is_world_process_zero():
        saved_as = "merged" if config.lora.save == "merged" or resolved.kind == "adapter" else "adapter"
    elif config.lora.save == "merged" or resolved.kind == "adapter":
        if resolved.kind == "adapter" and config.lora.save == "adapter":
            log.warning("the base is itself an adapter (merged for training); saving the merged model instead "
                        "of an adapter on an adapter")
        model.merge_and_unload().save_pretrained(str(final))
        tokenizer.save_pretrained(str(final))
        saved_as = "merged"
    else:
        model.save_pretrained(str(final))
        tokenizer.save_pretrained(str(final))
        # peft records the local folder it loaded; point at the reference the user gave (an alias or HF id
        # stays portable), which humpback.core.models.resolve turns back into the base model.
        cfg_path = final / "adapter_config.json"
        adapter_cfg = json.loads(cfg_path.read_text())
        ref = config.base_model
        adapter_cfg["base_model_name_or_path"] = str(Path(ref).absolute()) if Path(ref).expanduser().exists() \
            else ref
        write_json(adapter_cfg, cfg_path)
        saved_as = "adapter"
    return saved_as


def perturb_weights(folder: Path, scale: float = 10.0, seed: int = 0) -> None:
    """Add Gaussian noise of ``scale`` times each tensor's own standard deviation to every floating-point weight
    saved in ``folder``: a model really made worse, for tests of what notices it (the fault point
    ``train.saved:NAME=perturb``), not a figure faked after the fact. Ten times the spread makes the logits of
    even a random model confidently wrong, where a little noise leaves it as uniform (and as good) as it was."""
    import torch
    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(seed)
    for f in sorted(folder.glob("*.safetensors")):
        tensors = load_file(str(f))
        for key, t in tensors.items():
            if t.is_floating_point() and t.numel() > 1:
                noise = torch.randn(t.shape, generator=gen, dtype=torch.float32) * t.float().std() * scale
                tensors[key] = (t.float() + noise).to(t.dtype)
        save_file(tensors, str(f), metadata={"format": "pt"})


def _summary(kind, examples, stats, config, resolved, trained: Trained, runtime, resumed_from, fingerprint,
             output) -> dict[str, Any]:
    history = trained.log_history
    losses = [e["loss"] for e in history if "loss" in e]
    by_origin = {o: sum(1 for ex in examples if ex.origin == o) for o in (ORIGIN_SEED, ORIGIN_AUGMENTED)}
    by_origin = {o: n for o, n in by_origin.items() if n or o == ORIGIN_SEED}
    batch = trained.micro_batch_size * trained.gradient_accumulation * trained.processes
    steps_done = len(trained.step_times)
    timed = trained.step_times[1:] or trained.step_times  # the first step carries one-off warm-up costs
    hp = {
        "learning_rate": trained.learning_rate,
        "final_learning_rate": trained.learning_rate * config.min_lr_ratio,
        "lr_schedule": f"linear warmup {config.warmup_ratio:g}, then linear decay to x{config.min_lr_ratio:g}",
        "weight_decay": trained.weight_decay,
        "dropout": config.dropout,
        "batch_size": batch,
        "micro_batch_size": trained.micro_batch_size,
        "gradient_accumulation": trained.gradient_accumulation,
        "processes": trained.processes,
        "max_steps": trained.max_steps,
        "epochs": config.epochs if config.max_steps is None else None,
        "max_length": config.max_length,
        "batching": trained.batching + (" (grouped by length)" if trained.batching == "padded"
                                          and config.group_by_length else ""),
        "precision": "bf16 autocast" if trained.bf16 else "fp32",
        "max_grad_norm": trained.max_grad_norm,
        "warmup_ratio": config.warmup_ratio,
        "seed": config.seed,
        "lora": config.lora.model_dump(exclude={"enabled"}) if config.lora.enabled else None,
        "tags": config.tags,
        "seed_tag": config.seed_tag,
        "web_tag": config.web_tag,
        "min_score": config.min_score,
    }
    results = {
        "global_step": trained.global_step,
        "epochs_done": trained.epoch,
        "final_loss": losses[-1] if losses else None,
        "first_loss": losses[0] if losses else None,
        "train_loss": trained.train_loss,
        "runtime_s": round(runtime, 3),
        "steps_this_process": steps_done,
        "mean_step_s": round(sum(timed) / len(timed), 4) if timed else None,
        "tokens_this_process": trained.tokens,
        "tokens_per_s": round(trained.tokens / runtime, 2) if runtime > 0 and trained.tokens else None,
        "device": trained.device,
        "resumed_from_step": resumed_from,
    }
    return {
        "kind": kind,
        "base_model": config.base_model,
        "base_path": resolved.base if resolved.kind == "adapter" else resolved.path,
        "saved_as": trained.saved_as,
        "output_name": str(output),
        "fingerprint": fingerprint,
        "data": {"examples": len(examples), "examples_by_origin": by_origin,
                 "sources": [s.as_dict() for s in stats]},
        "hyperparameters": hp,
        "results": results,
        "config": config.model_dump(mode="json"),
        "log_history": history,
        "versions": _versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

