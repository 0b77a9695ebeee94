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
from functools import partial
from pathlib import Path
from typing import Literal, Optional

import pyarrow.parquet as pq
from datatrove.data import Document
from pydantic import Field

from ..core.config import EngineConfig, StrictModel, load_config
from ..engines.base import EngineCapabilityError
from ..evaluate.common import auroc
from ..core.model_step import Task, TaskRollout, model_steps, rollout_stats
from ..core.records import (
    CURATED_SCHEMA,
    SCORE_SCHEMA,
    RecordError,
    atomic_path,
    parquet_files,
    read_records,
    record_files,
    to_table,
    write_json,
)
from .scorers import (
    SCORERS,
    ScorerConfig,
    is_mapped,
    auto_kind,
    make_scorer,
    pmi_to_scores,
    resolve_kind,
)
from ..core.shards import ExecutorConfig, RowsReader, ShardWriter, count_rows, merge_stats, run_then_finish, stable_id

log = logging.getLogger("humpback.curate")

AUROC_WARN = 0.75


class CurateConfig(StrictModel):
    scorer: ScorerConfig = ScorerConfig()
    min_score: float = Field(5.0, ge=1, le=5)
    engine: EngineConfig = EngineConfig()
    executor: ExecutorConfig = ExecutorConfig()
    chunk_size: int = Field(16, ge=1)
    self_check_sample: int = Field(64, ge=0)  # pairs re-scored as typed negatives; 0 disables
    self_check_seed: int = 0
    # negatives built from the sample alone (docs/eval.md); web-voice needs a corpus and is left to eval scorer
    self_check_negatives: list[Literal["shuffled", "neighbor", "truncated", "boilerplate"]] = Field(
        default_factory=lambda: ["shuffled", "neighbor", "truncated", "boilerplate"])
    max_pairs: int = -1


def load_curate_config(path: Optional[str], **overrides) -> CurateConfig:
    return load_config(CurateConfig, path, overrides)


# ----------------------------------------------------------------------------- input normalisation
def _find_pairs(path: Path) -> Path:
    """An augment output folder (its pairs/), or a pair-schema file/folder, as is."""
    if path.is_dir() and (path / "pairs").is_dir():
        return path / "pairs"
    return path


def normalize_input(src: str, work: Path) -> Path:
    """Any JSONL/Parquet file or folder with instruction and output columns → pair-schema shards."""
    path = _find_pairs(Path(src))
    if not path.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    files = record_files(path)
    if all(f.suffix == ".parquet" for f in files) and \
            set(CURATED_SCHEMA.names[:9]) <= set(pq.read_schema(files[0]).names):
        return path  # already pairs from augment
    out = work / "input"
    marker = out / "_done.json"
    fingerprint = [[str(f), f.stat().st_size, int(f.stat().st_mtime)] for f in files]
    if marker.is_file() and json.loads(marker.read_text()) == fingerprint:
        return out
    for i, f in enumerate(files):
        pairs = []
        for where, r in read_records(f):
            missing = [k for k in ("instruction", "output") if k not in r]
            if missing:
                raise RecordError(f"{f}: record {where.index + 1} has no column(s) {missing} "
                                  f"(columns: {sorted(r)}); curate needs 'instruction' and 'output'")
            pairs.append({
                "pair_id": str(r.get("pair_id") or r.get("id") or stable_id(r["instruction"], r["output"])),
                "instruction": r["instruction"] or "", "output": r["output"] or "",
                "segment_id": r.get("segment_id"), "doc_id": r.get("doc_id"), "url": r.get("url"),
                "backward_model": r.get("backward_model"), "gen_params": r.get("gen_params"),
                "round": r.get("round"),
            })
        from ..core.records import write_parquet

        write_parquet(pairs, out / f"{i:05d}.parquet", "pair")
    write_json(fingerprint, marker)
    return out


# ----------------------------------------------------------------------------- scoring task
class ScoreTask(Task):
    """The scorer as a model-step task: a pair row becomes its score row (pair + score columns).

    On the vllm path the scorers are synchronous code; each pair's scorer runs in a worker thread while its
    requests go through InferenceRunner's callback on the event loop (CallbackEngine), so the scorers are reused
    as they are and score exactly as they do on the other engines."""

    name = "score pairs"
    label = "pairs scored"
    schema = CURATED_SCHEMA
    stage = "curate"
    text_key = "output"

    def __init__(self, model: str, cfg: CurateConfig) -> None:
        self.model, self.cfg = model, cfg
        self.scorer = None

    def open(self, engine) -> None:
        self.scorer = make_scorer(engine, self.cfg.scorer)

    def run(self, engine, docs: list[Document]) -> tuple[list[dict], int]:
        pairs = [d.metadata["row"] for d in docs]
        scores = self.scorer.score(pairs)
        return [{**p, **s, "scorer": self.scorer.kind, "model": self.model} for p, s in zip(pairs, scores)], 0

    async def rollout(self, engine, document: Document, pool) -> dict:
        import asyncio

        scorer = make_scorer(engine, self.cfg.scorer)
        [row] = await asyncio.get_running_loop().run_in_executor(pool, scorer.score, [document.metadata["row"]])
        return row

    def rollout_rows(self, document: dict) -> list[dict]:
        meta = document.get("metadata") or {}
        return [{**meta["row"], **score, "scorer": self.cfg.scorer.kind, "model": self.model}
                for score in meta.get("rollout_results") or []]


