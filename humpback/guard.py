"""The collapse guard of `humpback run`: each forward model on held-out human outputs, and when to stop.

After M(r) is trained, stage ``eval-m{r}`` measures it: the per-token NLL of held-out human outputs
(:func:`humpback.evaluate.heldout.evaluate_heldout`, the paper's inference prompt ``both``) next to M(r-1) on
the same examples, with the paired bootstrap difference, and the diversity of the tier M(r) trained on
(:func:`humpback.evaluate.diversity.evaluate_diversity`). M(r) is *worse* than M(r-1) on a set when that
difference's 95% interval lies entirely above 0.

Rounds trained on self-generated data without fresh information can degrade (model collapse). When M(N+1) is
worse than M(N) for N >= 1, the run's result is round N (its model and tier) and, with
``loop.stop_on_regression``, the curate/train/eval stages of later rounds are not run. M1 against M0 is
reported and warned about but never stops the run: M0 has no tier, so there is no earlier result to fall back
to. The decision is a function of the stored eval results and the config, so a re-run decides the same way
until a setting changes what is measured or ``stop_on_regression`` is turned off.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .core.config import EngineConfig
from .evaluate.common import fmt_ci

log = logging.getLogger("humpback.guard")

# the prompt the model is used with at inference: the paper's best setting, S_a + S_w (train.data.forward_messages)
SYSTEM = "both"
DIVERSITY_FIGURES = ("distinct_2", "verb_noun_pairs_per_100", "mean_pairwise_distance")


def eval_stage(r: int) -> str:
    return f"eval-m{r}"


def evaluate_round(r: int, models: Sequence[str], sets: Mapping[str, str], tier: Optional[Path], output: Path,
                   engine: EngineConfig, sample: int, diversity_sample: int, work: Path) -> dict[str, Any]:
    """Stage eval-m{r}: ``models`` is [M(r-1), M(r)] ([M0] for r = 0); ``sets`` the held-out files by name;
    ``tier`` the curated pairs M(r) trained on (None for M0). ``work`` is shared by every round, so M(r-1)'s NLLs
    computed in the previous round's stage are reused, not recomputed."""
    from .evaluate.common import EvalConfig
    from .evaluate.heldout import evaluate_heldout

    model, previous = Path(models[-1]).name, (Path(models[0]).name if len(models) > 1 else None)
    results: dict[str, Any] = {}
    for name, path in sets.items():
        s = evaluate_heldout(path, list(models), output / name, systems=(SYSTEM,),
                             config=EvalConfig(engine=engine.model_copy(update={"progress": False})),
                             max_examples=None if sample < 0 else sample, work=work)
        own = list(s["models"].values())[-1]["systems"][SYSTEM]
        d = next((d for d in s["differences"] if d["system"] == SYSTEM), None)
        results[name] = {"n": s["n"], "nll": own["nll"], "nll_ci": own["nll_ci"], "tokens": own["tokens"],
                         "diff": d["nll_b_minus_a"] if d else None, "diff_ci": d["ci"] if d else None,
                         "output": str(output / name)}
        if d:  # the previous model's own figures, for the warning line
            prev = list(s["models"].values())[0]["systems"][SYSTEM]
            results[name] |= {"previous_nll": prev["nll"], "previous_nll_ci": prev["nll_ci"]}
    worse = [name for name, f in results.items() if is_worse(f)]
    warning = None
    if worse:
        warning = f"{model} is worse than {previous} on held-out human outputs: " + "; ".join(
            f"{name} NLL {fmt_ci(results[name]['nll'], results[name]['nll_ci'])} vs "
            f"{fmt_ci(results[name]['previous_nll'], results[name]['previous_nll_ci'])}, difference "
            f"{fmt_ci(results[name]['diff'], results[name]['diff_ci'])}" for name in worse)
        log.warning("collapse guard: %s", warning)
    return {"round": r, "model": model, "previous": previous, "sets": results, "worse_on": worse,
            "warning": warning, "tier": _tier(r, tier, output / "diversity", diversity_sample)}


def is_worse(figures: Mapping[str, Any]) -> bool:
    """The paired difference NLL(this) - NLL(previous) has its whole interval above 0."""
    ci = figures.get("diff_ci")
    return bool(ci) and ci[0] > 0


