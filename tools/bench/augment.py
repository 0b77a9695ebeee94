"""Augment overhead: segments/s of `humpback augment` (datatrove pipeline, checkpoints, filters, Parquet)
vs `engine.generate` alone on the same backward prompts, same sampling and seeds, model load included on
both sides. Target: augment / engine >= 0.9.

With ``--candidates 1,2,4`` it then measures best-of-k: segments/s of augment with k candidates per segment (k
samples from the backward model, PMI of the accepted ones under the selection model) against k=1, on the same
segments in one run. Give a trained backward model (``--model runs/quickstart/models/backward``) to measure what
the quickstart does; ``--batch-size`` sets the generation batch (the quickstart uses 64).

Segments come from the offline quickstart corpus (built and prepared into a temp folder).

    .venv/bin/python tools/bench/augment.py [--segments 32] [--max-tokens 64] [--candidates 1,2,4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from humpback.stages.augment import AugmentConfig, backward_messages, clean_instruction, run_augment
from humpback.core.config import EngineConfig, GenerationConfig
from humpback.stages.prepare import run_prepare
from humpback.engines import GenerationRequest, make_engine
from humpback.stages.prepare.quickstart import build_quickstart_corpus
from humpback.core.records import read_rows
from humpback.core.shards import seed_from


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--segments", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--candidates", default=None, help="comma list of k for the best-of-k cost, e.g. 1,2,4")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--selection-chars", type=int, default=600)
    ap.add_argument("--skip-overhead", action="store_true", help="only the best-of-k measurement")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_quickstart_corpus(tmp / "corpus.jsonl")
        run_prepare([str(tmp / "corpus.jsonl")], tmp / "prepared", overrides={"progress": False})
        segments = read_rows(tmp / "prepared" / "segments")[: args.segments]
        gen = GenerationConfig(max_tokens=args.max_tokens)
        engine_cfg = EngineConfig(progress=False, batch_size=args.batch_size,
                                  max_batch_tokens=max(16384, 512 * args.batch_size))
        if args.candidates:
            best_of_k(args, tmp, gen, engine_cfg, len(segments))
        if args.skip_overhead:
            return

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


def best_of_k(args, tmp: Path, gen: GenerationConfig, engine_cfg: EngineConfig, n: int) -> None:
    ks = [int(k) for k in args.candidates.split(",")]
    rates = {}
    for k in ks:
        cfg = AugmentConfig(max_segments=n, generation=gen, engine=engine_cfg, candidates=k,
                            selection={"max_output_chars": args.selection_chars, "engine": {"progress": False}})
        t0 = time.perf_counter()
        stats = run_augment(str(tmp / "prepared"), args.model, str(tmp / f"aug-k{k}"), cfg)
        rates[k] = n / (time.perf_counter() - t0)
        print(f"candidates={k}: {rates[k]:.3f} segments/s, wrote {stats['pairs_written']} of {n}, "
              f"dropped {stats['dropped'] or 'none'}")
    for k in ks:
        print(f"  k={k}: {rates[k] / rates[ks[0]]:.2f}x the segments/s of k={ks[0]}")


if __name__ == "__main__":
    main()
