"""Curation scorers side by side: pairs/s of humpback (the default below 1B), pmi, rubric and rubric-generate on
the same pairs, plus the parse-failure rate of rubric-generate and each scorer's AUROC on real vs shuffled pairs.

Pairs are the shipped seed pairs, or --pairs-file (JSONL with instruction/output, e.g. a held-out FAQ set from
`make heldout`); outputs are cut to --max-output-chars.
Targets: rubric >= 5x rubric-generate, humpback >= 2x rubric-generate in pairs/s.

    .venv/bin/python tools/bench/curate.py [--pairs 64] [--rationale-tokens 256] [--pairs-file F]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from humpback.core.config import EngineConfig
from humpback.engines.transformers_engine import TransformersEngine
from humpback.evaluate.common import auroc
from humpback.stages.scorers import SCORERS, ScorerConfig, shuffled_pairs
from humpback.stages.seed import BUILTIN_SEED_PATH

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--rationale-tokens", type=int, default=256)
    ap.add_argument("--max-output-chars", type=int, default=1200)
    ap.add_argument("--pairs-file", type=Path, default=BUILTIN_SEED_PATH)
    args = ap.parse_args()

    rows = [json.loads(x) for x in args.pairs_file.read_text().splitlines() if x.strip()]
    step = max(len(rows) // args.pairs, 1)
    pairs = rows[::step][: args.pairs]
    shuffled = shuffled_pairs(pairs, seed=0)
    engine = TransformersEngine(args.model, EngineConfig(progress=False))
    print(f"model={args.model} pairs={len(pairs)} rationale<={args.rationale_tokens} tokens "
          f"outputs<={args.max_output_chars} chars")
    rates = {}
    for kind in ("humpback", "pmi", "rubric", "rubric-generate"):
        cfg = ScorerConfig(kind=kind, max_rationale_tokens=args.rationale_tokens,
                           max_output_chars=args.max_output_chars)
        scorer = SCORERS[kind](engine, cfg)
        t0 = time.perf_counter()
        real = scorer.score(pairs)
        elapsed = time.perf_counter() - t0
        rates[kind] = len(pairs) / elapsed
        fake = scorer.score(shuffled)
        a = auroc([scorer.continuous(r) for r in real], [scorer.continuous(r) for r in fake])
        extra = ""
        if kind == "rubric-generate":
            scored = real + fake
            nulls = sum(r["score"] is None for r in scored)
            extra = f", parse failures {nulls}/{len(scored)} = {nulls / len(scored):.0%}"
        a_txt = "n/a" if a is None else f"{a:.3f}"
        print(f"{kind:>16}: {rates[kind]:.3f} pairs/s ({elapsed:.1f}s), "
              f"AUROC real vs shuffled {a_txt}{extra}")
    ratio = rates["rubric"] / rates["rubric-generate"]
    print(f"ratio rubric / rubric-generate: {ratio:.1f}x  (target >= 5x)")
    print(f"ratio pmi / rubric-generate:    {rates['pmi'] / rates['rubric-generate']:.1f}x")
    print(f"ratio humpback / rubric-generate: {rates['humpback'] / rates['rubric-generate']:.1f}x  (target >= 2x)")
    print(f"ratio humpback / pmi:           {rates['humpback'] / rates['pmi']:.2f}x")


if __name__ == "__main__":
    main()
