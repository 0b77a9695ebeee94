"""What each stage of `humpback run` records in RUN/manifest.json, as types that know their own lines.

A result is written once (the stage's return value, stored as JSON in the manifest) and read back by the run
summary, the report and the dataset card; each type says how it reads in the terminal (``summary``) and in the
card's stage table (``card``), so neither reader keeps its own chain of stage names. Every field is optional
when read back: a manifest of another humpback version (or a stage that never finished) still renders.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from .markdown import TRAINING, count, g, md_text, num
from .markdown import fig as _card_fig
from .markdown import steps as _card_steps
from .runs import StageResult

EVAL_ROUND = re.compile(r"^eval-m\d+$")


def fig(f: dict | None) -> str:
    """A figure with its 95% interval, for the terminal."""
    if not f or f.get("value") is None:
        return "-"
    ci = f.get("ci")
    return f"{f['value']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


class CorpusSummary(StageResult):
    documents: Any = None
    chars: Any = None
    output: Any = None

    def summary(self) -> str:
        return f"{self.documents} documents -> {self.output}"

    def card(self) -> str:
        return f"{count(self.documents)} documents"


class PrepareSummary(StageResult):
    segments: Any = None
    documents_in: Any = None
    quarantined: Any = None
    candidates: Any = None
    dropped: Any = None

    def summary(self) -> str:
        return f"{self.documents_in} documents -> {self.candidates} candidate segments -> {self.segments} kept"

    def card(self) -> str:
        return f"{count(self.documents_in)} documents → {count(self.segments)} segments"


class SeedSummary(StageResult):
    read: Any = None
    written: Any = None
    heldout: Any = None
    dropped: Any = None

    def summary(self) -> str:
        return f"{self.written} seed pairs, {self.heldout} held out"

    def card(self) -> str:
        return f"{count(self.written)} seed pairs ({count(self.heldout)} held out for evaluation)"


class TrainSummary(StageResult):
    output: Any = None
    skipped: Any = None
    examples: Any = None
    steps: Any = None
    first_loss: Any = None
    final_loss: Any = None

    @classmethod
    def of(cls, result) -> TrainSummary:
        """From humpback.stages.train's TrainResult."""
        s = result.summary
        res = s.get("results", {})
        return cls(output=str(result.output), skipped=result.skipped, examples=s.get("data", {}).get("examples"),
                   steps=res.get("global_step"), first_loss=res.get("first_loss"), final_loss=res.get("final_loss"))

    def summary(self) -> str:
        loss = self.final_loss
        return (f"{self.examples} examples, {self.steps} steps, loss {self.first_loss or 0:.3f} → "
                f"{loss or 0:.3f}" if loss is not None else str(self.output))

    def card(self) -> str:
        return (f"{count(self.examples)} examples, {_card_steps(self.steps)}, loss "
                f"{num(self.first_loss, 3)} → {num(self.final_loss, 3)}")


class EvalBackwardSummary(StageResult):
    sets: Any = None  # held-out set name -> its figures (acceptance, relevance_auroc, ..., n, k, output)

    def summary(self) -> str:
        return "; ".join(f"{name}: acceptance {fig(f['acceptance'])}, relevance AUROC {fig(f['relevance_auroc'])}"
                         for name, f in (self.sets or {}).items()) or "no held-out pairs"

    def card(self) -> str:
        return "; ".join(f"{md_text(s)}: acceptance {_card_fig(f.get('acceptance'))}, relevance AUROC "
                         f"{_card_fig(f.get('relevance_auroc'))}" for s, f in (self.sets or {}).items()) \
            or "no held-out pairs"


class RoundEvalSummary(StageResult):
    """eval-m{r}: the forward model on held-out human outputs and its tier's diversity (humpback.guard)."""

    round: Any = None
    model: Any = None
    previous: Any = None  # the model it is compared with (None for M0)
    sets: Any = None  # held-out set -> n, nll, nll_ci, diff, diff_ci (NLL(model) - NLL(previous)), output
    worse_on: Any = None  # sets where the difference's whole interval is above 0
    warning: Any = None
    tier: Any = None  # size, n, path and the diversity figures of the tier it trained on (None for M0)

    def _parts(self, ci) -> list[str]:
        parts = []
        for name, f in (self.sets or {}).items():
            part = f"{name} NLL {ci(f.get('nll'), f.get('nll_ci'))}"
            if self.previous and f.get("diff") is not None:
                part += f", vs {self.previous} {ci(f.get('diff'), f.get('diff_ci'))}"
            parts.append(part)
        tier = self.tier or {}
        if tier.get("size") is not None:
            div = tier.get("distinct_2")
            parts.append(f"tier {tier['size']} pairs" + (f", distinct-2 {div:.3f}" if div is not None else ""))
        return parts

    def summary(self) -> str:
        from ..evaluate.common import fmt_ci

        text = "; ".join(self._parts(fmt_ci)) or "no held-out pairs"
        return f"WARNING worse on {', '.join(self.worse_on)}: {text}" if self.worse_on else text

    def card(self) -> str:
        from ..evaluate.common import fmt_ci

        text = "; ".join(md_text(p) for p in self._parts(fmt_ci)) or "no held-out pairs"
        return f"⚠ worse on {md_text(', '.join(self.worse_on))}: {text}" if self.worse_on else text


