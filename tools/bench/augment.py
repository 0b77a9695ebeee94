"""Augment overhead: segments/s of `humpback augment` (datatrove pipeline, checkpoints, filters, Parquet)
vs `engine.generate` alone on the same backward prompts, same sampling and seeds, model load included on
both sides. Target: augment / engine >= 0.9.

Segments come from the offline quickstart corpus (built and prepared into a temp folder).

    .venv/bin/python tools/bench/augment.py [--segments 32] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from humpback.augment import AugmentConfig, backward_messages, clean_instruction, run_augment
from humpback.config import EngineConfig, GenerationConfig
from humpback.corpus import run_prepare
from humpback.engines import GenerationRequest, make_engine
from humpback.quickstart_corpus import build_quickstart_corpus
from humpback.records import read_rows
from humpback.shards import seed_from


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--segments", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_quickstart_corpus(tmp / "corpus.jsonl")
        run_prepare([str(tmp / "corpus.jsonl")], tmp / "prepared", overrides={"progress": False})
        segments = read_rows(tmp / "prepared" / "segments")[: args.segments]
        gen = GenerationConfig(max_tokens=args.max_tokens)
        engine_cfg = EngineConfig(progress=False)

        t0 = time.perf_counter()
        engine = make_engine(args.model, engine_cfg)
        reqs = [GenerationRequest(messages=backward_messages(s["text"]), temperature=gen.temperature,
                                  top_p=gen.top_p, max_tokens=gen.max_tokens,
                                  seed=seed_from(gen.seed, s["segment_id"]))
                for s in segments]
        results = engine.generate(reqs)
        t_engine = time.perf_counter() - t0
        del engine

        t0 = time.perf_counter()
        stats = run_augment(str(tmp / "prepared"), args.model, str(tmp / "aug"),
                            AugmentConfig(max_segments=args.segments, generation=gen, engine=engine_cfg))
        t_aug = time.perf_counter() - t0

        # same seeds on both sides: augment must have produced exactly the engine's generations
        same = {s["segment_id"]: clean_instruction(r.text) for s, r in zip(segments, results)}
        pairs = read_rows(tmp / "aug" / "pairs") + read_rows(tmp / "aug" / "rejected")
        agree = sum(1 for p in pairs if same.get(p["segment_id"]) == p["instruction"])
        n = len(segments)
        print(f"model={args.model} segments={n} max_tokens={args.max_tokens}; augment wrote "
              f"{stats['pairs_written']}, dropped {stats['dropped']}; identical generations {agree}/{n}")
        print(f"engine.generate alone:  {n / t_engine:.3f} segments/s ({t_engine:.1f}s)")
        print(f"humpback augment:       {n / t_aug:.3f} segments/s ({t_aug:.1f}s)")
        print(f"ratio augment / engine: {t_engine / t_aug:.2f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