# ----------------------------------------------------------------------------- finalisation
def _histogram(scores: list[Optional[float]]) -> dict[str, int]:
    c = Counter("null" if s is None else str(int(s)) for s in scores)
    return {k: c.get(k, 0) for k in ["1", "2", "3", "4", "5", "null"]}


def histogram_png(hist: dict[str, int], title: str) -> bytes:
    """The score histogram as PNG bytes (score_hist.png, and the run report's inline picture)."""
    import io

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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _plot_histogram(hist: dict[str, int], title: str, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(histogram_png(hist, title))


def _finalise(scored_dir: Path, out: Path, cfg: CurateConfig, kind: str) -> tuple[dict, list[float]]:
    files = parquet_files(scored_dir)
    cuts: list[float] = []
    if is_mapped(kind):
        all_pmi = [v for f in files for v in pq.read_table(f, columns=["pmi"]).column("pmi").to_pylist()]
        _, cuts = pmi_to_scores(all_pmi, cfg.scorer)
    all_scores: list[Optional[float]] = []
    null_reasons: Counter = Counter()
    selected = 0
    for f in files:
        rows = pq.read_table(f).to_pylist()
        if is_mapped(kind):
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


def self_check(model: str, cfg: CurateConfig, pairs_dir: Path, scored_dir: Path, kind: str,
               run_dir: Path | None = None) -> dict:
    """Score typed negatives of a sample (``self_check_negatives``) and report AUROC of real vs each kind; the
    real sample's scores are reused. The top-level ``auroc`` is the shuffled one."""
    from ..engines import make_engine
    from ..evaluate.negatives import build_negatives

    n = cfg.self_check_sample
    if n <= 0:
        return {"skipped": True}
    rows = [r for f in parquet_files(scored_dir) for r in pq.read_table(f).to_pylist()]
    rng = random.Random(cfg.self_check_seed)
    sample = rng.sample(rows, min(n, len(rows)))
    if len(sample) < 4:
        return {"skipped": True, "reason": f"only {len(sample)} pairs"}
    kinds = list(dict.fromkeys(["shuffled", *cfg.self_check_negatives]))
    if len({r["output"] for r in sample}) < 2:  # a neighbor needs another output to borrow
        kinds = [k for k in kinds if k != "neighbor"]
    negatives = build_negatives(sample, kinds, seed=cfg.self_check_seed)
    scorer = make_scorer(make_engine(model, cfg.engine, run_dir=run_dir), cfg.scorer.model_copy(update={"kind": kind}))
    try:
        # one call for every kind: the engine batches them together and the shared instructions' reverse
        # baselines are computed once
        flat = scorer.score([p for batch in negatives.values() for p in batch])
    finally:
        scorer.engine.close()
    scored, at = {}, 0
    for k, batch in negatives.items():
        scored[k], at = flat[at:at + len(batch)], at + len(batch)
    real = [scorer.continuous(r) for r in sample]
    per_kind = {}
    for k, batch in scored.items():
        fake = [scorer.continuous(s) for s in batch]
        per_kind[k] = {"auroc": auroc(real, fake), "mean": _mean(fake)}
    value = per_kind["shuffled"]["auroc"]
    result = {"n": len(sample), "auroc": value, "threshold": AUROC_WARN, "mean_real": _mean(real),
              "mean_shuffled": per_kind["shuffled"]["mean"], "negatives": per_kind}
    weak = {k: v["auroc"] for k, v in per_kind.items() if v["auroc"] is None or v["auroc"] < AUROC_WARN}
    if weak:
        advice = "a stronger scoring model" if is_mapped(kind) else "--scorer humpback or a stronger model"
        small = f"; only {len(sample)} pairs were checked, so the estimate is rough" if len(sample) < 20 else ""
        told = ", ".join(f"{k} {'n/a' if v is None else round(v, 3)}" for k, v in weak.items())
        result["warning"] = (f"this scorer cannot tell real pairs from bad ones on this data (AUROC {told} "
                             f"< {AUROC_WARN}); its tiers are not trustworthy — try {advice}{small}")
    return result


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _auto_kind(model: str, cfg: CurateConfig) -> str:
    """`auto` needs the model's size: counted from a local copy's headers for served models (no server is
    started for it); a served model without a local copy is taken as large (rubric)."""
    from ..engines import make_engine

    if cfg.engine.kind == "transformers":  # loading it here also fails early on a bad reference
        return resolve_kind(cfg.scorer, make_engine(model, cfg.engine))
    from ..engines.openai_compat import count_parameters
    from ..core.models import ModelResolutionError, resolve

    try:
        n = count_parameters(resolve(cfg.engine.endpoint.tokenizer or model).path)
    except ModelResolutionError:
        n = None
    if n is None:
        log.warning("curate: scorer auto: no local copy of %s to count its parameters; using rubric", model)
        return "rubric"
    return auto_kind(n, cfg.scorer)


def finish_curate(pairs_dir: str, output: str, model: str, config: dict, kind: str, key: str) -> dict:
    """Publish scores and the selected tier, run the self-check, write stats (a job of its own on Slurm)."""
    cfg = CurateConfig.model_validate(config)
    out = Path(output)
    work = out / ".work"
    scored_dir = work / f"scored-{key}"
    engine_stats: dict = {k.split(":", 1)[1]: v for k, v in merge_stats(work / f"stats-{key}").items()
                          if k.startswith("engine:")}
    if cfg.engine.kind == "vllm":
        engine_stats = rollout_stats(work / f"vllm-{key}", "curate", "pairs")
    summary, _ = _finalise(scored_dir, out, cfg, kind)
    check_file = work / (f"selfcheck-{key}-{cfg.self_check_sample}-{cfg.self_check_seed}-"
                         f"{'-'.join(cfg.self_check_negatives)}.json")
    if check_file.is_file():
        check = json.loads(check_file.read_text())
    else:
        check = self_check(model, cfg, Path(pairs_dir), scored_dir, kind, run_dir=work / "engine")
        write_json(check, check_file)
    if check.get("warning"):
        log.warning("SELF-CHECK WARNING: %s", check["warning"])
    stats = {"stage": "curate", "model": model, "scorer": kind, "min_score": cfg.min_score,
             "input": str(pairs_dir), **summary, "self_check": check, "engine": engine_stats,
             "config": cfg.model_dump()}
    write_json(stats, out / "stats.json")
    _plot_histogram(summary["histogram"], f"{kind} scores ({model})", out / "score_hist.png")
    return stats


def run_curate(pairs: str, model: str, output: str, config: CurateConfig | None = None, depends=None) -> dict:
    """Score every pair in ``pairs`` with ``model`` and select the tier with score >= min_score.

    With ``executor.kind: slurm`` the stage is submitted (after ``depends``: a Slurm job id or executor) and
    the returned dict names the last job; its stats.json is written by that job.
    """
    cfg = config or CurateConfig()
    depends = cfg.executor.after(depends)
    out = Path(output)
    work = out / ".work"
    src = Path(pairs)
    queued = depends is not None and not (src.exists() and (src.is_file() or parquet_files(_find_pairs(src))))
    if queued:  # an augment stage queued before this one (Slurm): its pairs do not exist yet
        pairs_dir = src if src.name == "pairs" else src / "pairs"
    else:
        pairs_dir = normalize_input(pairs, work)
    kind = cfg.scorer.kind if cfg.scorer.kind != "auto" else _auto_kind(model, cfg)
    scored_cfg = cfg.model_copy(update={"scorer": cfg.scorer.model_copy(update={"kind": kind})})
    total = None
    if pairs_dir.exists():
        total = count_rows(pairs_dir)
        if cfg.max_pairs >= 0:
            total = min(total, cfg.max_pairs)
    scoring = cfg.scorer.model_copy(update={"kind": kind}).model_dump(exclude={"pmi_mapping", "pmi_cuts"})
    key = stable_id(model, json.dumps(scoring, sort_keys=True), SCORERS.get(kind).revision, str(pairs_dir.resolve()),
                    cfg.max_pairs)
    scored_dir = work / f"scored-{key}"
    log.warning("curate: scoring %s pairs from %s with %s (scorer %s, %s engine, %s executor) -> %s",
                "?" if total is None else total, pairs_dir, model, kind, cfg.engine.kind, cfg.executor.kind, out)
    reader = RowsReader(pairs_dir, id_key="pair_id", text_key="output", limit=cfg.max_pairs)
    writer = ShardWriter(scored_dir, "curated", work / f"stats-{key}", work_dir=work / f"chunks-{key}")
    task = ScoreTask(model, scored_cfg)
    rollout, inference = None, {}
    if cfg.engine.kind == "vllm":
        rollout, inference = _vllm_rollout(task, model, cfg, kind)
    steps = model_steps(("curate-score", "curate-rows"), reader, task, writer, model, cfg.engine,
                        logs=work / f"logs-{key}", chunks=work / f"chunks-{key}", engine_dir=work / "engine",
                        total=total, chunk_size=cfg.chunk_size, tasks=cfg.executor.tasks,
                        vllm_work=work / f"vllm-{key}", rollout=rollout, **inference)
    # the self-check scores a sample with the model, so on Slurm the finishing job gets the model's resources
    done = run_then_finish("curate", steps, cfg.executor, finish_curate,
                           (str(pairs_dir), str(out), model, cfg.model_dump(), kind, key),
                           work / f"finish-logs-{key}", depends=depends, dry_run_dir=work / "slurm-dry-run",
                           finish_uses_model=cfg.self_check_sample > 0)
    if cfg.executor.kind != "slurm":
        return done
    return {"stage": "curate", "model": model, "scorer": kind, "submitted": True, "executor": "slurm",
            "job_id": done, "dry_run": cfg.executor.slurm.dry_run, "output": str(out)}


def _vllm_rollout(task: ScoreTask, model: str, cfg: CurateConfig, kind: str) -> tuple[TaskRollout, dict]:
    """The rollout that scores a pair inside InferenceRunner, and the runner's settings for it: the rubric
    scorers chat, the likelihood scorers send prompts rendered here with the served model's tokenizer."""
    from ..engines.vllm_engine import check_server_installed, rollout_context, tokenizer_ref_for

    use_chat = kind == "rubric-generate"
    tokenizer_ref = tokenizer_ref_for(model, cfg.engine)
    if not use_chat and tokenizer_ref is None:
        raise EngineCapabilityError(f"scorer {kind} over engine kind 'vllm' renders prompts locally: set "
                                    "engine.endpoint.tokenizer to a local copy of the served model's tokenizer")
    support = None
    if cfg.executor.kind != "slurm":
        check_server_installed(cfg.engine)
        if cfg.engine.vllm.server == "endpoint" and not use_chat:
            support = _probe_endpoint(model, cfg, kind)
    threads = cfg.engine.vllm.max_concurrent_documents or cfg.engine.vllm.max_concurrent_generations
    return TaskRollout(task, model, use_chat, tokenizer_ref, support), {
        "use_chat": use_chat, "requests_per_document": 1 if use_chat else 2,
        "shared_context": partial(rollout_context, None if use_chat else tokenizer_ref, min(threads, 256))}


def _probe_endpoint(model: str, cfg: CurateConfig, kind: str) -> dict:
    """An external server must show it returns what the scorer needs before any work starts; what else the
    probe learnt (token-id prompts, trustworthy echo) shapes the requests the rollouts send."""
    from ..engines import make_engine

    engine = make_engine(model, cfg.engine.model_copy(update={"kind": "endpoint"}))
    try:
        make_scorer(engine, cfg.scorer.model_copy(update={"kind": kind}))
        return {"token_prompts": engine.token_prompts, "echo_logprobs": engine.echo_logprobs}
    finally:
        engine.close()


def format_summary(stats: dict) -> str:
    if stats.get("submitted"):
        what = "recorded (dry run)" if stats.get("dry_run") else "submitted"
        return (f"curate {what} to Slurm; the last job ({stats['job_id']}) writes {stats['output']}/stats.json, "
                "scores/ and curated/")
    h = stats["histogram"]
    lines = [f"scored {stats['pairs_scored']} pairs with {stats['scorer']} ({stats['model']})",
             "score  " + "  ".join(f"{k:>5}" for k in h), "pairs  " + "  ".join(f"{v:>5}" for v in h.values()),
             "tiers  " + ", ".join(f"{k}: {v}" for k, v in stats["tiers"].items()),
             f"selected (score >= {stats['min_score']:g}): {stats['selected']}"]
    if stats["null_scores"]:
        lines.append(f"null scores by reason: {stats['null_scores']}")
    chk = stats["self_check"]
    if chk.get("auroc") is not None:
        kinds = chk.get("negatives") or {"shuffled": {"auroc": chk["auroc"]}}
        told = ", ".join(f"{k} {'n/a' if v['auroc'] is None else format(v['auroc'], '.3f')}" for k, v in kinds.items())
        lines.append(f"self-check AUROC of real pairs vs {told} (on {chk['n']} pairs)")
    if chk.get("warning"):
        lines.append(f"WARNING: {chk['warning']}")
    return "\n".join(lines)


__all__ = ["CurateConfig", "run_curate", "format_summary", "load_curate_config", "normalize_input"]
