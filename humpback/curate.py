"""Self-curation: score every candidate pair with a forward model and select a quality tier.

Layout of ``OUTPUT``:
  scores/      every pair's score row (DESIGN.md score schema), one shard per task
  curated/     the selected tier: pair + score columns for pairs with score >= min_score
  stats.json   counts, null scores by reason, histogram, tier sizes, scorer self-check (AUROC)
  score_hist.png
  .work/       scoring checkpoints keyed by the scoring setup, so changing --min-score only re-selects
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path
from typing import Optional

import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from pydantic import Field

from .config import EngineConfig, StrictModel, load_config
from .records import (
    CURATED_SCHEMA,
    SCORE_SCHEMA,
    RecordError,
    atomic_path,
    iter_jsonl,
    parquet_files,
    to_table,
    write_json,
)
from .scorers import ScorerConfig, auroc, make_scorer, pmi_to_scores, resolve_kind, shuffled_pairs
from .shards import (
    ChunkStore,
    ExecutorConfig,
    RateMeter,
    RowsReader,
    ShardWriter,
    chunked,
    count_rows,
    run_pipeline,
    stable_id,
)

log = logging.getLogger(__name__)

AUROC_WARN = 0.75


class CurateConfig(StrictModel):
    scorer: ScorerConfig = ScorerConfig()
    min_score: float = Field(5.0, ge=1, le=5)
    engine: EngineConfig = EngineConfig()
    executor: ExecutorConfig = ExecutorConfig()
    chunk_size: int = Field(16, ge=1)
    self_check_sample: int = Field(64, ge=0)  # pairs re-scored with shuffled instructions; 0 disables
    self_check_seed: int = 0
    max_pairs: int = -1


def load_curate_config(path: Optional[str], **overrides) -> CurateConfig:
    return load_config(CurateConfig, path, overrides)


# ----------------------------------------------------------------------------- input normalisation
def _find_pairs(path: Path) -> Path:
    """An augment output folder (its pairs/), or a pair-schema file/folder, as is."""
    if path.is_dir() and (path / "pairs").is_dir():
        return path / "pairs"
    return path


def normalise_input(src: str, work: Path) -> Path:
    """Any JSONL/Parquet file or folder with instruction and output columns → pair-schema shards."""
    path = _find_pairs(Path(src))
    if not path.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    files = parquet_files(path) if path.is_dir() else [path]
    jsonl = [f for f in (sorted(path.rglob("*.jsonl")) if path.is_dir() else []) if not f.name.startswith(".")]
    if path.is_dir() and not files:
        files = jsonl
    if not files:
        raise FileNotFoundError(f"{src}: no Parquet or JSONL files")
    if all(f.suffix == ".parquet" for f in files) and \
            set(CURATED_SCHEMA.names[:9]) <= set(pq.read_schema(files[0]).names):
        return path  # already pairs from augment
    out = work / "input"
    marker = out / "_done.json"
    fingerprint = [[str(f), f.stat().st_size, int(f.stat().st_mtime)] for f in files]
    if marker.is_file() and json.loads(marker.read_text()) == fingerprint:
        return out
    for i, f in enumerate(files):
        rows = _read_any(f)
        pairs = []
        for n, r in enumerate(rows):
            missing = [k for k in ("instruction", "output") if k not in r]
            if missing:
                raise RecordError(f"{f}: record {n + 1} has no column(s) {missing} "
                                  f"(columns: {sorted(r)}); curate needs 'instruction' and 'output'")
            pairs.append({
                "pair_id": str(r.get("pair_id") or r.get("id") or stable_id(r["instruction"], r["output"])),
                "instruction": r["instruction"] or "", "output": r["output"] or "",
                "segment_id": r.get("segment_id"), "doc_id": r.get("doc_id"), "url": r.get("url"),
                "backward_model": r.get("backward_model"), "gen_params": r.get("gen_params"),
                "round": r.get("round"),
            })
        from .records import write_parquet

        write_parquet(pairs, out / f"{i:05d}.parquet", "pair")
    write_json(fingerprint, marker)
    return out


def _read_any(f: Path) -> list[dict]:
    if f.suffix == ".parquet":
        return pq.read_table(f).to_pylist()
    return [row for _, row in iter_jsonl(f)]


# ----------------------------------------------------------------------------- scoring step
class ScoreStep(PipelineStep):
    name = "score pairs"
    type = "⚖️ - SCORER"

    def __init__(self, model: str, cfg: CurateConfig, work_dir: str, total: Optional[int]) -> None:
        super().__init__()
        self.model, self.cfg, self.work_dir, self.total = model, cfg, work_dir, total

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from .engines import make_engine

        store = ChunkStore(self.work_dir, rank, CURATED_SCHEMA)
        scorer = None
        meter = RateMeter("pairs scored", self.total if world_size == 1 else None, rank)
        for index, chunk in enumerate(chunked(data or [], self.cfg.chunk_size)):
            ids = [d.id for d in chunk]
            rows = store.load(index, ids)
            if rows is None:
                if scorer is None:
                    scorer = make_scorer(make_engine(self.model, self.cfg.engine), self.cfg.scorer)
                pairs = [d.metadata["row"] for d in chunk]
                scores = scorer.score(pairs)
                rows = [{**p, **s, "scorer": scorer.kind, "model": self.model} for p, s in zip(pairs, scores)]
                store.save(index, ids, rows)
            meter.update(len(chunk))
            for row in rows:
                yield Document(text=row["output"], id=row["pair_id"], metadata={"row": row})
        meter.update(0, force=True)


# ----------------------------------------------------------------------------- finalisation
def _histogram(scores: list[Optional[float]]) -> dict[str, int]:
    c = Counter("null" if s is None else str(int(s)) for s in scores)
    return {k: c.get(k, 0) for k in ["1", "2", "3", "4", "5", "null"]}


def _plot_histogram(hist: dict[str, int], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    keys = list(hist)
    ax.bar(keys, [hist[k] for k in keys], color=["#bbb"] * 5 + ["#d55"])
    ax.set_xlabel("score")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _finalise(scored_dir: Path, out: Path, cfg: CurateConfig, kind: str) -> tuple[dict, list[float]]:
    files = parquet_files(scored_dir)
    cuts: list[float] = []
    if kind == "pmi":
        all_pmi = [v for f in files for v in pq.read_table(f, columns=["pmi"]).column("pmi").to_pylist()]
        _, cuts = pmi_to_scores(all_pmi, cfg.scorer)
    all_scores: list[Optional[float]] = []
    null_reasons: Counter = Counter()
    selected = 0
    for f in files:
        rows = pq.read_table(f).to_pylist()
        if kind == "pmi":
            mapped, _ = pmi_to_scores([r["pmi"] for r in rows], cfg.scorer.model_copy(
                update={"pmi_mapping": "thresholds", "pmi_cuts": cuts}))
            for r, s in zip(rows, mapped):
                r["score"] = s
        for r in rows:
            all_scores.append(r["score"])
            if r["score"] is None:
                rat = r.get("rationale") or ""
                null_reasons[rat[1:rat.index("]")] if rat.startswith("[") and "]" in rat else "no_score"] += 1
        keep = [r for r in rows if r["score"] is not None and r["score"] >= cfg.min_score]
        selected += len(keep)
        with atomic_path(out / "scores" / f.name, suffix=".parquet") as tmp:
            pq.write_table(to_table(({k: r[k] for k in SCORE_SCHEMA.names} for r in rows), SCORE_SCHEMA), tmp)
        with atomic_path(out / "curated" / f.name, suffix=".parquet") as tmp:
            pq.write_table(to_table(keep, CURATED_SCHEMA), tmp)
    # shards from an earlier run with more tasks would otherwise linger in the published folders
    names = {f.name for f in files}
    for folder in (out / "scores", out / "curated"):
        for stale in folder.glob("*.parquet"):
            if stale.name not in names:
                stale.unlink()
    hist = _histogram(all_scores)
    tiers = {f">={k}": sum(1 for s in all_scores if s is not None and s >= k) for k in (5, 4, 3, 2, 1)}
    return {"pairs_scored": len(all_scores), "selected": selected, "histogram": hist, "tiers": tiers,
            "null_scores": dict(null_reasons), "pmi_cuts": cuts or None}, cuts


def self_check(model: str, cfg: CurateConfig, pairs_dir: Path, scored_dir: Path, kind: str) -> dict:
    """Score shuffled pairs and report AUROC of real vs shuffled (the real sample's scores are reused)."""
    from .engines import make_engine

    n = cfg.self_check_sample
    if n <= 0:
        return {"skipped": True}
    rows = [r for f in parquet_files(scored_dir) for r in pq.read_table(f).to_pylist()]
    rng = random.Random(cfg.self_check_seed)
    sample = rng.sample(rows, min(n, len(rows)))
    if len(sample) < 4:
        return {"skipped": True, "reason": f"only {len(sample)} pairs"}
    scorer = make_scorer(make_engine(model, cfg.engine), cfg.scorer.model_copy(update={"kind": kind}))
    shuffled = shuffled_pairs(sample, seed=cfg.self_check_seed)
    shuffled_scores = scorer.score(shuffled)
    real = [scorer.continuous(r) for r in sample]
    fake = [scorer.continuous(s) for s in shuffled_scores]
    value = auroc(real, fake)
    result = {"n": len(sample), "auroc": value, "threshold": AUROC_WARN,
              "mean_real": _mean(real), "mean_shuffled": _mean(fake)}
    if value is None or value < AUROC_WARN:
        advice = "a stronger scoring model" if kind == "pmi" else "--scorer pmi or a stronger model"
        small = f"; only {len(sample)} pairs were checked, so the estimate is rough" if len(sample) < 20 else ""
        result["warning"] = ("this scorer cannot tell matching pairs from shuffled ones on this data "
                             f"(AUROC {value if value is None else round(value, 3)} < {AUROC_WARN}); "
                             f"its tiers are not trustworthy — try {advice}{small}")
    return result


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def run_curate(pairs: str, model: str, output: str, config: CurateConfig | None = None) -> dict:
    """Score every pair in ``pairs`` with ``model`` and select the tier with score >= min_score."""
    cfg = config or CurateConfig()
    out = Path(output)
    work = out / ".work"
    pairs_dir = normalise_input(pairs, work)
    kind = cfg.scorer.kind
    if kind == "auto":  # needs the model's size; loading it here also fails early on a bad reference
        from .engines import make_engine

        kind = resolve_kind(cfg.scorer, make_engine(model, cfg.engine))
    total = count_rows(pairs_dir)
    if cfg.max_pairs >= 0:
        total = min(total, cfg.max_pairs)
    scoring = cfg.scorer.model_copy(update={"kind": kind}).model_dump(exclude={"pmi_mapping", "pmi_cuts"})
    key = stable_id(model, json.dumps(scoring, sort_keys=True), str(pairs_dir.resolve()), cfg.max_pairs)
    scored_dir = work / f"scored-{key}"
    log.warning("curate: scoring %d pairs from %s with %s (scorer %s) -> %s", total, pairs_dir, model, kind, out)
    pipeline = [
        RowsReader(pairs_dir, id_key="pair_id", text_key="output", limit=cfg.max_pairs),
        ScoreStep(model, cfg.model_copy(update={"scorer": cfg.scorer.model_copy(update={"kind": kind})}),
                  str(work / f"chunks-{key}"), total),
        ShardWriter(scored_dir, "curated", work / f"stats-{key}", work_dir=work / f"chunks-{key}"),
    ]
    run_pipeline(pipeline, cfg.executor, work / f"logs-{key}")
    summary, _ = _finalise(scored_dir, out, cfg, kind)
    check_file = work / f"selfcheck-{key}-{cfg.self_check_sample}-{cfg.self_check_seed}.json"
    if check_file.is_file():
        check = json.loads(check_file.read_text())
    else:
        check = self_check(model, cfg, pairs_dir, scored_dir, kind)
        write_json(check, check_file)
    if check.get("warning"):
        log.warning("SELF-CHECK WARNING: %s", check["warning"])
    stats = {"stage": "curate", "model": model, "scorer": kind, "min_score": cfg.min_score,
             "input": str(pairs_dir), **summary, "self_check": check, "config": cfg.model_dump()}
    write_json(stats, out / "stats.json")
    _plot_histogram(summary["histogram"], f"{kind} scores ({model})", out / "score_hist.png")
    return stats


def format_summary(stats: dict) -> str:
    h = stats["histogram"]
    lines = [f"scored {stats['pairs_scored']} pairs with {stats['scorer']} ({stats['model']})",
             "score  " + "  ".join(f"{k:>5}" for k in h), "pairs  " + "  ".join(f"{v:>5}" for v in h.values()),
             "tiers  " + ", ".join(f"{k}: {v}" for k, v in stats["tiers"].items()),
             f"selected (score >= {stats['min_score']:g}): {stats['selected']}"]
    if stats["null_scores"]:
        lines.append(f"null scores by reason: {stats['null_scores']}")
    chk = stats["self_check"]
    if chk.get("auroc") is not None:
        lines.append(f"self-check AUROC real vs shuffled: {chk['auroc']:.3f} on {chk['n']} pairs")
    if chk.get("warning"):
        lines.append(f"WARNING: {chk['warning']}")
    return "\n".join(lines)


__all__ = ["CurateConfig", "run_curate", "format_summary", "load_curate_config", "normalise_input"]