class AugmentSummary(StageResult):
    segments_in: Any = None
    pairs_generated: Any = None
    pairs_written: Any = None
    dropped: Any = None

    def summary(self) -> str:
        return (f"{self.pairs_written} pairs kept of {self.pairs_generated} from {self.segments_in} segments; "
                f"dropped {self.dropped}")

    def card(self) -> str:
        return f"{count(self.pairs_written)} candidate pairs kept of {count(self.pairs_generated)} generated"


class CurateSummary(StageResult):
    scored: Any = None
    selected: Any = None
    tiers: Any = None
    histogram: Any = None
    null_scores: Any = None
    scorer: Any = None
    model: Any = None
    min_score: Any = None
    auroc: Any = None
    auroc_n: Any = None
    warning: Any = None
    auroc_by_kind: Any = None

    @classmethod
    def of(cls, stats: dict[str, Any]) -> CurateSummary:
        """From humpback.stages.curate's stats."""
        chk = stats.get("self_check", {})
        return cls(scored=stats["pairs_scored"], selected=stats["selected"], tiers=stats["tiers"],
                   histogram=stats["histogram"], null_scores=stats["null_scores"], scorer=stats["scorer"],
                   model=stats["model"], min_score=stats["min_score"], auroc=chk.get("auroc"), auroc_n=chk.get("n"),
                   warning=chk.get("warning"),
                   auroc_by_kind={k: v["auroc"] for k, v in (chk.get("negatives") or {}).items()})

    def summary(self) -> str:
        auroc = self.auroc
        kinds = self.auroc_by_kind or {"shuffled": auroc}
        chk = (f"AUROC {', '.join(f'{k} ' + ('n/a' if v is None else f'{v:.3f}') for k, v in kinds.items())} "
               f"(n={self.auroc_n})" if auroc is not None else "self-check skipped")
        return (f"{self.selected} of {self.scored} selected (score >= {self.min_score}); tiers {self.tiers}; "
                f"{chk}")

    def card(self) -> str:
        auroc = self.auroc
        return (f"{count(self.selected)} of {count(self.scored)} pairs with score ≥ {g(self.min_score)} "
                f"({md_text(self.scorer)})" + (f"; self-check AUROC {num(auroc, 3)}" if auroc is not None else ""))


class ExportSummary(StageResult):
    # the rest of humpback.stages.export's ExportResult is kept as it is (extra fields)
    output: Any = None
    rows: Any = None

    def summary(self) -> str:
        return f"{self.rows} rows -> {self.output}"


def result_type(stage: str) -> type[StageResult]:
    """The result type of a `humpback run` stage, by its name."""
    fixed = {"corpus": CorpusSummary, "prepare": PrepareSummary, "seed": SeedSummary,
             "eval-backward": EvalBackwardSummary, "augment": AugmentSummary, "export": ExportSummary}
    if stage in fixed:
        return fixed[stage]
    if stage.startswith("curate"):
        return CurateSummary
    if EVAL_ROUND.match(stage):
        return RoundEvalSummary
    return TrainSummary if TRAINING.match(stage) else StageResult


def describe(stage: str, result: Optional[dict[str, Any]]) -> str:
    """The terminal's one line for a stage's stored result ('' when it has none)."""
    return result_type(stage).line(result)


def card_row(stage: str, result: Optional[dict[str, Any]]) -> Optional[str]:
    """The dataset card's stage-table text for a stored result; None for stages the card does not list."""
    return result_type(stage).model_validate(result or {}).card()


__all__ = ["AugmentSummary", "CorpusSummary", "CurateSummary", "EvalBackwardSummary", "ExportSummary",
           "PrepareSummary", "RoundEvalSummary", "SeedSummary", "TrainSummary", "card_row", "describe", "fig",
           "result_type"]
