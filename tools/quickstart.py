"""`make quickstart`: one small Humpback round on the embedded defaults, on CPU, offline.

quickstart corpus -> prepare -> seed import -> train backward (few steps) -> augment -> train M0 (few steps)
-> curate with M0 (pmi scorer, AUROC self-check). Every stage is resumable: rerunning skips finished work.

The full multi-round loop from one YAML file (`humpback run configs/quickstart.yaml`) is not wired in yet
(issue: the loop, run configs, export); this script runs the stages that exist and says so at the end.

    .venv/bin/python tools/quickstart.py [--run-dir runs/quickstart] [--segments 40] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def stage(name: str, timings: dict):
    class _Stage:
        def __enter__(self):
            print(f"\n=== {name} ===", flush=True)
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = round(time.perf_counter() - self.t, 1)
            if exc[0] is None:
                print(f"--- {name}: {timings[name]}s", flush=True)

    return _Stage()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/quickstart")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--segments", type=int, default=40, help="segments to augment")
    ap.add_argument("--steps", type=int, default=12, help="training steps per model")
    ap.add_argument("--min-score", type=float, default=4.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from humpback.augment import AugmentConfig, run_augment
    from humpback.config import GenerationConfig
    from humpback.corpus import run_prepare
    from humpback.curate import CurateConfig, format_summary, run_curate
    from humpback.models import resolve
    from humpback.quickstart_corpus import build_quickstart_corpus
    from humpback.scorers import ScorerConfig
    from humpback.seed import import_seed
    from humpback.training import TrainConfig, train_backward, train_forward

    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    # micro-batch 2 and 1024-token examples keep CPU training under ~4 GB (8 x 2048 peaked at 16 GB)
    train_cfg = TrainConfig(base_model=args.model, max_steps=args.steps, save_steps=max(args.steps // 2, 1),
                            micro_batch_size=2, max_length=1024)

    with stage("model: resolve the packaged SmolLM2 (converted once)", timings):
        print(resolve(args.model).path)
    with stage("corpus: READMEs of the installed packages", timings):
        corpus = run / "corpus.jsonl"
        if not corpus.exists():
            print(build_quickstart_corpus(corpus).summary())
    with stage("prepare: extract, segment, filter, dedup", timings):
        print(run_prepare([str(corpus)], run / "prepared", overrides={"progress": False}).summary())
    with stage("seed: import the shipped seed set (10% held out)", timings):
        seed = run / "seed.parquet"
        if not seed.exists():
            print(import_seed(str(REPO / "seed_data" / "seed.jsonl"), str(seed), heldout_fraction=0.1).summary())
    with stage(f"train backward M_yx ({args.steps} steps)", timings):
        backward = train_backward(str(seed), run / "models" / "backward", config=train_cfg)
        print(f"{backward.output} ({'already trained' if backward.skipped else 'trained'})")
    with stage(f"augment: {args.segments} segments with M_yx", timings):
        aug = run_augment(str(run / "prepared"), str(backward.output), str(run / "augment"),
                          AugmentConfig(max_segments=args.segments, generation=GenerationConfig(max_tokens=64),
                                        round=1))
        print(f"pairs written {aug['pairs_written']} of {aug['pairs_generated']}; dropped {aug['dropped']}")
    with stage(f"train forward M0 on seed ({args.steps} steps)", timings):
        m0 = train_forward(str(seed), run / "models" / "m0", config=train_cfg)
        print(f"{m0.output} ({'already trained' if m0.skipped else 'trained'})")
    with stage("curate with M0 (pmi scorer + AUROC self-check)", timings):
        cur = run_curate(str(run / "augment"), str(m0.output), str(run / "curate"),
                         CurateConfig(scorer=ScorerConfig(kind="pmi"), min_score=args.min_score,
                                      self_check_sample=32))
        print(format_summary(cur))

    (run / "quickstart_timings.json").write_text(json.dumps(timings, indent=2))
    print("\n=== quickstart done ===")
    for name, secs in timings.items():
        print(f"{secs:>8.1f}s  {name}")
    print(f"""
Outputs in {run}/:
  prepared/segments/   corpus segments (stats.json beside them)
  seed.parquet         seed pairs (+ seed.heldout.parquet for evaluation)
  models/backward      backward model M_yx      models/m0   forward model M0 (model cards inside)
  augment/pairs        candidate pairs          augment/rejected  dropped pairs with reasons
  curate/curated       the curated tier (score >= {args.min_score:g})   curate/stats.json, score_hist.png
Next: train M1 on seed + tier:
  humpback train forward --seed {seed} --augmented {run}/curate/curated --base {args.model} --output {run}/models/m1
Not wired in yet: the multi-round loop from one YAML (`humpback run`), export to the Hub, `humpback stats`.""")


if __name__ == "__main__":
    main()
