"""Refit the `humpback` scorer's blend (humpback/stages/scorers.py HUMPBACK_WEIGHTS) on held-out human pairs.

For each SET (a JSONL of instruction/output pairs) the first --dev pairs after `random.Random(0).shuffle` are
the dev split (the rest is the test split that docs/eval.md reports on, never fitted on). Every dev pair and
its typed negatives (humpback/evaluate/negatives.py; web-voice from the CORPUS given with the set) are scored
with HumpbackScorer.features; a class-balanced logistic regression of real vs negative gives the weights.
Cross-set figures (fit on one set, AUROC per kind on the other) show how well the blend carries over.

    make heldout
    .venv/bin/humpback prepare /usr/share/doc/debian-handbook/html ... -o /tmp/web-debian   # see docs/eval.md
    .venv/bin/python tools/fit_scorer.py data/heldout/debian_faq.jsonl:/tmp/web-debian \
        data/heldout/python_faq.jsonl:/tmp/web-python

Needs scikit-learn (not a humpback dependency: `pip install scikit-learn`).
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np

from humpback.core.config import EngineConfig
from humpback.engines.transformers_engine import TransformersEngine
from humpback.evaluate.common import auroc
from humpback.evaluate.negatives import KINDS, build_negatives, read_corpus_segments
from humpback.stages.scorers import HUMPBACK_WEIGHTS, HumpbackScorer, ScorerConfig

NAMES = list(HUMPBACK_WEIGHTS)


def dev_split(path: str, n: int) -> list[dict]:
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    random.Random(0).shuffle(rows)
    return [{"pair_id": r.get("id", str(i)), "instruction": r["instruction"], "output": r["output"]}
            for i, r in enumerate(rows[:n])]


def fit(x: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    weight = np.where(y, (~y).sum() / y.sum(), 1.0)
    return LogisticRegression(C=1.0, max_iter=5000).fit(x, y, sample_weight=weight)


def per_kind(values: np.ndarray, kinds: list[str]) -> dict[str, float]:
    real = [v for v, k in zip(values, kinds) if k == "real"]
    return {k: round(auroc(real, [v for v, q in zip(values, kinds) if q == k]), 3)
            for k in KINDS if k in kinds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", help="PAIRS.jsonl[:CORPUS] (CORPUS: a prepare output, for web-voice)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dev", type=int, default=40, help="dev pairs per set [40]")
    ap.add_argument("--max-output-chars", type=int, default=2000)
    args = ap.parse_args()

    engine = TransformersEngine(args.model, EngineConfig(progress=False, batch_size=16))
    scorer = HumpbackScorer(engine, ScorerConfig(kind="humpback", max_output_chars=args.max_output_chars))
    data = {}
    for spec in args.sets:
        path, _, corpus = spec.partition(":")
        pairs = dev_split(path, args.dev)
        segs = read_corpus_segments(corpus) if corpus else None
        kinds = [k for k in KINDS if segs or k != "web-voice"]
        feats, labels = [], []
        for kind, batch in [("real", pairs), *build_negatives(pairs, kinds, seed=0, corpus=segs).items()]:
            for f in scorer.features(batch):
                if f is not None:
                    feats.append([f[k] for k in NAMES])
                    labels.append(kind)
            print(f"{path}: {kind} scored", flush=True)
        data[path] = (np.array(feats), labels)

    x = np.concatenate([d[0] for d in data.values()])
    kinds = [k for d in data.values() for k in d[1]]
    model = fit(x, np.array([k == "real" for k in kinds]))
    print("weights:", json.dumps(dict(zip(NAMES, np.round(model.coef_[0], 3).tolist()))))
    print("dev AUROC per kind, in sample:", per_kind(model.decision_function(x), kinds))
    for held in data if len(data) > 1 else []:
        rest = [p for p in data if p != held]
        xr = np.concatenate([data[p][0] for p in rest])
        kr = [k for p in rest for k in data[p][1]]
        m = fit(xr, np.array([k == "real" for k in kr]))
        print(f"fitted without {held}, AUROC on it:", per_kind(m.decision_function(data[held][0]), data[held][1]))


if __name__ == "__main__":
    main()
