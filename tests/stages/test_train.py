"""Training (issue 5): trl SFT of the backward and forward models, on the tiny random Llama.

The tiny model runs one thread per test: on the shared 2-core machine a single thread is ~3x faster
than two fighting over cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from humpback.core.config import ConfigError, EngineConfig, load_config
from humpback.core.models import resolve
from humpback.core.records import RecordError, read_rows
from humpback.stages.seed import BUILTIN_SEED_PATH
from humpback.stages.train import (
    SEED_TAG,
    WEB_TAG,
    TrainConfig,
    TrainingError,
    backward_messages,
    forward_messages,
    train_backward,
    train_forward,
)
from humpback.stages.train.config import OPERATIONAL_KEYS
from humpback.stages.train.data import forward_examples, load_augmented, load_seed
from humpback.stages.train.sft import build_trainer


PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("How hot does water boil?", "Water boils at one hundred degrees Celsius."),
    ("Name a large animal.", "An elephant is a very large animal."),
]

FAST = {"dropout": 0.0, "threads": 1, "save_steps": 1000, "logging_steps": 5}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("seed")
    return write_jsonl(d / "seed.jsonl", [
        {"id": f"s{i}", "instruction": ins, "output": out, "source": "unit"} for i, (ins, out) in enumerate(PAIRS)
    ])


@pytest.fixture(scope="module")
def augmented_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("curated")
    table = pa.table({
        "pair_id": ["a0", "a1", "a2", "a3"],
        "instruction": ["Describe the sea.", "Explain rain.", "What is snow?", "Define wind."],
        "output": ["The sea is a vast body of salt water.", "Rain is water falling from clouds.",
                   "Snow is frozen water falling as flakes.", "Wind is moving air."],
        "score": [5.0, 4.0, 4.6, 2.0],
    })
    pq.write_table(table, d / "part-0.parquet")
    return d


@pytest.fixture(scope="module")
def backward_run(tiny_model_dir, seed_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "backward"
    config = TrainConfig(max_steps=80, learning_rate=3e-3, **FAST)
    return train_backward(seed_file, out, base=tiny_model_dir, config=config), config


# ------------------------------------------------------------------------------------------- prompts / data


def test_prompt_helpers_tags_and_template():
    assert forward_messages("Hi", "seed") == [{"role": "system", "content": SEED_TAG},
                                              {"role": "user", "content": "Hi"}]
    assert forward_messages("Hi", "web")[0]["content"] == WEB_TAG
    assert forward_messages("Hi")[0]["content"] == f"{SEED_TAG} {WEB_TAG}"  # default: both, the paper's best
    assert forward_messages("Hi", None) == [{"role": "user", "content": "Hi"}]
    with pytest.raises(ValueError, match="unknown tag"):
        forward_messages("Hi", "wiki")
    [msg] = backward_messages("Some response text.")
    assert msg["role"] == "user" and "<text>\nSome response text.\n</text>" in msg["content"]
    assert "{{" not in msg["content"] and msg["content"].rstrip().endswith("Reply with the question only.")


def test_rendered_forward_texts_carry_the_tag_of_their_origin(tiny_model_dir, seed_file, augmented_file):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    seed, seed_stats = load_seed([seed_file])
    aug, aug_stats = load_augmented([augmented_file], min_score=4.5, first_index=len(seed_stats))
    assert [p["instruction"] for p in aug] == ["Describe the sea.", "What is snow?"]
    assert aug_stats[0].below_min_score == 2 and aug_stats[0].by_score == {"4": 1, "5": 1}

    for ex in forward_examples(seed, aug, tags=True):
        text = tok.apply_chat_template(ex.messages, tokenize=False)
        own, other = (SEED_TAG, WEB_TAG) if ex.origin == "seed" else (WEB_TAG, SEED_TAG)
        assert own in text and other not in text
    untagged = forward_examples(seed, aug, tags=False)
    assert len(untagged) == 5
    for ex in untagged:
        text = tok.apply_chat_template(ex.messages, tokenize=False)
        assert SEED_TAG not in text and WEB_TAG not in text
        assert all(m["role"] != "system" for m in ex.messages)


def test_min_score_without_score_column_names_the_file(tmp_path):
    f = write_jsonl(tmp_path / "pairs.jsonl", [{"instruction": "a", "output": "b"}])
    with pytest.raises(RecordError, match=r"pairs\.jsonl.*score"):
        load_augmented([f], min_score=4.0)
    rows, _ = load_augmented([f], min_score=None)
    assert len(rows) == 1


def test_config_rejects_unknown_keys(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("learning_rate: 2.0e-5\nbatchsize: 4\n")
    with pytest.raises(ConfigError, match="batchsize: unknown key"):
        load_config(TrainConfig, cfg)
    loaded = load_config(TrainConfig, None, {"lora.enabled": True, "max_steps": 3})
    assert loaded.lora.enabled and loaded.max_steps == 3
    assert loaded.effective_learning_rate() == 1e-4 and TrainConfig().effective_learning_rate() == 1e-5
    assert TrainConfig().effective_batch_size(2999) == 8 and TrainConfig().effective_batch_size(3000) == 32
    assert TrainConfig(micro_batch_size=8).micro_and_accumulation(32) == (8, 4)
    assert TrainConfig(micro_batch_size=5).micro_and_accumulation(8) == (4, 2)
    assert TrainConfig().micro_and_accumulation(8, "cpu") == (2, 4)
    assert TrainConfig().micro_and_accumulation(32, "cuda") == (8, 4)


def test_sft_keys_are_checked_at_load(tmp_path):
    import dataclasses

    from trl import SFTConfig

    from humpback.stages.train.config import MANAGED_SFT_FIELDS

    cfg = tmp_path / "train.yaml"
    cfg.write_text("sft:\n  adam_beta2: 0.95\n  foo: 1\n")
    with pytest.raises(ConfigError, match=r"(?m)^  sft\.foo: not a trl SFTConfig field$"):
        load_config(TrainConfig, cfg)
    cfg.write_text("sft:\n  learning_rate: 1.0e-4\n")
    with pytest.raises(ConfigError, match=r"(?m)^  sft\.learning_rate: set by humpback; use learning_rate$"):
        load_config(TrainConfig, cfg)
    # the managed list names real SFTConfig fields (a renamed one would silently pass through otherwise)
    assert set(MANAGED_SFT_FIELDS) <= {f.name for f in dataclasses.fields(SFTConfig)}


def test_sft_keys_reach_the_trainer_and_the_fingerprint(tiny_model_dir, seed_file, tmp_path, monkeypatch):
    import trl

    from humpback.stages.train.config import MANAGED_SFT_FIELDS
    from humpback.stages.train.sft import _fingerprint

    passed = {}

    class RecordingSFTConfig(trl.SFTConfig):
        def __init__(self, **kwargs):
            passed.update(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(trl, "SFTConfig", RecordingSFTConfig)
    examples = _examples(seed_file)
    config = TrainConfig(sft={"adam_beta2": 0.95, "optim": "adamw_torch"}, **FAST)
    trainer, _ = build_trainer(examples, resolve(tiny_model_dir), config, tmp_path / "ckpt")
    assert trainer.args.adam_beta2 == 0.95 and trainer.args.optim == "adamw_torch"
    # every field humpback sets is refused under `sft:` (else it would collide as a duplicate keyword)
    assert "output_dir" in passed and set(passed) - set(config.sft) <= set(MANAGED_SFT_FIELDS)
    assert trainer.args.learning_rate == 1e-5  # humpback's keys still set the rest
    assert _fingerprint("backward", examples, config) != _fingerprint("backward", examples, TrainConfig(**FAST))
    # an empty `sft:` and one process leave the config hash of trainings made before those keys existed unchanged
    # (they still resume); more processes change what is trained (the data order)
    import hashlib

    old = {k: v for k, v in TrainConfig(**FAST).model_dump(mode="json").items()
           if k not in OPERATIONAL_KEYS and k not in ("sft", "processes")}
    assert _fingerprint("backward", examples, TrainConfig(processes=2, **FAST)) != \
        _fingerprint("backward", examples, TrainConfig(**FAST))
    assert _fingerprint("backward", examples, TrainConfig(**FAST))["config_sha256"] == \
        hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()


def test_latest_checkpoint_skips_and_removes_interrupted_saves(tmp_path):
    from humpback.stages.train.sft import _latest_checkpoint

    ckpts = tmp_path / "checkpoints"
    for step, state in ((5, {"global_step": 5}), (10, None), (15, "{truncated")):
        d = ckpts / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"x")
        if state is not None:
            (d / "trainer_state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    assert _latest_checkpoint(ckpts) == (5, ckpts / "checkpoint-5")
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-5"]
    assert _latest_checkpoint(tmp_path / "none") is None


def test_output_that_is_not_a_training_is_refused(tiny_model_dir, seed_file, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="not a finished humpback training"):
        train_backward(seed_file, out, base=tiny_model_dir, config=TrainConfig(max_steps=1, **FAST))
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------- loss masking


def _examples(seed_file):
    from humpback.stages.train.data import backward_examples

    pairs, _ = load_seed([seed_file])
    return backward_examples(pairs)


def test_completion_only_loss_masks_the_prompt(tiny_model_dir, seed_file, tmp_path):
    examples = _examples(seed_file)
    trainer, _ = build_trainer(examples, resolve(tiny_model_dir), TrainConfig(batching="padded", **FAST),
                               tmp_path / "ckpt")
    tok = trainer.processing_class
    rows = [trainer.train_dataset[i] for i in range(len(examples))]
    batch = trainer.data_collator(rows)
    for row, ex, ids, labels in zip(rows, examples, batch["input_ids"], batch["labels"]):
        n = len(row["input_ids"])
        prompt_text = tok.apply_chat_template(ex.prompt, tokenize=False, add_generation_prompt=True)
        prompt_len = len(tok(prompt_text, add_special_tokens=False)["input_ids"])
        assert (labels[:prompt_len] == -100).all()  # the whole prompt, output text included, is masked
        trained = labels[prompt_len:n]
        assert (trained == ids[prompt_len:n]).all()
        # exactly the instruction and the end of turn are learned
        assert tok.decode(trained).strip() == ex.completion[0]["content"] + "<|im_end|>"
        assert (labels[n:] == -100).all()  # padding


def test_padding_free_loss_equals_padded_loss(tiny_model_dir, seed_file, tmp_path):
    import torch

    examples = _examples(seed_file)
    losses = {}
    for batching in ("padded", "padding_free"):
        trainer, _ = build_trainer(examples, resolve(tiny_model_dir), TrainConfig(batching=batching, **FAST),
                                   tmp_path / batching)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(examples))])
        if batching == "padded":
            assert batch["input_ids"].shape[0] == len(examples)
            with torch.no_grad():  # the model's own (full-logits) loss as the reference
                reference = trainer.model(**batch).loss.item()
        else:
            assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
        with torch.no_grad():
            losses[batching] = trainer.compute_loss(trainer.model, dict(batch)).item()
    assert losses["padded"] == pytest.approx(reference, rel=1e-4)
    # Flattened examples must not attend across their boundaries: the loss would differ.
    assert losses["padding_free"] == pytest.approx(losses["padded"], rel=1e-4)


def test_trl_internals_the_cpu_loss_uses_are_there(tiny_model_dir, seed_file, tmp_path):
    """HumpbackSFTTrainer.compute_loss reaches into trl; on a trl that moved them this fails saying what."""
    import inspect

    import torch
    import trl
    from packaging.requirements import Requirement
    from trl import SFTTrainer

    problems = []
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: no range check, the internals below are checked all the same
        tomllib = None
    if tomllib is not None:
        pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
        pin = next(Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("trl"))
        if not pin.specifier.contains(trl.__version__):
            problems.append(f"outside the pinned range {pin}")
    try:
        from trl.kernels.chunked_logprob import _use_triton

        if list(inspect.signature(_use_triton).parameters) != ["device"]:
            problems.append(f"trl.kernels.chunked_logprob._use_triton{inspect.signature(_use_triton)} is not (device)")
    except ImportError as e:
        problems.append(f"no trl.kernels.chunked_logprob._use_triton ({e})")
    params = list(inspect.signature(SFTTrainer.compute_loss).parameters)
    if params != ["self", "model", "inputs", "return_outputs", "num_items_in_batch"]:
        problems.append(f"SFTTrainer.compute_loss takes {params}")
    trainer, _ = build_trainer(_examples(seed_file), resolve(tiny_model_dir),
                               TrainConfig(batching="padded", **FAST), tmp_path / "ckpt")
    for name in ("_metrics", "_total_train_tokens", "aux_loss_enabled", "label_smoother", "compute_loss_func"):
        if not hasattr(trainer, name):
            problems.append(f"SFTTrainer has no attribute {name}")
    assert not problems, (f"trl {trl.__version__} does not fit humpback's CPU loss (HumpbackSFTTrainer.compute_loss): "
                          + "; ".join(problems))
    assert trainer._compact_head_ok(trainer.model)  # on CPU the subclass's loss is the one in use
    # ...and it is trl's own loss, with trl's own metrics: same batch, same weights, both ways
    trainer.model.train()  # metrics (num_tokens) are kept for training batches; dropout is 0 here
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    logged = {}
    for name, loss_fn in (("humpback", trainer.compute_loss), ("trl", super(type(trainer), trainer).compute_loss)):
        trainer._metrics["train"].clear()
        trainer._total_train_tokens = 0
        with torch.no_grad():
            loss = loss_fn(trainer.model, dict(batch)).item()
        logged[name] = {"loss": loss, **{k: v[-1] for k, v in trainer._metrics["train"].items()}}
    assert set(logged["humpback"]) == set(logged["trl"]) >= {"loss", "entropy", "mean_token_accuracy", "num_tokens"}
    for key, value in logged["trl"].items():
        assert logged["humpback"][key] == pytest.approx(value, rel=1e-4), key


# ------------------------------------------------------------------------------------------- training runs


def test_backward_model_memorises_and_loss_falls(backward_run):
    from humpback.engines import GenerationRequest
    from humpback.engines.transformers_engine import TransformersEngine

    result, _ = backward_run
    res = result.summary["results"]
    assert res["global_step"] == 80
    assert res["final_loss"] < res["first_loss"] / 3, res

    engine = TransformersEngine(str(result.output), EngineConfig(dtype="float32", progress=False))
    outs = engine.generate([GenerationRequest(messages=backward_messages(out), temperature=0.0, max_tokens=24)
                            for _, out in PAIRS])
    assert [o.text.strip() for o in outs] == [ins for ins, _ in PAIRS]


def test_backward_output_folder_is_a_published_model_with_card(backward_run, tiny_model_dir):
    result, _ = backward_run
    out = result.output
    assert resolve(out).kind == "local"
    assert not out.with_name(out.name + ".partial").exists()  # checkpoints cleaned after publishing
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "loss_curve.png",
                 "train_data.parquet", "humpback_train.json"):
        assert (out / name).is_file(), name
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (out / "README.md").read_text()
    assert tiny_model_dir in card and "loss_curve.png" in card
    assert "| seed | `seed.jsonl` | 3 |" in card and "unit: 3" in card
    assert "| learning_rate | 0.003 |" in card and "| weight_decay | 0.1 |" in card
    assert f"{result.summary['results']['final_loss']:.4g}" in card
    rows = read_rows(out / "train_data.parquet", "training")
    assert [r["messages"][-1]["content"] for r in rows] == [ins for ins, _ in PAIRS]
    assert rows[0]["messages"][:-1] == backward_messages(PAIRS[0][1]) and {r["origin"] for r in rows} == {"seed"}


def test_rerun_of_finished_training_does_nothing(backward_run, seed_file, tiny_model_dir, tmp_path):
    result, config = backward_run
    before = (result.output / "model.safetensors").stat().st_mtime_ns
    again = train_backward(seed_file, result.output, base=tiny_model_dir, config=config)
    assert again.skipped and again.summary == result.summary
    assert (result.output / "model.safetensors").stat().st_mtime_ns == before
    other = write_jsonl(tmp_path / "other.jsonl", [{"instruction": "x?", "output": "y."}])
    with pytest.raises(TrainingError, match="different data or config"):
        train_backward(other, result.output, base=tiny_model_dir, config=config)


def test_forward_training_mixes_tagged_seed_and_curated_tier(tiny_model_dir, seed_file, augmented_file, tmp_path):
    out = tmp_path / "m1"
    result = train_forward(seed_file, out, augmented=[augmented_file], base=tiny_model_dir, min_score=4.5,
                           config=TrainConfig(max_steps=2, **FAST))
    data = result.summary["data"]
    assert data["examples_by_origin"] == {"seed": 3, "augmented": 2}
    rows = read_rows(out / "train_data.parquet", "training")
    for r in rows:
        assert r["messages"][0] == {"role": "system", "content": SEED_TAG if r["origin"] == "seed" else WEB_TAG}
    card = (out / "README.md").read_text()
    assert "| augmented | `part-0.parquet` | 4 | 0 | 2 | 0 | 2 | score 4: 1, score 5: 1 |" in card
    assert "Augmented tier: score >= 4.5." in card
    assert result.summary["hyperparameters"]["batch_size"] == 8  # paper: 8 below 3000 examples


@pytest.mark.parametrize("save", ["adapter", "merged"])
def test_lora_model_loads_in_the_engine(tiny_model_dir, seed_file, tmp_path, save):
    from humpback.engines import GenerationRequest
    from humpback.engines.transformers_engine import TransformersEngine

    out = tmp_path / f"lora-{save}"
    config = TrainConfig(max_steps=2, lora={"enabled": True, "r": 4, "alpha": 8, "save": save}, **FAST)
    result = train_backward(seed_file, out, base=tiny_model_dir, config=config)
    assert result.summary["saved_as"] == save
    resolved = resolve(out)
    if save == "adapter":
        assert resolved.kind == "adapter" and resolved.base == str(Path(tiny_model_dir).resolve())
        assert not (out / "config.json").exists()
    else:
        assert resolved.kind == "local" and not (out / "adapter_config.json").exists()
    engine = TransformersEngine(str(out), EngineConfig(dtype="float32", progress=False))
    [res] = engine.generate([GenerationRequest(messages=backward_messages("Hello."), temperature=0.0,
                                               max_tokens=3)])
    assert res.completion_tokens[0] >= 1


@pytest.mark.slow
def test_smollm2_forward_and_backward_few_steps(smollm2_dir, tmp_path):
    shipped = BUILTIN_SEED_PATH
    if not shipped.is_file():
        pytest.skip("no shipped seed set")
    rows = [json.loads(line) for line in shipped.read_text().splitlines() if line.strip()][:16]
    seed = write_jsonl(tmp_path / "seed.jsonl", rows)
    config = TrainConfig(max_steps=2, batch_size=4, max_length=768)
    fwd = train_forward(seed, tmp_path / "m0", base="smollm2-135m-instruct", config=config)
    bwd = train_backward(seed, tmp_path / "backward", base="smollm2-135m-instruct", config=config)
    for result in (fwd, bwd):
        assert result.summary["results"]["global_step"] == 2
        assert (result.output / "README.md").is_file() and resolve(result.output).kind == "local"


def test_two_data_parallel_processes_train_one_model_with_the_global_batch(tiny_model_dir, seed_file, tmp_path):
    """train.processes: 2 runs torchrun (DDP over gloo on a CPU, NCCL on GPUs): each process takes half of every
    step's batch of 4; the launching process publishes one model with its card, as for one process."""
    from humpback.engines import GenerationRequest
    from humpback.engines.transformers_engine import TransformersEngine

    out = tmp_path / "ddp"
    config = TrainConfig(max_steps=2, batch_size=4, micro_batch_size=2, processes=2, learning_rate=1e-3, seed=0,
                         max_length=384, save_steps=1)
    result = train_forward(seed_file, out, base=tiny_model_dir, config=config)
    hp, res = result.summary["hyperparameters"], result.summary["results"]
    assert (hp["processes"], hp["batch_size"], hp["micro_batch_size"], hp["gradient_accumulation"]) == (2, 4, 2, 1)
    assert res["global_step"] == 2 and len([e for e in result.summary["log_history"] if "loss" in e]) == 2
    assert not (tmp_path / "ddp.partial").exists() and (out / "README.md").is_file()
    engine = TransformersEngine(str(out), EngineConfig(dtype="float32", progress=False))
    [gen] = engine.generate([GenerationRequest(messages=backward_messages("Hello."), temperature=0.0, max_tokens=3)])
    assert gen.completion_tokens[0] >= 1
    again = train_forward(seed_file, out, base=tiny_model_dir, config=config)  # the same training: nothing to do
    assert again.skipped
    with pytest.raises(ValueError, match="batch_size 5 is not a multiple of processes 2"):
        TrainConfig(batch_size=5, processes=2)
