"""Engine throughput: humpback's continuous-batching decode loop vs a naive ``model.generate`` loop.

Both sides get the same 64 chat prompts (50-600 prompt tokens, mixed tasks so outputs end at natural
EOS at different lengths), the same model, dtype, greedy decoding and max_new_tokens. The naive side
runs ``model.generate`` over fixed batches of the same size in the given order (what a straightforward
script does). Output tokens/s of each side and their ratio are printed; target ratio >= 1.5.

    .venv/bin/python tools/bench/engine.py [--prompts 64] [--batch-size 16] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import random
import time

import torch

from humpback.core.config import EngineConfig
from humpback.engines import GenerationRequest
from humpback.engines.transformers_engine import TransformersEngine

TASKS = [
    "Give this text a short title.",
    "Summarize the text above in one sentence.",
    "List three keywords for the text above, comma separated.",
    "Explain in a short paragraph who would find the text above useful and why.",
    "Write two questions a reader might ask after reading the text above.",
    "Is the text above about software? Answer yes or no.",
]


def corpus_words() -> list[str]:
    """Real human-written text that every machine has: package long descriptions."""
    texts = []
    for dist in sorted(md.distributions(), key=lambda d: d.metadata["Name"] or ""):
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if len(body) > 2000:
            texts.append(body)
    words = " ".join(texts).split()
    if len(words) < 5000:
        raise SystemExit("not enough text in installed package metadata to build prompts")
    return words


def build_prompts(engine: TransformersEngine, n: int, seed: int = 0) -> list[list[dict]]:
    rng = random.Random(seed)
    words = corpus_words()
    prompts = []
    for i in range(n):
        target = rng.randint(50, 600)
        start = rng.randrange(0, len(words) - 1500)
        task = TASKS[i % len(TASKS)]
        lo, hi = 1, 1200
        while lo < hi:  # longest excerpt whose chat-rendered prompt stays within the target length
            mid = (lo + hi + 1) // 2
            msgs = [{"role": "user", "content": " ".join(words[start:start + mid]) + "\n\n" + task}]
            if len(engine.encode(engine.format_chat(msgs))) <= target:
                lo = mid
            else:
                hi = mid - 1
        prompts.append([{"role": "user", "content": " ".join(words[start:start + lo]) + "\n\n" + task}])
    return prompts


def naive(engine: TransformersEngine, prompts, batch_size: int, max_tokens: int) -> tuple[int, float]:
    tok, model = engine.tokenizer, engine.model
    tok.padding_side = "left"
    texts = [engine.format_chat(m) for m in prompts]
    produced = 0
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False,
                                 eos_token_id=engine.eos_ids, pad_token_id=engine.pad_id)
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            n = 0
            for t in row:
                if t in engine.eos_ids:
                    break
                n += 1
            produced += n
    return produced, time.perf_counter() - t0


def ours(engine: TransformersEngine, prompts, max_tokens: int) -> tuple[int, float]:
    reqs = [GenerationRequest(messages=m, temperature=0.0, max_tokens=max_tokens) for m in prompts]
    t0 = time.perf_counter()
    res = engine.generate(reqs)
    return sum(sum(r.completion_tokens) for r in res), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()

    engine = TransformersEngine(args.model, EngineConfig(dtype=args.dtype, batch_size=args.batch_size,
                                                         max_batch_tokens=args.batch_size * 1024, progress=False))
    prompts = build_prompts(engine, args.prompts)
    lens = sorted(len(engine.encode(engine.format_chat(m))) for m in prompts)
    print(f"model={args.model} dtype={args.dtype} threads={torch.get_num_threads()} prompts={len(prompts)} "
          f"prompt tokens min/median/max={lens[0]}/{lens[len(lens) // 2]}/{lens[-1]} "
          f"batch={args.batch_size} max_new_tokens={args.max_tokens}")
    ours(engine, prompts[:2], 8)  # warm-up both paths once
    naive(engine, prompts[:2], 2, 8)
    n_tok, t_naive = naive(engine, prompts, args.batch_size, args.max_tokens)
    o_tok, t_ours = ours(engine, prompts, args.max_tokens)
    r_naive, r_ours = n_tok / t_naive, o_tok / t_ours
    print(f"naive model.generate (fixed batches, given order): {n_tok} tokens in {t_naive:.1f}s = {r_naive:.1f} tok/s")
    print(f"humpback engine.generate (continuous batching):    {o_tok} tokens in {t_ours:.1f}s = {r_ours:.1f} tok/s")
    print(f"ratio (engine / naive): {r_ours / r_naive:.2f}x  (target >= 1.5x)")


if __name__ == "__main__":
    main()
