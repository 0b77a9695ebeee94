"""``humpback prepare``: the datatrove pipeline builder and :func:`run_prepare`.

Stages (each a datatrove executor run with its own logging folder under ``OUTPUT/logs/``, whose completion
markers make every stage resumable task by task):

1. segment          read → extract HTML → segment → language → quality → intermediate shard + exact hashes
2. exact-find       find exact duplicates across all shards (one task)
3. minhash-sign     re-read shards without exact duplicates → MinHash signatures
4. minhash-buckets  LSH buckets (one task per bucket)
5. minhash-cluster  duplicate clusters (one task)
6. write            re-read shards, drop exact and near duplicates → Parquet (SEGMENT_SCHEMA)

Output: ``OUTPUT/segments/*.parquet`` (published only once every stage has finished), ``OUTPUT/stats.json``,
``OUTPUT/quarantine/*.jsonl``. Intermediate data lives in ``OUTPUT/work/``. A rerun of the same command
resumes: finished tasks are skipped and unfinished ones start over, so the result equals an uninterrupted
run's. A rerun with different inputs or config starts over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from datatrove.executor import LocalPipelineExecutor

from ... import __version__
from ...core.config import ConfigError, apply_overrides, validate_config
from ...core.faults import armed, fault_step
from ...core.records import SEGMENT_SCHEMA, write_json
from .config import PrepareConfig, load_prepare_config
from .readers import InputPlan, plan_inputs

log = logging.getLogger("humpback.corpus.pipeline")


# --- executors ----------------------------------------------------------------------------------------------


def _quiet_loguru() -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def _cache_loguru_lib_dirs() -> None:
    """datatrove adds three loguru handlers per task, and loguru recomputes the interpreter's library folders
    (every sysconfig scheme, ~8 ms) on each add: the 14 MinHash bucket tasks alone spent half a second on
    it. The folders depend only on sys.path, so they are cached per sys.path (in every process that imports
    this module, pool workers included)."""
    try:
        from loguru._better_exceptions import ExceptionFormatter

        original = ExceptionFormatter._get_lib_dirs
    except (ImportError, AttributeError):  # a loguru without this internal: nothing to speed up
        return
    if getattr(original, "_humpback_cached", False):
        return
    cache: dict[tuple[str, ...], list[str]] = {}

    def cached() -> list[str]:
        key = tuple(sys.path)
        if key not in cache:
            cache[key] = original()
        return list(cache[key])

    cached._humpback_cached = True  # type: ignore[attr-defined]
    ExceptionFormatter._get_lib_dirs = staticmethod(cached)


_cache_loguru_lib_dirs()


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove prints every task's log to the console for local rank 0; here the logs go to the task log
    files only, so the progress bars and the summary stay readable."""

    def __init__(self, *args, quiet: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.quiet = quiet

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        from ...core.shards import task_logs_to_files_only

        if not self.quiet:
            return super()._run_for_rank(rank, local_rank=local_rank, node_rank=node_rank)
        try:
            # errors too: a failing task's exception reaches the command, which reports it in one line
            with task_logs_to_files_only():
                return super()._run_for_rank(rank, local_rank=1, node_rank=node_rank)
        finally:
            _quiet_loguru()


def check_executor(cfg: PrepareConfig) -> None:
    if cfg.executor == "slurm" and not cfg.slurm.partition:
        raise ConfigError("executor: 'slurm' needs slurm.partition (the Slurm partition to submit to)")
    if cfg.executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError("executor: 'ray' needs the ray package: pip install -e '.[ray]'")


def executor_config(cfg: PrepareConfig, tasks: int, workers: int | None):
    from ...core.shards import ExecutorConfig

    return ExecutorConfig(kind=cfg.executor, tasks=tasks, workers=workers, slurm=cfg.slurm, ray=cfg.ray)


def make_executor(
    cfg: PrepareConfig, pipeline: list, *, tasks: int, workers: int, logging_dir: str, quiet: bool,
    name: str = "prepare", depends: Any = None, skip_completed: bool = True,
):
    """The one place where the config's executor kind becomes a datatrove executor."""
    check_executor(cfg)
    if cfg.executor == "local":
        return QuietLocalExecutor(
            pipeline, tasks=tasks, workers=max(1, min(workers, tasks)), logging_dir=logging_dir, quiet=quiet,
            skip_completed=skip_completed,
        )
    from ...core.shards import Step, build_executor

    # a worker limit only when one was asked for: a cluster runs every task at once by default
    step = Step(name, pipeline, Path(logging_dir), tasks=tasks, workers=cfg.workers and min(workers, tasks),
                skip_completed=skip_completed)
    return build_executor(step, executor_config(cfg, tasks, None), depends=depends)


# --- stages -------------------------------------------------------------------------------------------------


@dataclass
class PrepareStep:
    """One executor run of prepare: a ``shards.Step`` whose pipeline is built when it runs, with a bar title."""

    key: str
    title: str
    build: Callable[[], list]
    tasks: int
    workers: int


@dataclass
class PrepareLayout:
    """Where a prepare run keeps what: segments/ (the output), quarantine/, stats.json, logs/, work/."""

    root: Path

    def __post_init__(self) -> None:
        self.segments, self.quarantine, self.logs, self.work = (self.root / d for d in
                                                                 ("segments", "quarantine", "logs", "work"))
        self.stats = self.root / "stats.json"

    def stage_logs(self, key: str) -> Path:
        return self.logs / key


def _segment_row(self, doc) -> dict[str, Any]:
    m = doc.metadata
    return {
        "segment_id": doc.id,
        "text": doc.text,
        "heading": m.get("heading"),
        "doc_id": m.get("doc_id"),
        "url": m.get("url"),
        "source": m.get("source"),
        "char_start": m.get("char_start"),
        "char_end": m.get("char_end"),
        "lang": m.get("lang"),
        "lang_score": m.get("lang_score"),
    }


def build_stages(
    cfg: PrepareConfig, plan: InputPlan, layout: PrepareLayout, tasks: int, workers: int
) -> list[PrepareStep]:
    from datatrove.pipeline.dedup import (
        ExactDedupSignature,
        MinhashDedupBuckets,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.writers import JsonlWriter, ParquetWriter

    from .dedup import (
        QuietExactDedupFilter,
        QuietExactFindDedups,
        QuietMinhashDedupCluster,
        ShardReader,
        exact_config,
        minhash_config,
    )
    from .extract import HtmlToMarkdown
    from .filters import WORD_TOKENIZER, SegmentLanguageFilter, build_quality_filters
    from .readers import CorpusReader
    from .segment import Segmenter

    w = layout.work
    shards, exact_sigs, exact_dups = str(w / "segments"), str(w / "exact" / "sigs"), str(w / "exact" / "dups")
    mh_sigs, mh_buckets, mh_remove = (str(w / "minhash" / p) for p in ("sigs", "buckets", "remove"))
    final = str(w / "final")
    quarantine = str(layout.quarantine)
    ex_cfg, mh_cfg = exact_config(), minhash_config(cfg.dedup)
    build_quality_filters(cfg.quality)  # unknown filter options fail here, before any work

    def segment():
        steps = [
            CorpusReader(plan.units, cfg.read, quarantine, progress_dir=str(w / "progress")),
            HtmlToMarkdown(cfg.extract, quarantine, cfg.read.quarantine_max_chars),
            Segmenter(cfg.segment),
            SegmentLanguageFilter(cfg.language),
            *build_quality_filters(cfg.quality),
            JsonlWriter(shards, output_filename="${rank}.jsonl", compression=None),
        ]
        if cfg.dedup.exact:
            steps.append(ExactDedupSignature(exact_sigs, config=ex_cfg))
        if armed("prepare.shard_written"):
            steps.append(fault_step("prepare.shard_written"))
        return steps

    def deduped_shard():
        steps = [ShardReader(shards)]
        if cfg.dedup.exact:
            steps.append(QuietExactDedupFilter(exact_dups, config=ex_cfg))
        return steps

    stages = [PrepareStep("1-segment", "read, extract, segment, filter", segment, tasks, workers)]
    if cfg.dedup.exact:
        stages.append(
            PrepareStep(
                "2-exact-find",
                "exact duplicates",
                lambda: [QuietExactFindDedups(exact_sigs, exact_dups, config=ex_cfg)],
                1,
                1,
            )
        )
    if cfg.dedup.minhash:
        stages += [
            PrepareStep(
                "3-minhash-sign",
                "MinHash signatures",
                lambda: (
                    deduped_shard() + [MinhashDedupSignature(mh_sigs, config=mh_cfg, language=WORD_TOKENIZER)]
                ),
                tasks,
                workers,
            ),
            PrepareStep(
                "4-minhash-buckets",
                "MinHash buckets",
                lambda: [MinhashDedupBuckets(mh_sigs, mh_buckets, config=mh_cfg)],
                mh_cfg.num_buckets,
                1,
            ),
            PrepareStep(
                "5-minhash-cluster",
                "MinHash clusters",
                lambda: [QuietMinhashDedupCluster(mh_buckets, mh_remove, config=mh_cfg)],
                1,
                1,
            ),
        ]

    def write():
        steps = deduped_shard()
        if cfg.dedup.minhash:
            steps.append(MinhashDedupFilter(mh_remove))
        # max_file_size=-1: one shard per task named 00000.parquet (rotation would prefix 000_ to every name).
        # No content-defined chunking: it only helps Hub uploads and costs ~0.3 s of set-up per process.
        steps.append(
            ParquetWriter(
                final,
                output_filename="${rank}.parquet",
                adapter=_segment_row,
                schema=SEGMENT_SCHEMA,
                max_file_size=-1,
                use_content_defined_chunking=False,
            )
        )
        return steps

    stages.append(PrepareStep("6-write", "write Parquet", write, tasks, workers))
    return stages


# --- progress -----------------------------------------------------------------------------------------------


class _StageProgress:
    """A progress bar per stage, fed by polling completion markers (and the reader's document counts), so it
    works whether tasks run in this process, in a pool, or elsewhere."""

    def __init__(
        self, stage: PrepareStep, index: int, total: int, logs: Path, progress_dir: Optional[Path], enabled: bool
    ):
        self.stage, self.logs, self.progress_dir, self.enabled = stage, logs, progress_dir, enabled
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.label = f"[{index}/{total}] {stage.title}"

    def _done(self) -> int:
        d = self.logs / "completions"
        return len(list(d.iterdir())) if d.is_dir() else 0

    def _docs(self) -> Optional[int]:
        if self.progress_dir is None or not self.progress_dir.is_dir():
            return None
        n = 0
        for p in self.progress_dir.iterdir():
            if not p.name.startswith("."):
                try:
                    n += int(p.read_text() or 0)
                except (ValueError, OSError):
                    pass
        return n

    def _loop(self, bar) -> None:
        while not self._stop.wait(0.5):
            self._refresh(bar)

    def _refresh(self, bar) -> None:
        bar.n = self._done()
        docs = self._docs()
        if docs is not None:
            bar.set_postfix_str(f"{docs} records read", refresh=False)
        bar.refresh()

    def __enter__(self):
        if self.enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.stage.tasks, desc=self.label, unit="task", file=sys.stderr, leave=True
            )
            self._thread = threading.Thread(target=self._loop, args=(self._bar,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._refresh(self._bar)
            self._bar.close()


# --- stats --------------------------------------------------------------------------------------------------


def _step_totals(logs: Path) -> dict[str, Counter]:
    """Sum datatrove's per-task stats files of one stage: {step name: {metric: total}}."""
    totals: dict[str, Counter] = defaultdict(Counter)
    stats_dir = logs / "stats"
    if not stats_dir.is_dir():
        return totals
    for f in sorted(stats_dir.glob("*.json")):
        for step in json.loads(f.read_text()):
            name = step["name"].split(": ", 1)[-1]
            for key, value in step.get("stats", {}).items():
                totals[name][key] += value.get("total", 0) if isinstance(value, dict) else value
    return totals


def _prefixed(counter: Counter, prefix: str, rename: Callable[[str], str] = lambda s: s) -> dict[str, int]:
    return {
        rename(k[len(prefix) :]): int(v) for k, v in sorted(counter.items()) if k.startswith(prefix) and v
    }


def collect_stats(cfg: PrepareConfig, plan: InputPlan, layout: PrepareLayout) -> dict[str, Any]:
    from datatrove.pipeline.dedup import ExactDedupFilter, MinhashDedupFilter
    from datatrove.pipeline.filters import FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.writers import ParquetWriter

    from .extract import HtmlToMarkdown
    from .filters import SegmentLanguageFilter
    from .readers import CorpusReader
    from .segment import Segmenter

    s1 = _step_totals(layout.stage_logs("1-segment"))
    s6 = _step_totals(layout.stage_logs("6-write"))
    reader, extract, seg = s1[CorpusReader.name], s1[HtmlToMarkdown.name], s1[Segmenter.name]
    quarantined = Counter(_prefixed(reader, "quarantined_")) + Counter(_prefixed(extract, "quarantined_"))
    dropped: Counter = Counter(_prefixed(seg, "dropped_"))
    dropped.update(_prefixed(s1[SegmentLanguageFilter.name], "dropped_"))
    dropped.update(_prefixed(s1[GopherRepetitionFilter.name], "dropped_", lambda r: f"gopher_repetition_{r}"))
    dropped.update(_prefixed(s1[GopherQualityFilter.name], "dropped_"))
    dropped.update(_prefixed(s1[FineWebQualityFilter.name], "dropped_", lambda r: f"fineweb_{r}"))
    # a datatrove filter may drop without a reason; keep the books balanced under a generic name
    for fcls, label in (
        (GopherQualityFilter, "gopher"),
        (FineWebQualityFilter, "fineweb"),
        (GopherRepetitionFilter, "gopher_repetition"),
    ):
        st = s1[fcls.name]
        unnamed = st["dropped"] - sum(v for k, v in st.items() if k.startswith("dropped_"))
        if unnamed > 0:
            dropped[f"{label}_other"] += int(unnamed)
    if cfg.dedup.exact:
        dropped["exact_duplicate"] += int(s6[ExactDedupFilter.name]["dropped"])
    if cfg.dedup.minhash:
        dropped["near_duplicate"] += int(s6[MinhashDedupFilter.name]["dropped"])
    shards = sorted(p.name for p in layout.segments.glob("*.parquet")) if layout.segments.is_dir() else []
    out = int(s6[ParquetWriter.name]["total"])
    return {
        "inputs": plan.inputs,
        "files": len(plan.units),
        "ignored_files": len(plan.ignored_files),
        "ignored_file_examples": plan.ignored_files[:20],
        "documents": {
            "in": int(reader["records_in"]),
            "segmented": int(seg["documents"]),
            "quarantined": dict(sorted(quarantined.items())),
            "quarantined_total": int(sum(quarantined.values())),
            "skipped": _prefixed(reader, "skipped_"),
            "html_pages": int(extract["html_pages"]),
            "without_segments": int(seg["documents_without_segments"]),
        },
        "segments": {
            "candidates": int(seg["candidates"]),
            "dropped": {k: int(v) for k, v in sorted(dropped.items()) if v},
            "dropped_total": int(sum(dropped.values())),
            "out": out,
        },
        "output": {"segments": str(layout.segments), "shards": shards, "quarantine": str(layout.quarantine)},
    }


def _fmt_reasons(d: dict[str, int], limit: int = 8) -> str:
    items = sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} {v}" for k, v in items[:limit])
    if len(items) > limit:
        text += f", … ({len(items) - limit} more)"
    return text


def first_quarantined(output: str | os.PathLike) -> str:
    """'SOURCE:LINE: reason: detail' of the first record in OUTPUT/quarantine (for one-line reports)."""
    for f in sorted((Path(output) / "quarantine").glob("*.jsonl")):
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                pos = rec.get("position")
                where = f"{rec.get('source')}:{pos}" if isinstance(pos, int) else str(rec.get("source"))
                detail = f": {rec['detail']}" if rec.get("detail") else ""
                return f"{where}: {rec.get('reason')}{detail}"
    return f"{output}: quarantined records (none listed in {Path(output) / 'quarantine'})"


def format_summary(stats: dict[str, Any]) -> str:
    if stats.get("submitted"):
        what = "recorded (dry run)" if stats.get("dry_run") else "submitted"
        return (f"{len(stats['jobs'])} Slurm job arrays {what}; the last ({stats['job_id']}) publishes "
                f"{stats['output']['segments']} and writes stats.json")
    docs, segs = stats["documents"], stats["segments"]
    dr = segs["dropped"]
    dedup = {k: v for k, v in dr.items() if k in ("exact_duplicate", "near_duplicate")}
    filt = {k: v for k, v in dr.items() if k not in dedup}
    after_filters = segs["candidates"] - sum(filt.values())
    rows = [
        ("read", docs["in"], docs["segmented"], docs["quarantined_total"], _fmt_reasons(docs["quarantined"])),
        (
            "segment",
            docs["segmented"],
            segs["candidates"],
            docs["without_segments"],
            "documents without a segment" if docs["without_segments"] else "",
        ),
        ("filter", segs["candidates"], after_filters, sum(filt.values()), _fmt_reasons(filt)),
        ("dedup", after_filters, segs["out"], sum(dedup.values()), _fmt_reasons(dedup)),
    ]
    lines = [f"{'stage':<8} {'in':>9} {'out':>9} {'dropped':>9}  reasons"]
    for name, a, b, c, why in rows:
        lines.append(f"{name:<8} {a:>9} {b:>9} {c:>9}  {why}")
    out = stats["output"]
    lines.append(
        f"{segs['out']} segments in {len(out['shards'])} shard(s) → {out['segments']}  "
        f"({stats.get('elapsed_s', 0):.1f} s)"
    )
    if docs["quarantined_total"]:
        lines.append(f"quarantined records → {out['quarantine']}")
    if stats.get("ignored_files"):
        lines.append(
            f"{stats['ignored_files']} file(s) in input folders had no known format and were not read"
        )
    return "\n".join(lines)


# --- run ----------------------------------------------------------------------------------------------------


@dataclass
class PrepareResult:
    output_dir: Path
    segments_dir: Path
    stats: dict[str, Any]
    stages_run: list[str] = field(default_factory=list)

    @property
    def num_segments(self) -> int:
        return self.stats.get("segments", {}).get("out", 0)  # 0 while a Slurm submission is still queued

    def summary(self) -> str:
        return format_summary(self.stats)


def _fingerprint(cfg: PrepareConfig, plan: InputPlan, tasks: int) -> dict[str, Any]:
    return {
        "humpback": __version__,
        "config": cfg.output_fingerprint_data(),
        "tasks": tasks,
        "units": [[u.url, u.fmt, u.size, u.mtime] for u in plan.units],
    }


def _start_or_resume(layout: PrepareLayout, fingerprint: dict[str, Any]) -> bool:
    """True when resuming a run of the same command; otherwise clear what an earlier, different run left."""
    fp_path = layout.work / "fingerprint.json"
    previous = None
    if fp_path.is_file():
        try:
            previous = json.loads(fp_path.read_text())
        except (OSError, ValueError):
            previous = None
    same = previous == json.loads(json.dumps(fingerprint, default=str))
    if not same:
        if previous is not None or layout.logs.exists() or layout.work.exists():
            log.warning("%s: inputs or config differ from the run found there; starting over", layout.root)
        for p in (layout.logs, layout.work, layout.quarantine, layout.segments):
            if p.exists():
                shutil.rmtree(p)
        layout.stats.unlink(missing_ok=True)
        write_json(fingerprint, fp_path)
    return same


SMALL_SHARDS_BYTES = 32 * 2**20


def _shard_bytes(layout: PrepareLayout) -> int:
    folder = layout.work / "segments"
    return sum(p.stat().st_size for p in folder.glob("*.jsonl")) if folder.is_dir() else 0


def _publish(layout: PrepareLayout) -> None:
    """Swap the finished shards into OUTPUT/segments in one rename; a crash before leaves no segments/."""
    final = layout.work / "final"
    if final.is_dir():
        if layout.segments.exists():
            shutil.rmtree(layout.segments)
        final.rename(layout.segments)
    elif not layout.segments.exists():
        layout.segments.mkdir(parents=True)  # no segment survived: an empty, published result


def finish_prepare(
    config: dict[str, Any], plan: InputPlan, root: str, tasks: int, workers: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """Publish the segments and write stats.json once every stage has finished (a job of its own on Slurm)."""
    cfg = validate_config(PrepareConfig, config, source="<config>")
    layout = PrepareLayout(Path(root))
    _publish(layout)
    stats = collect_stats(cfg, plan, layout)
    stats.update({"tasks": tasks, "workers": workers, **extra, "config": cfg.model_dump()})
    write_json(stats, layout.stats)
    return stats


def _submit_slurm(
    cfg: PrepareConfig, plan: InputPlan, layout: PrepareLayout, stages: list[PrepareStep], tasks: int,
    workers: int,
    resumed: bool, depends: Any,
) -> dict[str, Any]:
    from ...core.shards import CallbackStep, sbatch_recorder

    recorder = sbatch_recorder(layout.work / "slurm-dry-run") if cfg.slurm.dry_run else contextlib.nullcontext()
    previous = depends
    jobs: dict[str, Any] = {}
    with recorder:
        for stage in stages + [
            PrepareStep("7-finish", "publish and stats", lambda: [CallbackStep(
                finish_prepare, cfg.model_dump(), plan, str(layout.root), tasks, workers,
                {"resumed": resumed, "executor": "slurm"})], 1, 1)
        ]:
            executor = make_executor(
                cfg, stage.build(), tasks=stage.tasks, workers=stage.workers,
                logging_dir=str(layout.stage_logs(stage.key)), quiet=True, name=f"prepare-{stage.key}",
                depends=previous, skip_completed=stage.key != "7-finish",
            )
            executor.run()
            jobs[stage.key] = executor.job_id
            if executor.job_id not in (None, -1):
                previous = executor
    job_id = str(previous.job_id) if hasattr(previous, "job_id") else (str(previous) if previous else None)
    log.warning("prepare: submitted %d Slurm job arrays; the last (%s) publishes %s", len(jobs), job_id,
                layout.segments)
    return {"submitted": True, "executor": "slurm", "job_id": job_id, "jobs": jobs,
            "dry_run": cfg.slurm.dry_run, "output": {"segments": str(layout.segments)}}


def run_prepare(
    inputs: list[str] | tuple[str, ...] | str,
    output: str | os.PathLike,
    config: PrepareConfig | str | os.PathLike | None = None,
    overrides: Optional[dict[str, Any]] = None,
    depends: Any = None,
) -> PrepareResult:
    """Turn raw corpus files into segments under ``output`` (see the module docstring for the layout).

    ``config`` is a PrepareConfig, a YAML path, or None for defaults; ``overrides`` are dotted keys
    (``{"read.text_key": "content", "tasks": 4}``) applied on top, None values ignored. Everything that can be
    checked (inputs exist and have a known format, config, executor, language model file) is checked before
    any work starts. With ``executor: slurm`` every stage is submitted as a job array depending on the one
    before (the first on ``depends``, a Slurm job id or executor), a last job publishes the segments and
    writes the stats, and the result's stats name that job (``stats["job_id"]``) instead of counting.
    """
    from filelock import FileLock, Timeout

    from .filters import packaged_lid176_path

    if isinstance(config, PrepareConfig):
        cfg = validate_config(PrepareConfig, apply_overrides(config.model_dump(), overrides), source="<config>")
    else:
        cfg = load_prepare_config(config, overrides)
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    inputs = [os.fspath(i) for i in inputs]
    out_str = os.fspath(output)
    if "://" in out_str and not out_str.startswith("file://"):
        raise ConfigError(f"--output {out_str}: the output folder must be a local path")
    layout = PrepareLayout(Path(out_str.removeprefix("file://")).resolve())

    check_executor(cfg)
    plan = plan_inputs(inputs, cfg.read, exclude=str(layout.root))
    packaged_lid176_path()
    cpus = os.cpu_count() or 1
    tasks = cfg.tasks or max(1, min(len(plan.units), 2 * cpus))
    workers = max(1, min(cfg.workers or cpus, tasks))
    stages = build_stages(cfg, plan, layout, tasks, workers)

    layout.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(layout.root / ".prepare.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"{layout.root}: another humpback prepare is writing there") from None
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    t0 = time.monotonic()
    ran: list[str] = []
    stage_seconds: dict[str, float] = {}
    try:
        resumed = _start_or_resume(layout, _fingerprint(cfg, plan, tasks))
        if not verbose:
            _quiet_loguru()
        if cfg.executor == "slurm":
            stats = _submit_slurm(cfg, plan, layout, stages, tasks, workers, resumed, depends)
            return PrepareResult(output_dir=layout.root, segments_dir=layout.segments, stats=stats,
                                 stages_run=[s.key for s in stages])
        if cfg.executor == "ray":
            from ...core.shards import ensure_ray

            ensure_ray(cfg.ray)
        for i, stage in enumerate(stages, 1):
            logs = layout.stage_logs(stage.key)
            stage_workers = stage.workers
            if stage.key in ("3-minhash-sign", "6-write") and _shard_bytes(layout) < SMALL_SHARDS_BYTES:
                # re-reading a few MB of segments takes less than starting a pool of worker processes
                stage_workers = 1
            executor = make_executor(
                cfg,
                stage.build(),
                tasks=stage.tasks,
                workers=stage_workers,
                logging_dir=str(logs),
                quiet=not verbose,
                name=f"prepare-{stage.key}",
            )
            if not executor.get_incomplete_ranks():
                continue
            ran.append(stage.key)
            progress_dir = layout.work / "progress" if stage.key == "1-segment" else None
            t_stage = time.monotonic()
            with _StageProgress(stage, i, len(stages), logs, progress_dir, cfg.progress):
                executor.run()
            stage_seconds[stage.key] = round(time.monotonic() - t_stage, 3)
            missing = executor.get_incomplete_ranks()
            if missing:
                raise RuntimeError(f"stage {stage.key}: tasks {missing} did not finish; see {logs / 'logs'}")
        stats = finish_prepare(cfg.model_dump(), plan, str(layout.root), tasks, workers, {
            "resumed": resumed, "stages_run": ran, "stage_seconds": stage_seconds,
            "elapsed_s": round(time.monotonic() - t0, 3)})
    finally:
        if not verbose:
            from datatrove.utils.logging import setup_default_logger

            setup_default_logger()
        lock.release()
    return PrepareResult(output_dir=layout.root, segments_dir=layout.segments, stats=stats, stages_run=ran)
