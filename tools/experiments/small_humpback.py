"""A small Humpback ablation on CPU with SmolLM2 and the shipped data.

Models (every forward model fine-tunes the base for the same number of steps, as in the paper):
  base           SmolLM2-135M-Instruct, untouched
  m0             seed only (tag S_a)
  m1             seed + the curated tier (score >= --min-score by M0's pmi scorer; tag S_w)
  m1-uncurated   seed + as many randomly chosen candidate pairs as the curated tier has
  m1-notags      like m1, without system tags

Reported, in one table (results.md / results.json) and one PNG (results.png):
  held-out NLL per token of the seed's held-out human outputs (system both and none), bootstrap CIs;
  AUROC of each model's pmi scorer on held-out pairs and on the candidate pairs, real vs shuffled.
Also writes the eval outputs under RUN/eval/ (heldout/, scorer_heldout/, scorer_candidates/, diversity/).

Every step is resumable: finished models are skipped (training itself resumes from checkpoints), augment and
curate resume from their checkpoints, and evaluations reuse cached model calls, so rerunning the finished
experiment only rewrites the results. The smallest end-to-end run, on the quickstart's outputs:

    .venv/bin/python tools/experiments/small_humpback.py --from-run runs/quickstart \
        --candidates runs/quickstart/augment --steps 2 --batch-size 4 --systems both --heldout-max 12 \
        --scorer-heldout-sample 8 --max-output-chars 800

took about an hour on 2 heavily shared CPU cores. Its differences are noise: the questions of the paper need
far larger budgets (--segments, --steps, all held-out examples, --systems both,none) and a GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

MODELS = ["base", "m0", "m1", "m1-uncurated", "m1-notags"]


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
    ap.add_argument("--run-dir", default="runs/small_humpback")
    ap.add_argument("--from-run", default=None,
                    help="Reuse this run's seed split, prepared segments and backward model (e.g. runs/quickstart).")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="Base model.")
    ap.add_argument("--segments", type=int, default=96, help="Segments augmented by the backward model.")
    ap.add_argument("--candidates", default=None,
                    help="Use these candidate pairs (an augment output or pairs folder) instead of augmenting.")
    ap.add_argument("--steps", type=int, default=4, help="Optimizer steps per trained model.")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="Examples per optimizer step (default: the paper's 8 for small data).")
    ap.add_argument("--backward-steps", type=int, default=12, help="Steps of the backward model (if trained here).")
    ap.add_argument("--min-score", type=float, default=4.0, help="Curated tier: pmi score >= this (1-5).")
    ap.add_argument("--systems", default="both,none", help="System settings for the held-out NLL.")
    ap.add_argument("--heldout-max", type=int, default=None, help="Held-out examples for the NLL (default all).")
    ap.add_argument("--scorer-heldout-sample", type=int, default=-1,
                    help="Held-out pairs in the scorer AUROC check (-1: all).")
    ap.add_argument("--scorer-sample", type=int, default=64, help="Candidate pairs in the scorer AUROC check.")
    ap.add_argument("--max-output-chars", type=int, default=6000,
                    help="Outputs are cut to this many characters for the scorer checks (curate's default: 6000).")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def prepare_inputs(args, run: Path, timings: dict, train_cfg) -> dict[str, Path]:
    """Seed split, segments and backward model: from --from-run when it has them, else built here."""
    from humpback.stages.prepare import run_prepare
    from humpback.stages.prepare.quickstart import build_quickstart_corpus
    from humpback.stages.seed import import_seed
    from humpback.stages.train import is_finished, train_backward

    src = Path(args.from_run) if args.from_run else None
    paths: dict[str, Path] = {}
    with stage("seed: the shipped seed set, 10% held out", timings):
        if src and (src / "seed.parquet").is_file() and (src / "seed.heldout.parquet").is_file():
            paths["seed"], paths["heldout"] = src / "seed.parquet", src / "seed.heldout.parquet"
        else:
            paths["seed"], paths["heldout"] = run / "seed.parquet", run / "seed.heldout.parquet"
            if not paths["seed"].exists():
                print(import_seed("builtin", str(paths["seed"]),
                                  heldout_fraction=0.1, seed=args.seed).summary())
        print(f"seed {paths['seed']}, held out {paths['heldout']}")
    with stage("segments: the quickstart corpus, prepared", timings):
        if src and (src / "prepared" / "segments").is_dir():
            paths["prepared"] = src / "prepared"
        else:
            corpus = run / "corpus.jsonl"
            if not corpus.exists():
                print(build_quickstart_corpus(corpus).summary())
            print(run_prepare([str(corpus)], run / "prepared", overrides={"progress": False}).summary())
            paths["prepared"] = run / "prepared"
        print(f"segments {paths['prepared']}")
    with stage("backward model M_yx", timings):
        if src and is_finished(src / "models" / "backward"):
            paths["backward"] = src / "models" / "backward"
        else:
            cfg = train_cfg.model_copy(update={"max_steps": args.backward_steps,
                                               "save_steps": max(args.backward_steps // 2, 1)})
            paths["backward"] = train_backward(str(paths["seed"]), run / "models" / "backward", config=cfg).output
        print(f"backward {paths['backward']}")
    return paths


def uncurated_sample(candidates: Path, n: int, out: Path, seed: int) -> Path:
    """``n`` candidate pairs drawn at random (fixed seed): the same amount of augmented data, uncurated."""
    from humpback.core.records import read_rows, write_parquet

    if out.is_file():
        return out
    rows = read_rows(candidates, "pair")
    rng = random.Random(seed)
    write_parquet(rng.sample(rows, min(n, len(rows))), out, "pair")
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("humpback.eval").setLevel(logging.INFO)

    from humpback.stages.augment import AugmentConfig, run_augment
    from humpback.core.config import GenerationConfig
    from humpback.stages.curate import CurateConfig, format_summary, run_curate
    from humpback.evaluate import EvalConfig, evaluate_diversity, evaluate_heldout, evaluate_scorers
    from humpback.evaluate.heldout import format_heldout_summary
    from humpback.evaluate.scorer import ScorerSpec, format_scorer_summary
    from humpback.stages.scorers import ScorerConfig
    from humpback.core.shards import count_rows
    from humpback.stages.train import TrainConfig, train_forward

    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    # micro-batch 2 and 1024-token examples keep CPU training under ~4 GB (tools/quickstart.py)
    train_cfg = TrainConfig(base_model=args.model, max_steps=args.steps, save_steps=max(args.steps // 2, 1),
                            micro_batch_size=2, max_length=1024, seed=args.seed, batch_size=args.batch_size)
    paths = prepare_inputs(args, run, timings, train_cfg)

    if args.candidates:
        candidates = Path(args.candidates)
        candidates = candidates / "pairs" if (candidates / "pairs").is_dir() else candidates
    else:
        with stage(f"augment: {args.segments} segments with M_yx", timings):
            aug = run_augment(str(paths["prepared"]), str(paths["backward"]), str(run / "augment"),
                              AugmentConfig(max_segments=args.segments, generation=GenerationConfig(max_tokens=64),
                                            round=1))
            print(f"pairs written {aug['pairs_written']} of {aug['pairs_generated']}; dropped {aug['dropped']}")
        candidates = run / "augment" / "pairs"
    n_candidates = count_rows(candidates)
    if n_candidates < 2:
        raise SystemExit(f"only {n_candidates} candidate pair(s): augment more segments (--segments)")

    models: dict[str, str] = {"base": args.model}
    with stage(f"train m0 on the seed ({args.steps} steps)", timings):
        models["m0"] = str(train_forward(str(paths["seed"]), run / "models" / "m0", config=train_cfg).output)
    with stage("curate the candidates with m0 (pmi)", timings):
        cur = run_curate(str(candidates), models["m0"], str(run / "curate" / "r1"),
                         CurateConfig(scorer=ScorerConfig(kind="pmi"), min_score=args.min_score,
                                      self_check_sample=32))
        print(format_summary(cur))
    curated = run / "curate" / "r1" / "curated"
    n_curated = count_rows(curated)
    if n_curated == 0:
        raise SystemExit(f"the curated tier (score >= {args.min_score}) is empty; lower --min-score")
    uncurated = uncurated_sample(candidates, n_curated, run / "uncurated" / "pairs.parquet", args.seed)
    variants = {
        "m1": {"augmented": [str(curated)]},
        "m1-uncurated": {"augmented": [str(uncurated)]},
        "m1-notags": {"augmented": [str(curated)], "tags": False},
    }
    for name, kwargs in variants.items():
        with stage(f"train {name} ({args.steps} steps; {n_curated} augmented pairs)", timings):
            models[name] = str(train_forward(str(paths["seed"]), run / "models" / name, config=train_cfg,
                                             **kwargs).output)

    eval_cfg = EvalConfig(bootstrap=args.bootstrap, seed=args.seed)
    refs = [models[m] for m in MODELS]
    with stage("eval heldout: NLL of the held-out human outputs", timings):
        heldout = evaluate_heldout(paths["heldout"], refs, run / "eval" / "heldout", systems=args.systems.split(","),
                                   config=eval_cfg, max_examples=args.heldout_max)
        print(format_heldout_summary(heldout))
    specs = [ScorerSpec("pmi", models[m]) for m in MODELS]
    scorer_cfg = ScorerConfig(kind="pmi", max_output_chars=args.max_output_chars)
    with stage("eval scorer: pmi AUROC on held-out pairs", timings):
        sc_heldout = evaluate_scorers(paths["heldout"], specs, run / "eval" / "scorer_heldout",
                                      sample=None if args.scorer_heldout_sample < 0 else args.scorer_heldout_sample,
                                      config=eval_cfg, scorer_config=scorer_cfg)
        print(format_scorer_summary(sc_heldout))
    with stage("eval scorer: pmi AUROC on candidate pairs", timings):
        sc_cand = evaluate_scorers(candidates, specs, run / "eval" / "scorer_candidates",
                                   sample=args.scorer_sample, config=eval_cfg, scorer_config=scorer_cfg)
        print(format_scorer_summary(sc_cand))
    with stage("eval diversity of seed, candidates and curated tier", timings):
        div = evaluate_diversity([("seed", paths["seed"]), ("candidates", candidates), ("curated (m1)", curated),
                                  ("random (m1-uncurated)", uncurated)],
                                 run / "eval" / "diversity", config=eval_cfg)

    results = collect(args, models, paths, heldout, sc_heldout, sc_cand, div, n_candidates, n_curated, timings,
                      time.perf_counter() - started)
    write_outputs(results, run)
    print("\n" + results["table"])
    print(f"\nwrote {run / 'results.md'}, {run / 'results.json'}, {run / 'results.png'}")
    return results


def _labels(summary_models: dict, refs: dict[str, str]) -> dict[str, str]:
    """Experiment name → the label an eval summary used for that model."""
    out = {}
    for name, ref in refs.items():
        for label, m in summary_models.items():
            if m.get("model") == ref:
                out[name] = label
    return out


def paired_difference(heldout: dict, system: str, ref_label: str, label: str) -> dict:
    """NLL(label) - NLL(ref_label) with its paired bootstrap interval, from the eval's pairwise differences."""
    if label == ref_label:
        return {"value": 0.0, "ci": None}
    for d in heldout["differences"]:
        if d["system"] != system:
            continue
        if (d["a"], d["b"]) == (ref_label, label):
            return {"value": d["nll_b_minus_a"], "ci": d["ci"]}
        if (d["a"], d["b"]) == (label, ref_label):
            ci = d["ci"]
            return {"value": -d["nll_b_minus_a"], "ci": [-ci[1], -ci[0]] if ci else None}
    return {"value": None, "ci": None}