def _tier(r: int, tier: Optional[Path], output: Path, sample: int) -> Optional[dict[str, Any]]:
    if tier is None:
        return None
    from .evaluate.diversity import evaluate_diversity

    try:
        s = evaluate_diversity([(f"tier r{r}", tier)], output, sample=None if sample < 0 else sample)
    except FileNotFoundError:  # an empty tier has no shards: nothing to measure
        return {"size": 0, "path": str(tier)}
    m = next(iter(s["sets"].values()))
    return {"size": m["available"], "n": m["n"], "path": str(tier), **{k: m.get(k) for k in DIVERSITY_FIGURES}}


@dataclass
class Standing:
    """What the run has produced so far: the round whose model and tier stand (None before M1 is trained), and,
    after an early stop, the eval stage that stopped it and why."""

    round: Optional[int]
    stopped_after: Optional[str] = None
    reason: Optional[str] = None

    @property
    def model(self) -> Optional[str]:
        return None if self.round is None else f"m{self.round}"

    def as_manifest(self) -> dict[str, Any]:
        out = asdict(self) | {"model": self.model}
        out["tier"] = None if self.round is None else f"curate/r{self.round}/curated"
        return out


def standing(results: Mapping[str, Mapping[str, Any]], rounds: int, stop_on_regression: bool) -> Standing:
    """The run's result from the stored results of the stages walked so far (``results`` by stage name)."""
    for r in range(2, rounds + 1):
        res = results.get(eval_stage(r)) or {}
        if stop_on_regression and res.get("worse_on"):
            return Standing(r - 1, eval_stage(r), res.get("warning"))
    trained = [r for r in range(1, rounds + 1) if f"m{r}" in results]
    return Standing(max(trained) if trained else None)


# ------------------------------------------------------------------------------------------ the per-round table
def round_rows(results: Mapping[str, Mapping[str, Any]], result_round: Optional[int],
               stopped_after: Optional[str] = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the per-round table, from the stored eval-m{r} results (by stage name): round, model,
    NLL per held-out set with its interval, the difference to the previous round with its interval, tier size
    and diversity, and which round is the run's result. The terminal and the dataset card both show it."""
    evals = sorted(((int(name[len("eval-m"):]), res) for name, res in results.items()
                    if name.startswith("eval-m") and name[len("eval-m"):].isdigit() and res), key=lambda x: x[0])
    sets = list(dict.fromkeys(s for _, res in evals for s in res.get("sets") or {}))
    header = ["round", "model", *(h for s in sets for h in (f"{s} NLL", f"{s} Δ previous")), "tier pairs",
              "distinct-2", "verb-noun /100", "embedding spread", "result"]
    rows = []
    for r, res in evals:
        cells = [str(r), str(res.get("model") or f"m{r}")]
        for s in sets:
            f = (res.get("sets") or {}).get(s) or {}
            mark = " worse" if is_worse(f) else ""
            cells += [fmt_ci(f.get("nll"), f.get("nll_ci")), fmt_ci(f.get("diff"), f.get("diff_ci")) + mark]
        tier = res.get("tier") or {}
        cells += [str(tier["size"]) if tier.get("size") is not None else "-",
                  *(_num(tier.get(k)) for k in DIVERSITY_FIGURES)]
        cells.append("result" if r == result_round else "stopped here" if eval_stage(r) == stopped_after else "")
        rows.append(cells)
    return header, rows


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else f"{v:.1f}"


def format_round_table(results: Mapping[str, Mapping[str, Any]], result: Optional[Mapping[str, Any]]) -> list[str]:
    """The per-round table for the terminal (no lines when no round was evaluated)."""
    result = result or {}
    header, rows = round_rows(results, result.get("round"), result.get("stopped_after"))
    if not rows:
        return []
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    lines = ["", f"forward models on held-out human outputs (NLL per token, system {SYSTEM}; 95% intervals; "
                 "Δ previous: paired difference to the round before, above 0 is worse):"]
    lines += [("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths))).rstrip() for row in [header, *rows]]
    if result.get("stopped_after"):
        lines.append(f"  stopped after {result['stopped_after']}: the run's result is round {result['round']} "
                     f"(models/{result['model']}, {result['tier']}); loop.stop_on_regression: false continues")
    elif result.get("round") is not None:
        lines.append(f"  the run's result: round {result['round']} (models/{result['model']}, {result['tier']})")
    return lines


__all__ = ["SYSTEM", "Standing", "eval_stage", "evaluate_round", "format_round_table", "is_worse", "round_rows",
           "standing"]
