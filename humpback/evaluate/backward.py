"""``humpback eval backward``: how good a backward model is, on held-out human (instruction, output) pairs.

For each output the backward model writes ``k`` candidate instructions with the augment prompt and sampling
settings (what ``humpback augment`` would write), and the scoring model (default: the backward model's base)
scores them. For every k' in 1, 2, 4, ... up to k, best-of-k' keeps the accepted candidate with the highest
PMI, exactly as ``augment.candidates: k'`` does, and the figures below are computed from the same samples, so
the gain of a larger k is a paired comparison. Each figure has a 95% bootstrap interval over the outputs:

- ``acceptance``: share of outputs that get an instruction passing augment's post-filters (for k' = 1, the share
  of generated instructions that pass); rejections are counted by reason over all candidates;
- ``relevance_auroc``: AUROC of PMI(output | its instruction) against PMI(output | the instruction kept for
  another output), accepted instructions only (a copied or continued segment would explain itself);
- ``relevance_auroc_human``: the same with the human instructions, i.e. what the scoring model can tell at
  best on this data;
- ``recovery``: mean PMI(output | kept instruction) / mean PMI(output | human instruction), accepted only;
- ``similarity``: cosine of all-MiniLM-L6-v2 embeddings of kept and human instruction (independent of the
  scoring model, so it shows whether selecting by PMI helps beyond the PMI itself); ``rouge_l`` beside it.

PMI is the ``pmi`` scorer's: mean per-token log p(output | instruction) - log p(output | empty request).
Writes DIR/backward_eval.json, backward_eval.md, backward_eval.png and candidates.jsonl; model calls are
checkpointed per chunk under DIR/.work, so a killed evaluation resumes.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from pydantic import Field

from ..core.config import ConfigError, StrictModel
from ..core.records import write_jsonl
from .common import (EvalConfig, LazyModel, auroc, bootstrap_ci, cached_chunks, fingerprint, fmt_ci, load_items,
                     model_key, pyplot, sample_items, save_figure, write_result)

log = logging.getLogger("humpback.eval")

METRICS = ("acceptance", "relevance_auroc", "relevance_auroc_human", "recovery", "similarity")


class BackwardEvalConfig(StrictModel):
    """The ``backward:`` section of an eval ``--config`` file."""

    sample: int = Field(200, ge=-1)  # outputs evaluated (-1: all)
    examples: int = Field(10, ge=0)  # side-by-side examples in the report
    max_output_chars: int = Field(6000, ge=100)  # outputs are cut to this many characters for scoring


def k_values(k: int) -> list[int]:
    """1, 2, 4, ... below k, and k itself."""
    ks, v = [], 1
    while v < k:
        ks.append(v)
        v *= 2
    return ks + [k]


def derangement(n: int, seed: int) -> list[int]:
    """A permutation with no fixed point (a cyclic shift of a seeded random order)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n).tolist()
    perm = [0] * n
    for i in range(n):
        perm[order[i]] = order[(i + 1) % n]
    return perm


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased words (longest common subsequence)."""
    a, b = re.findall(r"\w+", candidate.lower()), re.findall(r"\w+", reference.lower())
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if not lcs:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def select(pmis: Sequence[Optional[float]], reasons: Sequence[Optional[str]], k: int) -> Optional[int]:
    """Index of the accepted candidate among the first ``k`` with the highest PMI (the first on ties)."""
    best, best_v = None, None
    for j in range(min(k, len(pmis))):
        if reasons[j] is not None:
            continue
        v = pmis[j] if pmis[j] is not None else float("-inf")
        if best is None or v > best_v:
            best, best_v = j, v
    return best


def _stat(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def evaluate_backward(
    pairs: str | Path,
    model: str,
    output: str | Path,
    scorer_model: Optional[str] = None,
    k: Optional[int] = None,
    config: EvalConfig | None = None,
    augment=None,
    settings: BackwardEvalConfig | None = None,
    scorer_engine=None,
) -> dict:
    """Evaluate backward model ``model`` on the human pairs in ``pairs``; returns the summary (also written).

    ``config.engine`` runs the backward model; ``scorer_engine`` (an EngineConfig; default the same) the scoring
    model: decoding wants large batches on a CPU, scoring smaller ones."""
    from ..stages.augment import AugmentConfig, PairFilter, backward_requests, clean_instruction
    from ..core.models import base_model_of
    from ..stages.scorers import conditional_logprobs, pmi_of

    cfg = config or EvalConfig()
    aug = augment or AugmentConfig()
    opts = settings or BackwardEvalConfig()
    k = k or max(aug.candidates, aug.generation.n, 1)
    if k < 1:
        raise ConfigError("--k must be >= 1")
    ks = k_values(k)
    out = Path(output)
    items = sample_items(load_items(pairs, need_output=True), None if opts.sample < 0 else opts.sample, cfg.seed)
    if len(items) < 2:
        raise ConfigError(f"{pairs}: {len(items)} pair(s); the relevance AUROC needs at least 2")
    ids = [it.id for it in items]
    outputs = [it.output or "" for it in items]
    human = [it.instruction for it in items]
    scorer_ref = scorer_model or base_model_of(model)
    log.warning("eval backward: %d outputs from %s, %d candidate(s) each from %s, scored with %s -> %s",
                len(items), pairs, k, model, scorer_ref, out)

    # 1. candidates: the augment prompt and sampling settings, k samples per output
    gen_cfg = aug.model_copy(update={"generation": aug.generation.model_copy(update={"n": k})})
    gen_key = fingerprint([model_key(model), gen_cfg.model_dump(mode="json"), ids])
    with LazyModel(model, cfg) as engine:
        def generate(idx: list[int]) -> list[list[str]]:
            results = engine().generate([backward_requests(ids[i], outputs[i], gen_cfg) for i in idx])
            return [list(r.texts) for r in results]

        raw = cached_chunks(out / ".work" / f"generate-{gen_key}", ids, generate, cfg.chunk_size,
                            "backward generate")
    candidates = [[clean_instruction(t) for t in texts] for texts in raw]
    pair_filter = PairFilter(aug.filters)
    reasons = [[pair_filter.reason(c, o) for c in cands] for cands, o in zip(candidates, outputs)]

    # 2. PMI of every candidate, of the human instruction and of another output's human instruction
    perm = derangement(len(items), cfg.seed)
    score_key = fingerprint([model_key(scorer_ref), gen_key, opts.max_output_chars, cfg.seed])
    scorer = LazyModel(scorer_ref, cfg if scorer_engine is None else cfg.model_copy(update={"engine": scorer_engine}))

    def score_first(idx: list[int]) -> list[dict]:
        lists = [[human[i], human[perm[i]], *candidates[i]] for i in idx]
        both = conditional_logprobs(scorer(), [outputs[i] for i in idx], lists,
                                    max_output_chars=opts.max_output_chars)
        rows = []
        for u, conds in both:
            vals = [pmi_of(u, c) for c in conds]
            rows.append({"uncond": u.mean, "human": vals[0], "human_other": vals[1], "candidates": vals[2:]})
        return rows

    def kept(kk: int, i: int) -> Optional[str]:
        j = chosen[kk][i]
        return None if j is None else candidates[i][j]

    def score_other(idx: list[int]) -> list[dict]:
        lists = [[kept(kk, perm[i]) for kk in ks if kept(kk, perm[i]) is not None] for i in idx]
        both = conditional_logprobs(scorer(), [outputs[i] for i in idx], lists,
                                    max_output_chars=opts.max_output_chars)
        rows = []
        for i, texts, (u, conds) in zip(idx, lists, both):
            by_text = {text: pmi_of(u, c) for text, c in zip(texts, conds)}
            rows.append({str(kk): by_text.get(kept(kk, perm[i])) for kk in ks})
        return rows

    with scorer:
        first = cached_chunks(out / ".work" / f"score-{score_key}", ids, score_first, cfg.chunk_size,
                              "score candidates")
        cand_pmi = [r["candidates"] for r in first]
        chosen = {kk: [select(cand_pmi[i], reasons[i], kk) for i in range(len(items))] for kk in ks}
        sel_key = fingerprint([score_key, chosen])
        other = cached_chunks(out / ".work" / f"score-other-{sel_key}", ids, score_other, cfg.chunk_size,
                              "score mismatched")

    # 3. similarity to the human instruction
    from .diversity import embed

    kept_texts = sorted({kept(kk, i) for kk in ks for i in range(len(items)) if kept(kk, i) is not None})
    vectors = dict(zip(kept_texts, embed(kept_texts))) if kept_texts else {}
    human_vec = embed(human)

    by_k = {str(kk): _figures(kk, items, chosen[kk], cand_pmi, first, other, perm, candidates, human, vectors,
                              human_vec, cfg) for kk in ks}
    rejected = Counter(r for rs in reasons for r in rs if r is not None)
    total = sum(len(rs) for rs in reasons)
    main = by_k[str(k)]
    summary = {
        "command": "eval backward", "pairs": str(pairs), "n": len(items), "model": model, "scorer_model": scorer_ref,
        "k": k, "ks": ks, "seed": cfg.seed, "bootstrap": cfg.bootstrap, "confidence": cfg.confidence,
        **{m: main[m] for m in METRICS}, "rouge_l": main["rouge_l"],
        "candidate_acceptance": (total - sum(rejected.values())) / total if total else None,
        "rejected": dict(rejected.most_common()), "by_k": by_k,
        "generation": gen_cfg.generation.model_dump(), "template": aug.template,
        "examples": _examples(items, chosen[k], candidates, reasons, cand_pmi, opts.examples),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_result(summary, out / "backward_eval.json")
    (out / "backward_eval.md").write_text(format_backward_table(summary) + "\n", encoding="utf-8")
    write_jsonl(_candidate_rows(items, candidates, reasons, first, chosen, ks), out / "candidates.jsonl")
    _plot(summary, first, other, chosen[k], out / "backward_eval.png")
    summary["files"] = {name: str(out / f) for name, f in (("summary", "backward_eval.json"),
                                                          ("table", "backward_eval.md"), ("plot", "backward_eval.png"),
                                                          ("candidates", "candidates.jsonl"))}
    return summary


def _figures(kk, items, chosen, cand_pmi, first, other, perm, candidates, human, vectors, human_vec, cfg) -> dict:
    n = len(items)
    ok = [chosen[i] is not None for i in range(n)]
    pos = [cand_pmi[i][chosen[i]] if ok[i] else None for i in range(n)]
    # a negative needs both this output's and the other output's instruction accepted
    neg = [other[i][str(kk)] if ok[i] and ok[perm[i]] else None for i in range(n)]
    pos_paired = [p if g is not None else None for p, g in zip(pos, neg)]
    hum = [r["human"] for r in first]
    hum_other = [r["human_other"] for r in first]
    sims = [float(np.dot(vectors[candidates[i][chosen[i]]], human_vec[i])) if ok[i] else None for i in range(n)]
    rouges = [rouge_l(candidates[i][chosen[i]], human[i]) if ok[i] else None for i in range(n)]

    def ci(fn):
        return bootstrap_ci(fn, n, cfg.bootstrap, cfg.confidence, cfg.seed)

    def pick(values, idx):
        return [values[i] for i in idx]

    def recovery(idx) -> Optional[float]:
        g = [pos[i] for i in idx if ok[i] and pos[i] is not None and hum[i] is not None]
        h = [hum[i] for i in idx if ok[i] and pos[i] is not None and hum[i] is not None]
        return float(np.mean(g) / np.mean(h)) if g and np.mean(h) > 0 else None

    def mean_of(values):
        return lambda idx: _stat(pick(values, idx))

    acc = [1.0 if o else 0.0 for o in ok]
    all_idx = list(range(n))
    return {
        "acceptance": {"value": _stat(acc), "ci": ci(mean_of(acc))},
        "relevance_auroc": {"value": auroc(pos_paired, neg),
                            "ci": ci(lambda idx: auroc(pick(pos_paired, idx), pick(neg, idx))),
                            "n": sum(1 for v in neg if v is not None)},
        "relevance_auroc_human": {"value": auroc(hum, hum_other),
                                  "ci": ci(lambda idx: auroc(pick(hum, idx), pick(hum_other, idx))), "n": n},
        "recovery": {"value": recovery(all_idx), "ci": ci(recovery)},
        "similarity": {"value": _stat(sims), "ci": ci(mean_of(sims))},
        "rouge_l": {"value": _stat(rouges), "ci": ci(mean_of(rouges))},
        "mean_pmi_kept": _stat(pos), "mean_pmi_human": _stat([h for h, o in zip(hum, ok) if o]),
    }


def _examples(items, chosen, candidates, reasons, cand_pmi, limit: int) -> list[dict]:
    rows = []
    for i, it in enumerate(items[:limit]):
        j = chosen[i]
        rows.append({"id": it.id, "human": it.instruction,
                     "generated": candidates[i][j] if j is not None else candidates[i][0],
                     "accepted": j is not None, "reject_reason": None if j is not None else reasons[i][0],
                     "pmi": cand_pmi[i][j] if j is not None else None,
                     "output_start": (it.output or "")[:160]})
    return rows


def _candidate_rows(items, candidates, reasons, first, chosen, ks):
    for i, it in enumerate(items):
        yield {"id": it.id, "human_instruction": it.instruction, "human_pmi": first[i]["human"],
               "candidates": [{"instruction": c, "reject_reason": r, "pmi": p}
                              for c, r, p in zip(candidates[i], reasons[i], first[i]["candidates"])],
               "kept": {str(kk): chosen[kk][i] for kk in ks}}


def format_backward_table(summary: dict) -> str:
    ks = summary["ks"]
    head = "| figure | " + " | ".join(f"k={kk}" for kk in ks) + " |"
    lines = [f"Backward model {summary['model']} on {summary['n']} human pairs from {summary['pairs']} "
             f"(scored with {summary['scorer_model']}; {int(summary['confidence'] * 100)}% bootstrap intervals)",
             "", head, "|" + "---|" * (len(ks) + 1)]
    for m in (*METRICS, "rouge_l"):
        cells = [fmt_ci(summary["by_k"][str(kk)][m]["value"], summary["by_k"][str(kk)][m]["ci"]) for kk in ks]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    rej = ", ".join(f"{r} {c}" for r, c in summary["rejected"].items()) or "none"
    ca = summary["candidate_acceptance"]
    lines += ["", f"candidates accepted: {ca:.3f} of {summary['n'] * summary['k']}; rejected: {rej}"
              if ca is not None else "", "", "| human instruction | generated (kept) | output starts |",
              "|---|---|---|"]
    for ex in summary["examples"]:
        gen = ex["generated"] if ex["accepted"] else f"[{ex['reject_reason']}] {ex['generated']}"
        cells = [_cell(ex["human"]), _cell(gen), _cell(ex["output_start"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return (text[:limit] + "…" if len(text) > limit else text).replace("|", "\\|")


def _plot(summary: dict, first, other, chosen, path: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ks = summary["ks"]
    x = np.arange(len(METRICS) - 1)
    width = 0.8 / len(ks)
    names = [m for m in METRICS if m != "relevance_auroc_human"]
    for n, kk in enumerate(ks):
        fig_k = summary["by_k"][str(kk)]
        vals = [fig_k[m]["value"] or 0 for m in names]
        err = [[max(0.0, v - (fig_k[m]["ci"] or [v, v])[0]) for v, m in zip(vals, names)],
               [max(0.0, (fig_k[m]["ci"] or [v, v])[1] - v) for v, m in zip(vals, names)]]
        ax1.bar(x + n * width, vals, width, yerr=err, label=f"k={kk}", capsize=2)
    human = summary["relevance_auroc_human"]["value"]
    if human is not None:
        ax1.axhline(human, color="gray", ls="--", lw=1, label="human AUROC")
    ax1.set_xticks(x + width * (len(ks) - 1) / 2, names, fontsize=8)
    ax1.set_ylim(0, 1.1)
    ax1.legend(fontsize=7)
    ax1.set_title("backward model, by best-of-k", fontsize=9)
    kept = [first[i]["candidates"][j] for i, j in enumerate(chosen) if j is not None]
    hum = [r["human"] for r in first if r["human"] is not None]
    neg = [o[str(summary["k"])] for o in other if o[str(summary["k"])] is not None]
    vals = kept + hum + neg
    if vals:
        bins = np.linspace(min(vals), max(vals) + 1e-9, 25)
        ax2.hist(hum, bins=bins, alpha=0.5, label="human instruction")
        ax2.hist(kept, bins=bins, alpha=0.5, label=f"generated (k={summary['k']})")
        ax2.hist(neg, bins=bins, alpha=0.5, label="another output's generated")
    ax2.set_xlabel("PMI (nats/token)")
    ax2.legend(fontsize=7)
    ax2.set_title("PMI(output | instruction)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["BackwardEvalConfig", "evaluate_backward", "format_backward_table", "rouge_l", "select", "k_values"]
