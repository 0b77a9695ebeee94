"""A small, reproducible Humpback experiment: does curated augmentation beat seed-only and uncurated data?

Corpus: the Python 3.11 documentation (Debian package ``python3.11-doc``: howto, library, reference, tutorial,
using; the FAQ is left out because it is a held-out set), prepared with ``humpback prepare`` into segments of
600-1500 characters (the paper's window is 600-3000; the shorter one fits a 2-core CPU's training budget).
Nobody on the team wrote it. ``make heldout-corpora`` installs the package and copies the HTML.

Models, each fine-tuned from the base model with the same budget (steps, batch, learning rate, seed):
  m0             seed only (tag S_a)
  m1             seed + round 1's curated tier (score >= --min-score by m0's default scorer; tag S_w)
  m1-uncurated   seed + as many candidate pairs drawn at random (uncurated)
  m1-notags      as m1, without system tags
  m2             seed + round 2's tier (the same candidates re-curated by m1)
The backward model M_yx is trained once (the quickstart's recipe) and shared by every budget.
``cpu-wide`` is the ``cpu`` budget on every segment of the corpus (1066; a round-1 tier of a few hundred pairs),
with m0, m1 and m1-uncurated only; ``cpu-wide-a5`` the same with the paper's A5 tier (score 5) of cpu-wide's
scores.

Held-out sets, none in any training set (``make heldout``; tools/heldout_split.py), checked against the seed
and the candidates with ``eval decontam`` (flagged candidates are dropped before curation):
  seed-heldout   the shipped seed's 10% held-out split (ours: it flatters us)
  python-faq     the Python FAQ's test split (python3.11-doc; the corpus' topic, not its text)
  debian-faq     the Debian FAQ's test split (debian-faq; another topic)
``--heldout FILE`` (repeatable) adds your own human references (JSONL/Parquet with instruction and output).

Metrics (95% bootstrap intervals; differences paired over the same examples): per-token NLL of the human
reference answers under the inference tags (system ``both``); `eval backward` figures of M_yx; the default
scorer's AUROC per negative kind for each round's curating model (m0, m1); `eval diversity` of each round's tier.

Budgets (--budget): ``cpu-small`` and ``cpu`` share the candidates, round 1's tier and the random draw, and
differ in training steps alone, so together they show the trend with budget; ``gpu`` names the paper-like scale
for a GPU machine. Every step is resumable: finished models are skipped, augment and curate resume from their
checkpoints, and evaluations reuse cached model calls. ``--models`` trains and evaluates part of a budget first
(the main comparison), the rest later. ``--report`` (also run at the end of each budget) merges every finished
budget into docs/results/small_humpback.{md,json,png}. The committed results were made with:

    make heldout heldout-corpora
    .venv/bin/python tools/experiments/small_humpback.py --budget cpu --models m0,m1,m1-uncurated \
        --backward runs/quickstart/models/backward
    .venv/bin/python tools/experiments/small_humpback.py --budget cpu-small --backward runs/quickstart/models/backward
    .venv/bin/python tools/experiments/small_humpback.py --budget cpu    # adds m1-notags, round 2 and m2
    .venv/bin/python tools/experiments/small_humpback.py --budget cpu-wide --backward runs/quickstart/models/backward
    .venv/bin/python tools/experiments/small_humpback.py --budget cpu-wide-a5 --backward runs/quickstart/models/backward

(``--backward`` reuses the quickstart's backward model, trained with the same recipe on the same seed split;
without it the script trains its own.)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"
HELDOUT = REPO / "data" / "heldout"
ALL_MODELS = ["base", "m0", "m1", "m1-uncurated", "m1-notags", "m2"]
# The non-team set the experiment's verdict is read on: the corpus' topic, text nobody here wrote.
PRIMARY = "python-faq"

BUDGETS = {
    # a check that every step runs (minutes); its numbers mean nothing
    "smoke": dict(segments=24, steps=2, batch_size=4, models=["base", "m0", "m1", "m1-uncurated"],
                  heldout_max=8, scorer_sample=8, backward_sample=8, backward_steps=4),
    # Its m0 does not curate: m1 and m1-uncurated train on the cpu budget's round-1 tier and random draw, so
    # the two budgets differ in training steps alone (and cpu-small costs no curation).
    # Evaluated on the primary set only, without the (unchanged) base model: the trend needs no more.
    "cpu-small": dict(segments=384, steps=6, batch_size=8, models=["m0", "m1", "m1-uncurated"],
                      heldout_max=None, scorer_sample=0, backward_sample=0, backward_steps=40, tier_from="cpu",
                      sets=[PRIMARY]),
    "cpu": dict(segments=384, steps=16, batch_size=8, models=ALL_MODELS,
                heldout_max=None, scorer_sample=24, backward_sample=24, backward_steps=40),
    # cpu's training budget on every segment of the corpus (1066): a round-1 tier of a few hundred pairs. Its m0 is
    # cpu's (the same seed-only training); evaluated on the primary set.
    "cpu-wide": dict(segments=-1, steps=16, batch_size=8, models=["m0", "m1", "m1-uncurated"], heldout_max=None,
                     scorer_sample=0, backward_sample=0, backward_steps=40, m0_from="cpu", sets=[PRIMARY]),
    # cpu-wide with the paper's A5 tier: the pairs m0 scored 5 (cpu-wide's scores), against as many random ones
    "cpu-wide-a5": dict(segments=-1, steps=16, batch_size=8, models=["m0", "m1", "m1-uncurated"], heldout_max=None,
                        scorer_sample=0, backward_sample=0, backward_steps=40, m0_from="cpu", tier_from="cpu-wide",
                        tier_min_score=5.0, sets=[PRIMARY]),
    # the paper's scale needs a GPU: 500k segments there; here the whole Python documentation
    "gpu": dict(segments=-1, steps=600, batch_size=32, models=ALL_MODELS, heldout_max=None,
                scorer_sample=200, backward_sample=200, backward_steps=400),
}
SHARED_BY_BUDGETS = ("segments", "backward_steps")  # the candidates: cpu-small and cpu must agree on these


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


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    ap.add_argument("--run-dir", default="runs/small_humpback", help="Shared inputs here; each budget in RUN/BUDGET.")
    ap.add_argument("--corpus", action="append", default=None,
                    help="HTML/text files or folders for `humpback prepare` (default: the Python docs copied by "
                         "`make heldout-corpora`). Repeatable.")
    ap.add_argument("--max-chars", type=int, default=1500, help="Longest segment kept (prepare's segment.max_chars).")
    ap.add_argument("--backward", default=None, help="Use this trained backward model instead of training one.")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="Base model.")
    ap.add_argument("--min-score", type=float, default=4.0, help="Curated tier: score >= this (1-5).")
    ap.add_argument("--scorer", default="auto", help="Curation scorer kind (default: the project's default).")
    ap.add_argument("--heldout", action="append", default=[], metavar="FILE",
                    help="Another held-out file of human (instruction, output) pairs. Repeatable.")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=str(RESULTS), help="Where the merged results go.")
    ap.add_argument("--report", action="store_true", help="Only merge the finished budgets into --results.")
    ap.add_argument("--models", default=None,
                    help="Train and evaluate only these of the budget's models now (comma list; m0,m1,m1-uncurated "
                         "gives the main figures first); the scorer and backward checks run with the whole budget.")
    return ap.parse_args(argv)


def heldout_sets(args, run: Path) -> dict[str, Path]:
    sets = {"seed-heldout": run / "seed.heldout.parquet",
            "python-faq": HELDOUT / "python_faq.test.jsonl",
            "debian-faq": HELDOUT / "debian_faq.test.jsonl"}
    for f in args.heldout:
        sets[Path(f).stem] = Path(f)
    missing = [str(p) for n, p in sets.items() if n != "seed-heldout" and not p.is_file()]
    if missing:
        raise SystemExit(f"missing held-out set(s) {', '.join(missing)}: run `make heldout` (or fix --heldout)")
    return sets


def train_config(args, steps: int, batch_size: int, which: str):
    """The quickstart's training recipe (humpback/resources/configs/quickstart.yaml) at this budget."""
    from humpback.loop import load_run_config

    cfg = load_run_config(REPO / "humpback" / "resources" / "configs" / "quickstart.yaml").training(which)
    update = {"base_model": args.model, "max_steps": steps, "save_steps": max(steps // 2, 1), "seed": args.seed}
    if which == "forward":
        # segments are <= --max-chars characters (~4 per token) plus an instruction: nothing is dropped
        update.update(batch_size=batch_size, micro_batch_size=min(batch_size, 8),
                      max_length=max(512, args.max_chars // 3 + 128))
    return cfg.model_copy(update=update)


def shared_inputs(args, budget: dict, run: Path, timings: dict) -> dict[str, Path]:
    """Seed split, prepared corpus, backward model, candidates (decontaminated): shared by every budget."""
    from humpback.core.config import GenerationConfig
    from humpback.core.records import read_rows, write_parquet
    from humpback.evaluate.decontam import decontaminate, format_decontam_summary
    from humpback.stages.augment import AugmentConfig, run_augment
    from humpback.stages.prepare import run_prepare
    from humpback.stages.seed import import_seed
    from humpback.stages.train import is_finished, train_backward

    p = {"seed": run / "seed.parquet", "heldout": run / "seed.heldout.parquet", "prepared": run / "prepared"}
    with stage("seed: the shipped seed set, 10% held out", timings):
        if not p["seed"].exists():
            print(import_seed("builtin", str(p["seed"]), heldout_fraction=0.1, seed=args.seed).summary())
    with stage("prepare: the corpus into segments", timings):
        corpus = args.corpus or [str(HELDOUT / "web-src" / "python")]
        for c in corpus:
            if not Path(c).exists():
                raise SystemExit(f"{c}: no such corpus; run `make heldout-corpora` (or give --corpus)")
        print(run_prepare(corpus, p["prepared"], overrides={"progress": False,
                                                            "segment": {"max_chars": args.max_chars}}).summary())
    with stage("decontam: the seed against the non-team held-out sets", timings):
        sets = heldout_sets(args, run)
        seed_stats = decontaminate(str(p["seed"]), [str(s) for n, s in sets.items() if n != "seed-heldout"],
                                   output=run / "seed_decontam_flagged.jsonl")
        print(format_decontam_summary(seed_stats))
        # flagged seed pairs leave every training set, the backward model's included
        flagged = {r["pair_id"] for r in seed_stats.get("rows", [])}
        clean_seed = run / "seed.clean.parquet"
        if not clean_seed.exists():
            write_parquet([r for r in read_rows(p["seed"], "seed") if r["id"] not in flagged], clean_seed, "seed")
        p["seed"] = clean_seed
    with stage("backward model M_yx (the quickstart's recipe)", timings):
        if args.backward:
            p["backward"] = Path(args.backward)
        else:
            p["backward"] = run / "models" / "backward"
            if not is_finished(p["backward"]):
                train_backward(str(p["seed"]), p["backward"],
                               config=train_config(args, budget["backward_steps"], 8, "backward"))
        print(f"backward {p['backward']}")
    n_segments = "all" if budget["segments"] < 0 else budget["segments"]
    aug_dir = run / f"augment-{n_segments}"
    with stage(f"augment: {n_segments} segments with M_yx", timings):
        aug = run_augment(str(p["prepared"]), str(p["backward"]), str(aug_dir), AugmentConfig.model_validate({
            "max_segments": budget["segments"], "generation": GenerationConfig(max_tokens=48).model_dump(),
            "engine": {"batch_size": 64, "max_batch_tokens": 32768}, "round": 1}))
        print(f"pairs written {aug['pairs_written']}; dropped {aug['dropped']}")
    with stage("decontam: the candidates against every held-out set", timings):
        stats = decontaminate(str(aug_dir / "pairs"), [str(s) for s in sets.values()],
                              output=aug_dir / "decontam_flagged.jsonl")
        print(format_decontam_summary(stats))
        flagged = {r["pair_id"] for r in stats.get("rows", [])}
        p["candidates"] = aug_dir / "clean.parquet"
        if not p["candidates"].exists():
            write_parquet([r for r in read_rows(aug_dir / "pairs", "pair") if r["pair_id"] not in flagged],
                          p["candidates"], "pair")
        p["decontam"] = {"candidates_flagged": stats["flagged_total"], "seed_flagged": seed_stats["flagged_total"]}
    return p


def uncurated_sample(candidates: Path, n: int, out: Path, seed: int) -> Path:
    """``n`` candidate pairs drawn at random (fixed seed): the same amount of augmented data, uncurated."""
    from humpback.core.records import read_rows, write_parquet

    if not out.is_file():
        rows = read_rows(candidates, "pair")
        write_parquet(random.Random(seed).sample(rows, min(n, len(rows))), out, "pair")
    return out


def curate(args, pairs: Path, model: str, out: Path):
    from humpback.stages.curate import CurateConfig, format_summary, run_curate
    from humpback.stages.scorers import ScorerConfig

    cur = run_curate(str(pairs), model, str(out), CurateConfig(
        scorer=ScorerConfig(kind=args.scorer, max_output_chars=600), min_score=args.min_score, self_check_sample=0))
    print(format_summary(cur))
    return out / "curated"


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.report:
        return report(Path(args.run_dir), Path(args.results))
    from humpback.core.shards import count_rows
    from humpback.evaluate import EvalConfig, evaluate_diversity, evaluate_heldout, evaluate_scorers
    from humpback.evaluate.backward import METRICS as BACKWARD_METRICS
    from humpback.evaluate.backward import BackwardEvalConfig, evaluate_backward, format_backward_table
    from humpback.evaluate.heldout import format_heldout_summary
    from humpback.evaluate.scorer import ScorerSpec, format_scorer_summary
    from humpback.stages.augment import AugmentConfig
    from humpback.stages.scorers import ScorerConfig
    from humpback.stages.train import train_forward

    budget = BUDGETS[args.budget]
    run = Path(args.run_dir)
    bdir = run / args.budget
    bdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    p = shared_inputs(args, budget, run, timings)
    sets = heldout_sets(args, run)
    candidates = p["candidates"]
    cfg = train_config(args, budget["steps"], budget["batch_size"], "forward")
    want = budget["models"]
    if args.models:  # a part of the budget now, the rest later: finished models are reused
        want = ["base", *[m.strip() for m in args.models.split(",")]]
        unknown = set(want) - set(budget["models"])
        if unknown:
            raise SystemExit(f"--models: {', '.join(sorted(unknown))} not in budget {args.budget}")

    models: dict[str, str] = {"base": args.model}
    tiers: dict[str, Path] = {}

    def train(name: str, **kwargs) -> None:
        if name == "m0" and budget.get("m0_from"):  # the same training as that budget's m0
            from humpback.stages.train import is_finished

            models[name] = str(run / budget["m0_from"] / "models" / "m0")
            if not is_finished(Path(models[name])):
                raise SystemExit(f"budget {args.budget} uses {models[name]}: run --budget {budget['m0_from']} first")
            return
        with stage(f"train {name} ({budget['steps']} steps x {budget['batch_size']})", timings):
            models[name] = str(train_forward(str(p["seed"]), bdir / "models" / name, config=cfg, **kwargs).output)

    train("m0")
    if budget.get("tier_from"):
        src = run / budget["tier_from"]
        tiers["r1"], tiers["uncurated"] = src / "curate" / "r1" / "curated", src / "uncurated" / "pairs.parquet"
        if not (tiers["r1"].is_dir() and tiers["uncurated"].is_file()):
            raise SystemExit(f"budget {args.budget} trains on {src}'s round-1 tier: run --budget {budget['tier_from']} "
                             "first (--models m0,m1,m1-uncurated is enough)")
        if budget.get("tier_min_score") is not None:  # a stricter tier of the same scores, and its own random draw
            from humpback.core.records import read_rows, write_parquet

            strict = bdir / "tier" / "pairs.parquet"
            if not strict.is_file():
                write_parquet([r for r in read_rows(tiers["r1"], "curated")
                               if r["score"] is not None and r["score"] >= budget["tier_min_score"]], strict, "curated")
            tiers["r1"] = strict
            del tiers["uncurated"]
    else:
        with stage(f"curate round 1 with m0 ({args.scorer})", timings):
            tiers["r1"] = curate(args, candidates, models["m0"], bdir / "curate" / "r1")
    n_tier = count_rows(tiers["r1"])
    if n_tier == 0:
        raise SystemExit(f"round 1's tier (score >= {args.min_score}) is empty; lower --min-score")
    tiers["uncurated"] = tiers.get("uncurated") or uncurated_sample(candidates, n_tier,
                                                                    bdir / "uncurated" / "pairs.parquet", args.seed)
    train("m1", augmented=[str(tiers["r1"])])
    train("m1-uncurated", augmented=[str(tiers["uncurated"])])
    partial = args.models is not None and set(want) != set(budget["models"])
    if "m1-notags" in want:
        train("m1-notags", augmented=[str(tiers["r1"])], tags=False)
    if "m2" in want:
        with stage(f"curate round 2 with m1 ({args.scorer})", timings):
            tiers["r2"] = curate(args, candidates, models["m1"], bdir / "curate" / "r2")
        train("m2", augmented=[str(tiers["r2"])])

    eval_cfg = EvalConfig(bootstrap=args.bootstrap, seed=args.seed)
    names = [m for m in ALL_MODELS if m in models and (m != "base" or "base" in budget["models"])]
    nll = {}
    for set_name, path in sets.items():
        if budget.get("sets") and set_name not in budget["sets"]:
            continue
        with stage(f"eval heldout {set_name}: NLL of human answers, {len(names)} models", timings):
            nll[set_name] = evaluate_heldout(path, [models[m] for m in names], bdir / "eval" / f"heldout-{set_name}",
                                             systems=["both"], config=eval_cfg, max_examples=budget["heldout_max"])
            print(format_heldout_summary(nll[set_name]))
    scorer = {}
    if budget["scorer_sample"] and not partial:
        specs = [ScorerSpec(args.scorer, models[m]) for m in ("m0", "m1") if m in models]
        for set_name in (PRIMARY,):
            with stage(f"eval scorer on {set_name}: AUROC per negative kind, m0 and m1", timings):
                scorer[set_name] = evaluate_scorers(
                    sets[set_name], specs, bdir / "eval" / f"scorer-{set_name}", sample=budget["scorer_sample"],
                    config=eval_cfg, scorer_config=ScorerConfig(kind=args.scorer, max_output_chars=600),
                    negatives="shuffled,neighbor,truncated,boilerplate")
                print(format_scorer_summary(scorer[set_name]))
    backward = {}
    if budget["backward_sample"] and not partial:
        aug = AugmentConfig.model_validate({"generation": {"max_tokens": 48}})
        for set_name in (PRIMARY,):
            with stage(f"eval backward on {set_name}", timings):
                backward[set_name] = evaluate_backward(
                    sets[set_name], str(p["backward"]),
                    run / "eval" / f"backward-{set_name}-{budget['backward_sample']}",
                    config=eval_cfg, augment=aug,
                    settings=BackwardEvalConfig(sample=budget["backward_sample"], max_output_chars=600))
                print(format_backward_table(backward[set_name]))
    with stage("eval diversity of each round's tier", timings):
        div_sets = [("seed", p["seed"]), ("candidates", candidates), ("tier r1 (m1)", tiers["r1"]),
                    ("random (m1-uncurated)", tiers["uncurated"])]
        if "r2" in tiers:
            div_sets.append(("tier r2 (m2)", tiers["r2"]))
        div = evaluate_diversity(div_sets, bdir / "eval" / "diversity", config=eval_cfg)

    result = {
        "budget": args.budget, "partial": partial,
        "settings": {**budget, "min_score": args.min_score, "scorer": args.scorer,
                                            "max_chars": args.max_chars, "seed": args.seed,
                                            "learning_rate": cfg.learning_rate, "max_length": cfg.max_length},
        "models": models, "data": {"candidates": count_rows(candidates), "tier_r1": n_tier,
                                   "tier_r2": count_rows(tiers["r2"]) if "r2" in tiers else None,
                                   "decontam": p["decontam"],
                                   "heldout": {n: nll[n]["models"][next(iter(nll[n]["models"]))]["systems"]["both"][
                                       "examples"] for n in nll}},
        "nll": {}, "diff": {}, "scorer": {}, "backward": {}, "diversity": {},
        # a budget run in parts (--models, then the rest) costs each step's longest run, summed
        "timings_s": (timings := merged_timings(timings, bdir / "result.json")),
        "elapsed_s": round(sum(timings.values()), 1), "last_invocation_s": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.system()}",
    }
    for set_name, summary in nll.items():
        labels = _labels(summary["models"], models)
        result["nll"][set_name] = {m: _value(summary["models"][labels[m]]["systems"]["both"], "nll")
                                   for m in names}
        result["diff"][set_name] = {diff_key(b, a): paired_difference(summary, labels[a], labels[b])
                                    for b, a in DIFFS if a in labels and b in labels}
    for set_name, summary in scorer.items():
        by_model = {s["model"]: s for s in summary["scorers"].values()}
        result["scorer"][set_name] = {
            m: {kind: {"value": v.get("auroc"), "ci": v.get("auroc_ci")}
                for kind, v in by_model[models[m]]["negatives"].items()}
            for m in ("m0", "m1") if models.get(m) in by_model}
    for set_name, summary in backward.items():
        result["backward"][set_name] = {"n": summary["n"], **{k: summary[k] for k in (*BACKWARD_METRICS, "rouge_l")}}
    result["diversity"] = {name: {k: s.get(k) for k in ("n", "distinct_2", "mean_pairwise_distance",
                                                        "unique_verb_noun_pairs")}
                           for name, s in div["sets"].items()}
    from humpback.core.records import write_json

    write_json(result, bdir / "result.json")
    print(json.dumps(result["diff"], indent=1))
    return report(run, Path(args.results))


def merged_timings(timings: dict[str, float], previous: Path) -> dict[str, float]:
    """This invocation's step timings merged with an earlier invocation's (a step reused now took ~0 s)."""
    before = json.loads(previous.read_text()).get("timings_s", {}) if previous.is_file() else {}
    return before | {k: max(v, before.get(k, 0.0)) for k, v in timings.items()}


# (b, a): b - a, negative = b better
DIFFS = [("m1", "m0"), ("m1", "m1-uncurated"), ("m1", "m1-notags"), ("m2", "m1"), ("m2", "m0"),
         ("m1-uncurated", "m0"), ("m0", "base")]


def diff_key(b: str, a: str) -> str:
    """``m1-m1_uncurated``: model names with ``_`` so that the one ``-`` is the minus sign."""
    return f"{b.replace('-', '_')}-{a.replace('-', '_')}"


def _value(stats: dict, key: str) -> dict:
    return {"value": stats[key], "ci": stats.get(f"{key}_ci")}


def _labels(summary_models: dict, refs: dict[str, str]) -> dict[str, str]:
    """Experiment name → the label an eval summary used for that model."""
    return {name: label for name, ref in refs.items() for label, m in summary_models.items() if m.get("model") == ref}


def paired_difference(heldout: dict, a: str, b: str, system: str = "both") -> dict:
    """NLL(b) - NLL(a) with its paired bootstrap interval, from the eval's pairwise differences."""
    for d in heldout["differences"]:
        if d["system"] != system:
            continue
        if (d["a"], d["b"]) == (a, b):
            return {"value": d["nll_b_minus_a"], "ci": d["ci"], "b_better_fraction": d.get("b_better_fraction")}
        if (d["a"], d["b"]) == (b, a):
            ci = d["ci"]
            frac = d.get("b_better_fraction")
            return {"value": -d["nll_b_minus_a"], "ci": [-ci[1], -ci[0]] if ci else None,
                    "b_better_fraction": None if frac is None else 1 - frac}
    return {"value": None, "ci": None}


def _fmt(v: dict | None, digits: int = 3) -> str:
    from humpback.evaluate.common import fmt_ci

    return "—" if not v or v.get("value") is None else fmt_ci(v["value"], v.get("ci"), digits)


def report(run: Path, out: Path) -> dict:
    """Merge every finished budget of ``run`` into out/small_humpback.{json,md,png}."""
    from humpback.core.records import atomic_path, write_json

    budgets = {}
    for name in BUDGETS:
        f = run / name / "result.json"
        if f.is_file():
            budgets[name] = json.loads(f.read_text())
    if not budgets:
        raise SystemExit(f"{run}: no finished budget (RUN/BUDGET/result.json)")
    main_name = "cpu" if "cpu" in budgets else next(reversed(budgets))
    main = budgets[main_name]
    merged = {
        "main_budget": main_name, "primary_heldout": PRIMARY,
        "nll": main["nll"], "diff": main["diff"].get(PRIMARY, {}), "diff_by_set": main["diff"],
        "scorer": main["scorer"], "backward": main["backward"], "diversity": main["diversity"],
        "data": main["data"], "budget": main["settings"], "seeds": {"train": main["settings"]["seed"],
                                                                    "bootstrap": main["settings"]["seed"]},
        "wall_s": {n: b["elapsed_s"] for n, b in budgets.items()},
        "timings_s": {n: b["timings_s"] for n, b in budgets.items()}, "machine": main["machine"],
        "trend": {n: {"steps": b["settings"]["steps"], "batch_size": b["settings"]["batch_size"],
                      "segments": b["settings"]["segments"], "candidates": b["data"]["candidates"],
                      "tier_r1": b["data"]["tier_r1"], "diff": b["diff"].get(PRIMARY, {})}
                  for n, b in budgets.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(merged, out / "small_humpback.json")
    with atomic_path(out / "small_humpback.md", suffix=".md") as tmp:
        Path(tmp).write_text(markdown(merged))
    plot(merged, out / "small_humpback.png")
    print(f"wrote {out / 'small_humpback.md'}, .json, .png")
    return merged


def markdown(m: dict) -> str:
    sets = list(m["nll"])
    models = [x for x in ALL_MODELS if x in m["nll"][sets[0]]]
    b, d = m["budget"], m["data"]
    lines = ["# small_humpback: results", "",
             f"Main budget `{m['main_budget']}`: every model fine-tuned from the base for {b['steps']} optimizer steps "
             f"of {b['batch_size']} examples (lr {b['learning_rate']:g}, seed {b['seed']}); {d['candidates']} "
             f"candidate pairs from {b['segments']} segments of the Python 3.11 docs; round 1's tier "
             f"(score >= {b['min_score']:g} by m0's `{b['scorer']}` scorer) {d['tier_r1']} pairs"
             + (f", round 2's (by m1) {d['tier_r2']}" if d.get("tier_r2") is not None else "") + ". "
             f"Decontamination: {d['decontam']['candidates_flagged']} candidate(s) and "
             f"{d['decontam']['seed_flagged']} seed pair(s) flagged against the held-out sets. "
             f"Wall time: " + ", ".join(f"{n} {s / 60:.0f} min" for n, s in m["wall_s"].items())
             + f" on {m['machine']}.", "",
             "## Held-out NLL per token of human answers (lower is better; 95% bootstrap intervals)", "",
             "| model | " + " | ".join(f"{s} (n={d['heldout'][s]})" for s in sets) + " |",
             "|---|" + "---|" * len(sets)]
    for x in models:
        lines.append(f"| {x} | " + " | ".join(_fmt(m["nll"][s].get(x)) for s in sets) + " |")
    lines += ["", "## Paired differences (negative: the first model is better)", "",
              "| difference | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    keys = [diff_key(b_, a) for b_, a in DIFFS if diff_key(b_, a) in m["diff_by_set"][sets[0]]]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(m["diff_by_set"][s].get(key), 4) for s in sets) + " |")
    lines += ["", f"## Budgets ({PRIMARY}): training steps, and the candidate pool", "",
              "cpu-small and cpu differ in training steps alone; cpu-wide is cpu on every segment of the corpus "
              "(its m0 is cpu's); cpu-wide-a5 trains on the cpu-wide pairs m0 scored 5 (the paper's A5 tier), "
              "against as many random candidates.", "",
              "| budget | candidates | tier r1 | steps x batch | m1-m0 | m1-m1_uncurated |",
              "|---|---|---|---|---|---|"]
    for n, t in m["trend"].items():
        lines.append(f"| {n} | {t.get('candidates', '—')} | {t.get('tier_r1', '—')} | {t['steps']} x {t['batch_size']} "
                     f"| {_fmt(t['diff'].get('m1-m0'), 4)} | {_fmt(t['diff'].get('m1-m1_uncurated'), 4)} |")
    lines.append("")
    if m["scorer"]:
        lines += ["", "## Scorer AUROC per negative kind (the curating model of each round)", ""]
        for s, per in m["scorer"].items():
            kinds = list(next(iter(per.values())))
            lines += [f"{s}:", "", "| scorer model | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
            for model, v in per.items():
                lines.append(f"| {model} | " + " | ".join(_fmt(v.get(k), 2) for k in kinds) + " |")
            lines.append("")
    if m["backward"]:
        lines += ["## Backward model (`eval backward`)", ""]
        for s, v in m["backward"].items():
            lines.append(f"- {s} (n={v['n']}): " + ", ".join(f"{k} {_fmt(v[k], 2)}" for k in v if k != "n"))
        lines.append("")
    lines += ["## Diversity of the instructions (`eval diversity`)", ""]
    for name, v in m["diversity"].items():
        if v.get("distinct_2") is not None:
            lines.append(f"- {name}: n={v['n']}, distinct-2 {v['distinct_2']:.3f}"
                         + (f", spread {v['mean_pairwise_distance']:.3f}" if v.get("mean_pairwise_distance") else ""))
    return "\n".join(lines) + "\n"


def plot(m: dict, path: Path) -> None:
    import numpy as np

    from humpback.evaluate.common import pyplot, save_figure

    plt = pyplot()
    sets = list(m["diff_by_set"])
    keys = [diff_key(b, a) for b, a in DIFFS[:5] if diff_key(b, a) in m["diff_by_set"][sets[0]]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    x = np.arange(len(keys))
    width = 0.8 / len(sets)
    for k, s in enumerate(sets):
        vals = [m["diff_by_set"][s][key]["value"] for key in keys]
        cis = [m["diff_by_set"][s][key]["ci"] or [v, v] for key, v in zip(keys, vals)]
        ax1.bar(x + (k - (len(sets) - 1) / 2) * width, vals, width, label=s,
                yerr=[[v - c[0] for v, c in zip(vals, cis)], [c[1] - v for v, c in zip(vals, cis)]], capsize=3)
    ax1.axhline(0, color="#888", lw=0.8)
    ax1.set_xticks(x)
    ax1.set_xticklabels(keys, rotation=15)
    ax1.set_title(f"held-out NLL differences, paired ({m['main_budget']}); below 0: first model better", fontsize=9)
    ax1.legend(fontsize=8)
    # the training-budget trend: the budgets on the main budget's candidates (cpu-wide changes the data instead)
    segments = m["budget"]["segments"]
    trend = sorted((t for t in m["trend"].values() if t.get("segments", segments) == segments),
                   key=lambda t: t["steps"])
    steps = [t["steps"] * t["batch_size"] for t in trend]
    for key, label in (("m1-m0", "m1 - m0"), ("m1-m1_uncurated", "m1 - m1-uncurated")):
        pts = [(x, t["diff"][key]) for x, t in zip(steps, trend) if t["diff"].get(key, {}).get("value") is not None]
        if not pts:
            continue
        xs, vals = [x for x, _ in pts], [d["value"] for _, d in pts]
        cis = [d.get("ci") or [d["value"]] * 2 for _, d in pts]
        ax2.errorbar(xs, vals, yerr=[[v - c[0] for v, c in zip(vals, cis)], [c[1] - v for v, c in zip(vals, cis)]],
                     marker="o", capsize=3, label=label)
    for name, t in m["trend"].items():  # a larger candidate pool at the same steps: hollow markers beside the line
        if t.get("segments", segments) == segments:
            continue
        for k, (key, label) in enumerate((("m1-m0", "m1 - m0"), ("m1-m1_uncurated", "m1 - m1-uncurated"))):
            d = t["diff"].get(key) or {}
            if d.get("value") is None:
                continue
            ci = d.get("ci") or [d["value"]] * 2
            ax2.errorbar([t["steps"] * t["batch_size"] + 3], [d["value"]],
                         yerr=[[d["value"] - ci[0]], [ci[1] - d["value"]]],
                         marker="s", mfc="none", color=f"C{k}", capsize=3, ls="none",
                         label=f"{label}, {name} ({t.get('candidates')} candidates)")
    ax2.axhline(0, color="#888", lw=0.8)
    ax2.set_xlabel("training examples seen per model (steps x batch)")
    ax2.set_title(f"trend with budget on {PRIMARY}", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