def collect(args, models, paths, heldout, sc_heldout, sc_cand, div, n_candidates, n_curated, timings,
            elapsed) -> dict:
    from humpback.evaluate.common import fmt_ci

    systems = heldout["systems"]
    hl = _labels(heldout["models"], models)
    scorer_by_model = {s["model"]: s for s in sc_heldout["scorers"].values()}
    cand_by_model = {s["model"]: s for s in sc_cand["scorers"].values()}
    rows = []
    for name in MODELS:
        ref = models[name]
        h = heldout["models"][hl[name]]["systems"]
        rows.append({
            "model": name, "path": ref,
            "nll": {s: {"value": h[s]["nll"], "ci": h[s]["nll_ci"]} for s in systems},
            "nll_vs_m0": {s: paired_difference(heldout, s, hl["m0"], hl[name]) for s in systems},
            "auroc_heldout": {"value": scorer_by_model[ref]["auroc"], "ci": scorer_by_model[ref]["auroc_ci"]},
            "auroc_candidates": {"value": cand_by_model[ref]["auroc"], "ci": cand_by_model[ref]["auroc_ci"]},
        })
    head = ["model"] + [f"held-out NLL [{s}]" for s in systems] + [f"NLL minus m0 [{s}], paired" for s in systems] + \
        [f"pmi AUROC held-out (n={sc_heldout['n']})", f"pmi AUROC candidates (n={sc_cand['n']})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"]] + [fmt_ci(r["nll"][s]["value"], r["nll"][s]["ci"]) for s in systems] + \
            [fmt_ci(r["nll_vs_m0"][s]["value"], r["nll_vs_m0"][s]["ci"], 4) for s in systems] + \
            [fmt_ci(r["auroc_heldout"]["value"], r["auroc_heldout"]["ci"], 2),
             fmt_ci(r["auroc_candidates"]["value"], r["auroc_candidates"]["ci"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    return {
        "settings": vars(args), "models": models, "inputs": {k: str(v) for k, v in paths.items()},
        "data": {"candidates": n_candidates, "curated": n_curated, "heldout_examples": heldout["n"]},
        "systems": systems, "rows": rows, "table": table, "timings_s": timings, "elapsed_s": round(elapsed, 1),
        "diversity": {name: {k: s.get(k) for k in ("n", "distinct_2", "mean_pairwise_distance",
                                                    "unique_verb_noun_pairs")}
                      for name, s in div["sets"].items()},
        "notes": "NLL: token-weighted mean per-token NLL of held-out human outputs (lower is better). "
                 "AUROC: each model's pmi scorer, real vs instruction-shuffled pairs. "
                 "Brackets: 95% bootstrap intervals.",
    }


def write_outputs(results: dict, run: Path) -> None:
    from humpback.evaluate.common import pyplot, save_figure
    from humpback.core.records import atomic_path, write_json

    write_json(results, run / "results.json")
    d = results["data"]
    s = results["settings"]
    md = [
        "# small_humpback results", "",
        (f"Base {s['model']}; {s['steps']} optimizer steps per trained model (batch {s['batch_size'] or 8}); "
        f"{d['candidates']} candidate pairs from "
        f"{s['candidates'] or str(s['segments']) + ' segments'}, curated tier (pmi score >= {s['min_score']:g} "
        f"by m0) {d['curated']} pairs; "
        f"{d['heldout_examples']} held-out seed pairs. Run time {results['elapsed_s'] / 60:.1f} min."), "",
        results["table"], "", results["notes"], "",
        "Diversity (instructions): " + "; ".join(
            f"{k}: n={v['n']}, distinct-2 {v['distinct_2']:.3f}" + (
                f", spread {v['mean_pairwise_distance']:.3f}" if v.get("mean_pairwise_distance") is not None else "")
            for k, v in results["diversity"].items() if v.get("distinct_2") is not None),
    ]
    with atomic_path(run / "results.md", suffix=".md") as tmp:
        Path(tmp).write_text("\n".join(md) + "\n")

    plt = pyplot()
    import numpy as np

    rows = results["rows"]
    systems = results["systems"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(rows))
    width = 0.8 / len(systems)
    for k, system in enumerate(systems):
        vals = [r["nll_vs_m0"][system]["value"] for r in rows]
        vals = [np.nan if v is None else v for v in vals]
        cis = [r["nll_vs_m0"][system]["ci"] or [v, v] for r, v in zip(rows, vals)]
        ax1.bar(x + (k - (len(systems) - 1) / 2) * width, vals, width, label=f"system {system}",
                yerr=[[v - c[0] for v, c in zip(vals, cis)], [c[1] - v for v, c in zip(vals, cis)]], capsize=3)
    ax1.axhline(0, color="#888", lw=0.8)
    nll_m0 = next(r["nll"][systems[0]]["value"] for r in rows if r["model"] == "m0")
    ax1.set_title(f"held-out NLL minus m0's ({nll_m0:.3f}), paired; below 0: better", fontsize=9)
    ax1.legend(fontsize=8)
    for k, key in enumerate(("auroc_heldout", "auroc_candidates")):
        vals = [r[key]["value"] if r[key]["value"] is not None else np.nan for r in rows]
        cis = [r[key]["ci"] or [v, v] for r, v in zip(rows, vals)]
        ax2.bar(x + (k - 0.5) * 0.4, vals, 0.4, label=key.replace("auroc_", "pairs: "),
                yerr=[[v - c[0] for v, c in zip(vals, cis)], [c[1] - v for v, c in zip(vals, cis)]], capsize=3)
    ax2.axhline(0.5, color="#888", lw=0.8, ls="--")
    ax2.set_ylim(0, 1)
    ax2.set_title("pmi scorer AUROC, real vs shuffled", fontsize=9)
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels([r["model"] for r in rows], rotation=20, ha="right")
    fig.tight_layout()
    save_figure(fig, run / "results.png")
    print(json.dumps(results["timings_s"], indent=2))


if __name__ == "__main__":
    main()
