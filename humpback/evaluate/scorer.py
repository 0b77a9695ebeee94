"""``humpback eval scorer``: how well a curation scorer tells real pairs from the same pairs with shuffled
instructions (AUROC with a bootstrap interval), how much two scorers agree (Spearman), and their score
histograms.

A sample of pairs is scored as is and again with instructions permuted so that no pair keeps its own
(:func:`humpback.stages.scorers.shuffled_pairs`); a scorer worth curating with ranks the real pairs above the
shuffled ones. The scorers themselves are :mod:`humpback.stages.scorers`, unchanged, so what is measured here is
exactly what ``humpback curate`` uses.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..core.config import ConfigError
from ..core.records import write_jsonl
from ..stages.scorers import SCORERS, ScorerConfig, make_scorer
from .common import (EvalConfig, LazyModel, auroc, bootstrap_ci, cached_chunks, fingerprint, fmt_ci, histogram,
                     is_run_dir, load_items, model_key, model_label, pyplot, sample_items, save_figure, spearman,
                     write_result)

log = logging.getLogger("humpback.eval")


@dataclass(frozen=True)
class ScorerSpec:
    kind: str  # auto | rubric | rubric-generate | pmi | humpback
    model: str

    @property
    def label(self) -> str:
        return f"{self.kind}@{model_label(self.model)}"


def parse_scorer_specs(scorers: Sequence[str], model: str | None) -> list[ScorerSpec]:
    """``KIND`` (scored with ``model``) or ``KIND@MODEL``; KIND is auto, rubric, rubric-generate, pmi or humpback."""
    kinds = ("auto", *SCORERS)
    specs = []
    for s in scorers or ["auto"]:
        kind, _, ref = s.partition("@")
        if kind not in kinds:
            raise ConfigError(f"--scorer {s!r}: unknown scorer '{kind}' (expected one of {', '.join(kinds)}, "
                              "optionally followed by @MODEL)")
        ref = ref or model
        if not ref:
            raise ConfigError(f"--scorer {s!r}: no model; give --model or write {kind}@MODEL")
        specs.append(ScorerSpec(kind, ref))
    if len(set(specs)) < len(specs):
        raise ConfigError("the same scorer and model are given twice")
    return specs


def pairs_source(path: str | Path) -> Path:
    """The pairs to check in ``path``: a run's candidate pairs, an augment output's pairs/, or the path."""
    p = Path(path)
    if is_run_dir(p) and (p / "augment" / "pairs").is_dir():
        return p / "augment" / "pairs"
    if p.is_dir() and (p / "pairs").is_dir():
        return p / "pairs"
    return p


def evaluate_scorers(
    pairs: str | Path,
    specs: Sequence[ScorerSpec],
    output: str | Path,
    sample: int | None = 200,
    config: EvalConfig | None = None,
    scorer_config: ScorerConfig | None = None,
    negatives: str | Sequence[str] | None = None,
    corpus: str | None = None,
) -> dict:
    """Score a sample of real pairs and of each kind of typed negative (:mod:`humpback.evaluate.negatives`) with
    each scorer; write scorer_eval.json, scores.jsonl and scorer_hist.png into ``output``; return the summary."""
    from .negatives import build_negatives, parse_kinds, read_corpus_segments

    cfg = config or EvalConfig()
    base_scorer = scorer_config or ScorerConfig()
    out = Path(output)
    source = pairs_source(pairs)
    items = load_items(source, need_output=True)
    chosen = sample_items(items, sample, cfg.seed)
    if len(chosen) < 2:
        raise ConfigError(f"{source}: {len(chosen)} pair(s); the shuffled comparison needs at least 2")
    kinds = parse_kinds(negatives, corpus is not None)
    real = [it.as_pair() for it in chosen]
    segments = read_corpus_segments(corpus, seed=cfg.seed) if corpus else None
    negs = build_negatives(real, kinds, seed=cfg.seed, corpus=segments)
    ids = [p["pair_id"] for p in real]
    log.warning("eval scorer: %d of %d pairs from %s, negatives %s, %d scorer(s) -> %s", len(real), len(items),
                source, ",".join(kinds), len(specs), out)

    per_scorer: dict[str, dict] = {}
    values: dict[str, dict[str, list]] = {}
    rows_real: dict[str, list[dict]] = {}
    for spec in specs:
        scfg = base_scorer.model_copy(update={"kind": spec.kind})
        with LazyModel(spec.model, cfg, partial(make_scorer, cfg=scfg)) as scorer_for:
            kind = spec.kind
            if kind == "auto":  # resolving needs the model's size, so the model is loaded anyway
                kind = scorer_for().kind
            scfg = base_scorer.model_copy(update={"kind": kind})
            results = {}
            for name, batch in (("real", real), *negs.items()):
                key = fingerprint([model_key(spec.model), scfg.model_dump(), SCORERS.get(kind).revision, cfg.seed, ids,
                                   [[b["instruction"], b["output"]] for b in batch]])
                results[name] = cached_chunks(
                    out / ".work" / f"{kind}-{key}-{name}", ids,
                    lambda idx, batch=batch: scorer_for().score([batch[i] for i in idx]),
                    cfg.chunk_size, f"{spec.label} {name}")
        cont = SCORERS[kind].continuous
        values[spec.label] = {name: [cont(r) for r in rows] for name, rows in results.items()}
        rows_real[spec.label] = results["real"]
        per_scorer[spec.label] = _scorer_summary(spec, kind, results, values[spec.label], cfg)

    agreement = []
    for a, b in itertools.combinations(values, 2):
        xa, xb = values[a]["real"], values[b]["real"]
        rho = spearman(xa, xb)
        ci = bootstrap_ci(lambda idx, xa=xa, xb=xb: spearman([xa[i] for i in idx], [xb[i] for i in idx]), len(xa),
                          cfg.bootstrap, cfg.confidence, cfg.seed)
        agreement.append({"a": a, "b": b, "spearman": rho, "ci": ci, "n": len(xa)})

    summary = {
        "command": "eval scorer", "pairs": str(source), "pairs_available": len(items), "n": len(real),
        "seed": cfg.seed, "bootstrap": cfg.bootstrap, "confidence": cfg.confidence, "negatives": kinds,
        "corpus": corpus, "scorers": per_scorer, "agreement": agreement, "scorer_config": base_scorer.model_dump(),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_result(summary, out / "scorer_eval.json")
    write_jsonl(_score_rows(real, negs, values, rows_real), out / "scores.jsonl")
    _plot(values, per_scorer, kinds, out / "scorer_hist.png")
    summary["files"] = {k: str(out / f) for k, f in (("summary", "scorer_eval.json"), ("scores", "scores.jsonl"),
                                                      ("histograms", "scorer_hist.png"))}
    return summary


def _scorer_summary(spec: ScorerSpec, kind: str, results: dict, vals: dict[str, list], cfg: EvalConfig) -> dict:
    r_vals = vals["real"]
    n = len(r_vals)
    per_kind = {}
    for name, f_vals in vals.items():
        if name == "real":
            continue
        value = auroc(r_vals, f_vals)
        ci = bootstrap_ci(lambda idx, f_vals=f_vals: auroc([r_vals[i] for i in idx], [f_vals[i] for i in idx]), n,
                          cfg.bootstrap, cfg.confidence, cfg.seed)
        present = [v for v in f_vals if v is not None]
        per_kind[name] = {"auroc": value, "auroc_ci": ci, "mean": float(np.mean(present)) if present else None,
                          "null": len(f_vals) - len(present), "n": len(f_vals),
                          "histogram": histogram(f_vals)}
    present = [v for v in r_vals if v is not None]
    shuffled = per_kind["shuffled"]
    info = {
        "kind": kind, "model": spec.model, "auroc": shuffled["auroc"], "auroc_ci": shuffled["auroc_ci"],
        "mean_real": float(np.mean(present)) if present else None, "mean_shuffled": shuffled["mean"],
        "null_real": n - len(present), "null_shuffled": shuffled["null"],
        "value": SCORERS.get(kind).value_name,
        "histogram_real": histogram(r_vals), "histogram_shuffled": shuffled["histogram"],
        "negatives": per_kind,
        "min_negative_auroc": min((v["auroc"] for v in per_kind.values() if v["auroc"] is not None), default=None),
    }
    if not SCORERS.get(kind).mapped:  # the 1-5 scores themselves, nulls (unparseable answers) counted
        for name in ("real", "shuffled"):
            counts = {str(k): 0 for k in range(1, 6)} | {"null": 0}
            for row in results[name]:
                counts["null" if row["score"] is None else str(int(row["score"]))] += 1
            info[f"scores_{name}"] = counts
    return info


def _score_rows(real, negs, values, rows_real):
    for i, p in enumerate(real):
        row = {"pair_id": p["pair_id"], "instruction": p["instruction"]}
        for kind, batch in negs.items():
            if kind == "shuffled":
                row["shuffled_instruction"] = batch[i]["instruction"]
        for label, by_kind in values.items():
            for name, vals in by_kind.items():
                row[f"{label}:{name}"] = vals[i]
            rat = rows_real[label][i].get("rationale")
            if rat:
                row[f"{label}:rationale"] = rat
        yield row


def _plot(values: dict, per_scorer: dict, kinds: Sequence[str], path: Path) -> None:
    plt = pyplot()
    rows, cols = len(values), len(kinds)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.8 * rows), squeeze=False)
    for r, (label, by_kind) in enumerate(values.items()):
        real = [v for v in by_kind["real"] if v is not None]
        for c, kind in enumerate(kinds):
            ax = axes[r][c]
            neg = [v for v in by_kind[kind] if v is not None]
            if real or neg:
                lo, hi = min(real + neg), max(real + neg)
                bins = np.linspace(lo, hi if hi > lo else lo + 1, 21)
                ax.hist(real, bins=bins, alpha=0.6, label="real", color="#3a7")
                ax.hist(neg, bins=bins, alpha=0.6, label=kind, color="#d55")
            s = per_scorer[label]["negatives"][kind]
            ax.set_title(f"{label}\nvs {kind}: AUROC {fmt_ci(s['auroc'], s['auroc_ci'], 2)}", fontsize=8)
            ax.set_xlabel(per_scorer[label]["value"], fontsize=7)
            ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)


def format_scorer_summary(summary: dict) -> str:
    kinds = summary.get("negatives") or ["shuffled"]
    head = (f"{summary['n']} pairs (of {summary['pairs_available']}) from {summary['pairs']}, each also scored "
            f"against typed negatives; AUROC real vs each kind, {int(summary['confidence'] * 100)}% bootstrap "
            f"intervals ({summary['bootstrap']} resamples)")
    lines = [head, ""]
    width = max(len(k) for k in summary["scorers"]) + 2
    lines.append(f"{'scorer':<{width}}" + "".join(f"{k:<24}" for k in kinds) + f"{'nulls':>6}")
    for label, s in summary["scorers"].items():
        cells = "".join(f"{fmt_ci(s['negatives'][k]['auroc'], s['negatives'][k]['auroc_ci'], 2):<24}"
                        for k in kinds)
        lines.append(f"{label:<{width}}{cells}{s['null_real'] + s['null_shuffled']:>6}")
    for a in summary["agreement"]:
        lines.append(f"Spearman {a['a']} vs {a['b']} (real pairs): {fmt_ci(a['spearman'], a['ci'])}")
    if "files" in summary:
        lines.append(f"\nwrote {summary['files']['summary']}, {summary['files']['scores']}, "
                     f"{summary['files']['histograms']}")
    return "\n".join(lines)
