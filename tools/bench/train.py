"""Training throughput: tokens/s with padded batches vs padding-free (and packed) batches, same data.

    .venv/bin/python tools/bench/train.py                      # SmolLM2-135M, 64 mixed-length examples
    .venv/bin/python tools/bench/train.py --steps 4 --modes padded,padding_free --threads 2
    .venv/bin/python tools/bench/train.py --compare-head       # also trl's fused LM head instead of ours

Each mode trains the same base model for --steps optimizer steps on the same examples (full fine-tuning,
fp32, one micro-batch per step): `padded` (random batches, right-padded), `grouped` (padded, batches of
similar length), `padding_free` (each batch flattened into one sequence), `packing` (best-fit rows of
--max-length, flattened). The first step is excluded from timing (one-off
allocation and kernel warm-up). Tokens are real (non-pad) tokens, so padded batches are charged for the
padding they compute but not credited for it. Prints one line per mode and the ratios to `padded`.
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

from humpback.models import load_tokenizer, resolve
from humpback.train import TrainConfig
from humpback.training.data import forward_examples
from humpback.training.sft import _token_lengths, build_trainer


def load_pairs(n: int, seed: int) -> list[dict]:
    """Shipped seed pairs when present (naturally mixed lengths), else synthetic ones of spread lengths."""
    pairs = []
    for f in sorted((REPO / "seed_data" / "parts").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                pairs.append({"instruction": row["instruction"], "output": row["output"], "source_index": 0})
    rng = random.Random(seed)
    if len(pairs) < n:
        words = "the model reads a long passage about rivers mountains weather history and food".split()
        while len(pairs) < n:
            length = rng.choice([20, 60, 150, 300])
            pairs.append({"instruction": "Write about " + rng.choice(words) + ".",
                          "output": " ".join(rng.choice(words) for _ in range(length)) + ".", "source_index": 0})
    rng.shuffle(pairs)
    return pairs[:n]


# Bench mode -> (TrainConfig.batching, group_by_length).
MODES = {
    "padded": ("padded", False),  # random batches, right-padded
    "grouped": ("padded", True),  # batches of similar length, right-padded (humpback's CPU default)
    "padding_free": ("padding_free", False),
    "packing": ("packing", False),
}


def run_mode(mode: str, examples, resolved, tokenizer, args, fused_head: bool = False) -> dict:
    import torch

    batching, grouped = MODES[mode]
    config = TrainConfig(batching=batching, group_by_length=grouped, max_steps=args.steps, batch_size=args.batch, micro_batch_size=args.batch,
                         max_length=args.max_length, dropout=0.0, save_steps=10**6, logging_steps=1,
                         precision=args.precision, device="cpu" if args.cpu else "auto")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        trainer, progress = build_trainer(examples, resolved, config, Path(tmp) / "ckpt", tokenizer)
        if fused_head:
            trainer._compact_head_ok = lambda model: False
        started = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - started
    logged = {e["step"]: e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e}
    steps = sorted(logged)
    times = progress.step_times
    timed_tokens = logged[steps[-1]] - logged[steps[0]]
    timed_s = sum(times[1:])
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"mode": mode + (" (trl fused head)" if fused_head else ""), "steps": len(times),
            "step_s": [round(t, 2) for t in times], "tokens_timed": int(timed_tokens),
            "tokens_per_s": timed_tokens / timed_s if timed_s > 0 else float("nan"), "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per mode (the first is not timed)")
    ap.add_argument("--batch", type=int, default=8, help="examples (packing: rows) per step")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the modes this many times, interleaved")
    ap.add_argument("--max-length", type=int, default=512, help="longer examples are dropped; packing row length")
    ap.add_argument("--modes", default="padded,grouped,padding_free,packing", help=f"of {', '.join(MODES)}")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "auto"])
    ap.add_argument("--cpu", action="store_true", help="force CPU even when a GPU is visible")
    ap.add_argument("--compare-head", action="store_true",
                    help="also time padding-free with trl's fused LM head (what humpback replaces on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.steps < 2:
        ap.error("--steps must be >= 2 (the first step is not timed)")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    resolved = resolve(args.model)
    tokenizer = load_tokenizer(resolved)
    examples = forward_examples(load_pairs(args.examples * 2, args.seed), [], tags=True)
    lengths = _token_lengths(tokenizer, examples)
    kept = [(ex, n) for ex, n in zip(examples, lengths) if n <= args.max_length][: args.examples]
    examples = [ex for ex, _ in kept]
    lens = sorted(n for _, n in kept)
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads), {len(examples)} examples, "
          f"tokens/example min {lens[0]} median {lens[len(lens) // 2]} max {lens[-1]}, batch {args.batch}, "
          f"{args.steps} steps per mode", flush=True)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    runs = [(m, False) for m in modes] + ([(modes[0], True)] if args.compare_head else [])
    # On a shared machine the load drifts: interleaving rounds spreads the drift over every mode.
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for mode, fused in runs:
            r = run_mode(mode, examples, resolved, tokenizer, args, fused_head=fused)
            best[r["mode"]] = max(best.get(r["mode"], 0.0), r["tokens_per_s"])
            print(f"{r['mode']:>26}: {r['tokens_per_s']:8.1f} tokens/s  (step s {r['step_s']}, "
                  f"{r['tokens_timed']} tokens timed)", flush=True)
    if "padded" in best:
        for mode, tps in best.items():
            if mode != "padded":
                print(f"ratio {mode} / padded: {tps / best['padded']:.2f}x")


if __name__ == "__main__":
    main()
