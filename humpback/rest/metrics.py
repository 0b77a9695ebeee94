"""ReST-EM metrics: pass@k (unbiased estimator), majority-vote accuracy, per-iteration table and plot."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k solutions drawn from n (c correct) is correct (Chen et al. 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(samples: Sequence[dict[str, Any]]) -> bool | None:
    """Whether the most frequent answer (ties: the one seen first) is correct; None if no sample has one."""
    keyed = [s for s in samples if s.get("key")]
    if not keyed:
        return None
    counts = Counter(s["key"] for s in keyed)
    first_seen = {}
    for i, s in enumerate(keyed):
        first_seen.setdefault(s["key"], i)
    best = max(counts, key=lambda k: (counts[k], -first_seen[k]))
    return any(s["reward"] >= 1.0 for s in keyed if s["key"] == best)


def k_values(n: int) -> list[int]:
    ks = {1, n}
    k = 2
    while k < n:
        ks.add(k)
        k *= 2
    return sorted(x for x in ks if x >= 1)


def summarize_eval(rows: Sequence[dict[str, Any]], problem_ids: Sequence[str], votable: bool) -> dict[str, Any]:
    """Held-out metrics from greedy and sampled rows (SAMPLE_SCHEMA)."""
    greedy: dict[str, dict] = {}
    sampled: dict[str, list[dict]] = defaultdict(list)
    difficulty: dict[str, int | None] = {}
    for r in rows:
        difficulty[r["problem_id"]] = r.get("difficulty")
        if r["mode"] == "greedy":
            greedy[r["problem_id"]] = r
        else:
            sampled[r["problem_id"]].append(r)
    n_problems = len(problem_ids)
    out: dict[str, Any] = {"problems": n_problems}
    if greedy:
        correct = [greedy[p]["reward"] >= 1.0 for p in problem_ids if p in greedy]
        out["pass@1_greedy"] = sum(correct) / n_problems if n_problems else 0.0
        out["answered_greedy"] = sum(1 for r in greedy.values() if r.get("extracted")) / max(len(greedy), 1)
        out["truncated_greedy"] = sum(1 for r in greedy.values() if r["finish_reason"] == "length") / max(
            len(greedy), 1)
    if sampled:
        n = min(len(v) for v in sampled.values())
        per_k: dict[str, float] = {}
        for k in k_values(n):
            per_k[f"pass@{k}"] = sum(pass_at_k(len(sampled[p]), sum(s["reward"] >= 1.0 for s in sampled[p]), k)
                                     for p in problem_ids) / n_problems
        out["samples_per_problem"] = n
        out["pass@k"] = per_k
        out["pass@1_sampled"] = per_k["pass@1"]
        out[f"pass@{n}"] = per_k[f"pass@{n}"]
        if votable:
            votes = [majority_correct(sampled[p]) for p in problem_ids]
            out[f"maj@{n}"] = sum(1 for v in votes if v) / n_problems
    out["pass@1"] = out.get("pass@1_greedy", out.get("pass@1_sampled"))
    out["k"] = out.get("samples_per_problem")
    out["pass@k_max"] = out.get(f"pass@{out['k']}") if out["k"] else None
    out["maj@k"] = out.get(f"maj@{out['k']}") if out["k"] else None
    levels = sorted({d for d in difficulty.values() if d is not None})
    if levels:
        by_level = {}
        for level in levels:
            ids = [p for p in problem_ids if difficulty.get(p) == level]
            entry: dict[str, Any] = {"problems": len(ids)}
            if greedy:
                entry["pass@1_greedy"] = sum(greedy[p]["reward"] >= 1.0 for p in ids if p in greedy) / len(ids)
            if sampled:
                entry["pass@1_sampled"] = sum(
                    sum(s["reward"] >= 1.0 for s in sampled[p]) / len(sampled[p]) for p in ids) / len(ids)
            by_level[str(level)] = entry
        out["by_difficulty"] = by_level
    return out


# --------------------------------------------------------------------------------------------- table / plot

COLUMNS = [
    ("iteration", "iter"), ("model", "model"), ("train_reward_rate", "train reward rate"),
    ("train_solved", "train problems solved"), ("accepted", "solutions kept (M-step data)"),
    ("pass@1", "held-out pass@1"), ("pass@k", "held-out pass@k"), ("maj@k", "held-out maj@k"),
]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def markdown_table(rows: Sequence[dict[str, Any]], k: int | None) -> str:
    names = [title.replace("@k", f"@{k}") if k else title for _, title in COLUMNS]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def plot_metrics(rows: Sequence[dict[str, Any]], path: Path, k: int | None, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    series = [("pass@1", "held-out pass@1", "o-"), ("pass@k", f"held-out pass@{k}" if k else "pass@k", "s--"),
              ("maj@k", f"held-out maj@{k}" if k else "maj@k", "^--"),
              ("train_reward_rate", "train reward rate (its E-step)", "d:")]
    for key, label, style in series:
        points = [(r["iteration"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, style, label=label, markersize=5, linewidth=1.4)
    ax.set_xticks([r["iteration"] for r in rows])
    ax.set_xlabel("iteration (0 = base model)")
    ax.set_ylabel("rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


__all__ = ["majority_correct", "markdown_table", "pass_at_k", "plot_metrics", "summarize_eval"]
