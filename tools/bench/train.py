"""Training throughput: tokens/s with padded batches vs padding-free and packed batches, same data.

    .venv/bin/python tools/bench/train.py                         # SmolLM2-135M, 32 mixed-length examples
    .venv/bin/python tools/bench/train.py --examples 64 --threads 2
    .venv/bin/python tools/bench/train.py --compare-head   # also trl's fused LM head (humpback replaces it on CPU)
    .venv/bin/python tools/bench/train.py --model tiny --modes padded --compare-head   # tiny random Llama

Modes, each built by humpback's own trainer (trl SFTTrainer, completion-only loss, fp32):

- `padded`: random batches, right-padded;
- `grouped`: right-padded batches of similar length (humpback's default without flash attention);
- `padding_free`: each batch flattened into one sequence (trl `padding_free`);
- `packing`: best-fit rows of --max-length, flattened (trl `packing`); a batch is --batch rows.

Every mode runs one epoch over the same examples, so all process the same tokens. The modes run
interleaved, batch by batch (padded batch 1, grouped batch 1, ..., padded batch 2, ...), because on a
shared machine the load drifts over minutes and would otherwise favour whichever mode ran in a quiet
spell. A step here is forward + backward of one batch; the optimizer update is left out (it costs the
same in every mode and would only change the weights the next mode sees). Tokens are real (non-pad)
tokens, so padded batches are charged for their padding but not credited for it. One untimed batch per
mode warms up first. Prints tokens/s per mode and the ratio of each to `padded`; with `--compare-head`
also the largest relative difference between the two losses of the same batch (same weights, same batches).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from humpback.core.models import load_tokenizer, resolve
from humpback.stages.train import TrainConfig
from humpback.stages.train.data import forward_examples
from humpback.stages.train.sft import _token_lengths, build_trainer

# Bench mode -> (TrainConfig.batching, group_by_length).
MODES = {
    "padded": ("padded", False),
    "grouped": ("padded", True),
    "padding_free": ("padding_free", False),
    "packing": ("packing", False),
}


def load_pairs(n: int, seed: int) -> list[dict]:
    """Shipped seed pairs when present (naturally mixed lengths), else synthetic ones of spread lengths."""
    pairs = []
    for f in sorted((REPO / "humpback" / "resources" / "seed" / "parts").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                pairs.append({"instruction": row["instruction"], "output": row["output"], "source_index": 0})
    rng = random.Random(seed)
    words = ["the", "model", "reads", "a", "long", "passage", "about", "rivers", "mountains", "weather", "food"]
    while len(pairs) < n:
        length = rng.choice([20, 60, 150, 300])
        pairs.append({"instruction": "Write about " + rng.choice(words) + ".",
                      "output": " ".join(rng.choice(words) for _ in range(length)) + ".", "source_index": 0})
    rng.shuffle(pairs)
    return pairs


def batch_tokens(batch) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["position_ids"].size(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="alias, folder or HF id; `tiny`: a tiny random Llama with the SmolLM2 tokenizer")
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8, help="examples (packing: rows) per batch")
    ap.add_argument("--max-length", type=int, default=512, help="longer examples are dropped; packing row length")
    ap.add_argument("--modes", default="padded,grouped,padding_free,packing", help=f"of {', '.join(MODES)}")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cpu", action="store_true", help="force CPU even when a GPU is visible")
    ap.add_argument("--compare-head", action="store_true",
                    help="also `padded` with trl's fused LM head instead of humpback's CPU loss")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp_root = tempfile.TemporaryDirectory(prefix="bench-train-")
    if args.model == "tiny":
        from humpback.core.models import build_tiny_model

        smollm2 = resolve("smollm2-135m-instruct").path
        resolved = resolve(str(build_tiny_model(Path(tmp_root.name) / "tiny-llama", seed=0, tokenizer_from=smollm2)))
    else:
        resolved = resolve(args.model)
    tokenizer = load_tokenizer(resolved)
    candidates = forward_examples(load_pairs(args.examples * 3, args.seed), [], tags=True)
    lengths = _token_lengths(tokenizer, candidates)
    kept = [(ex, n) for ex, n in zip(candidates, lengths) if n <= args.max_length][: args.examples]
    examples = [ex for ex, _ in kept]
    lens = sorted(n for _, n in kept)
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads); {len(examples)} examples, "
          f"{sum(lens)} tokens, per example min {lens[0]} median {lens[len(lens) // 2]} max {lens[-1]}; "
          f"batch {args.batch}", flush=True)

    runs = [(m, False) for m in modes] + ([("padded", True)] if args.compare_head else [])
    state = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for mode, fused in runs:
            batching, grouped = MODES[mode]
            config = TrainConfig(batching=batching, group_by_length=grouped, batch_size=args.batch,
                                 micro_batch_size=args.batch, max_length=args.max_length, dropout=0.0,
                                 device="cpu" if args.cpu else "auto", precision="float32")
            trainer, _ = build_trainer(examples, resolved, config, Path(tmp) / f"{mode}-{fused}", tokenizer)
            trainer.model.train()
            batches = list(trainer.get_train_dataloader())
            name = mode + (" (trl fused head)" if fused else "")
            state[name] = {"trainer": trainer, "batches": batches, "fused": fused, "tokens": 0, "seconds": 0.0,
                           "steps": [], "losses": []}

        def step(s, batch) -> float:
            trainer = s["trainer"]
            batch = trainer._prepare_inputs(batch)
            loss_fn = super(type(trainer), trainer).compute_loss if s["fused"] else trainer.compute_loss
            t0 = time.perf_counter()
            loss = loss_fn(trainer.model, batch)
            loss.backward()
            trainer.model.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - t0
            s["losses"].append(loss.item())
            return seconds

        for s in state.values():  # warm-up, untimed
            step(s, s["batches"][0])
        for i in range(max(len(s["batches"]) for s in state.values())):
            for name, s in state.items():
                if i < len(s["batches"]):
                    seconds = step(s, s["batches"][i])
                    s["seconds"] += seconds
                    s["tokens"] += batch_tokens(s["batches"][i])
                    s["steps"].append(round(seconds, 1))
            print(f"  batch {i + 1}: " + ", ".join(f"{n} {s['steps'][-1]} s" for n, s in state.items()
                                                    if i < len(s["batches"])), flush=True)

    print()
    for name, s in state.items():
        s["tps"] = s["tokens"] / s["seconds"]
        print(f"{name:>26}: {s['tps']:8.1f} tokens/s  ({len(s['steps'])} batches, {s['tokens']} tokens, "
              f"{s['seconds']:.1f} s)")
    if "padded" in state:
        for name, s in state.items():
            if name != "padded":
                print(f"ratio {name} / padded: {s['tps'] / state['padded']['tps']:.2f}x")
    fused = state.get("padded (trl fused head)")
    if fused and "padded" in state:  # same weights and batches (no optimizer step): the losses must agree
        diff = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(state["padded"]["losses"], fused["losses"]))
        print(f"loss, humpback vs trl fused head: largest relative difference {diff:.2e} over "
              f"{len(fused['losses'])} batches (first: {state['padded']['losses'][0]:.6f} vs "
              f"{fused['losses'][0]:.6f})")
    tmp_root.cleanup()


if __name__ == "__main__":
    main()
