"""Shared machinery for the sharded model stages (augment, curate) on datatrove.

Resume works at two levels. datatrove's completion markers skip whole finished tasks; inside a task,
model outputs are checkpointed per chunk (humpback.core.model_step, keyed by the ids in the chunk), so a kill loses at
most one chunk of model work and a rerun replays the finished chunks from disk instead of regenerating them. A
task's output shard is written to a temporary file and renamed when the task ends, so readers never
see a partial shard and a rerun never duplicates rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from pydantic import Field, model_validator

from .config import StrictModel
from .faults import fault_point
from .records import SCHEMAS, atomic_path, read_table, to_table, write_json

log = logging.getLogger("humpback.shards")


class SlurmConfig(StrictModel):
    """sbatch settings (datatrove's SlurmPipelineExecutor). Each step of a stage is one job array; a step
    waits for the one before it (and a stage for the stage before it) through Slurm job dependencies."""

    partition: str | None = None  # required with kind: slurm
    time: str = "24:00:00"
    cpus_per_task: int = Field(1, ge=1)
    mem_per_cpu_gb: int = Field(2, ge=1)
    gpus_per_task: int = Field(0, ge=0)  # given to the steps that run a model; the other steps get none
    qos: str | None = None
    job_name: str = "humpback"  # prefix: jobs are named <job_name>-<stage>-<step>
    env_command: str | None = None  # shell line that activates the environment on the nodes
    venv_path: str | None = None  # default: this interpreter's venv (bin/activate), when there is one
    sbatch_args: dict[str, Any] = Field(default_factory=dict)  # more #SBATCH directives, e.g. {account: x}
    max_array_size: int = Field(1001, ge=1)
    tasks_per_job: int = Field(1, ge=1)
    logs_folder: str | None = None  # raw Slurm logs; default: <stage logging dir>/slurm_logs
    mail_user: str | None = None
    depends_job_id: str | None = None  # first job waits for this one (a stage submitted elsewhere)
    # render and record every sbatch submission (scripts, --dependency) under the logging dirs, queue nothing
    dry_run: bool = False


class RayConfig(StrictModel):
    """Ray settings (datatrove's RayPipelineExecutor)."""

    address: str | None = None  # None: RAY_ADDRESS if set, else a local instance started here; or "auto"
    cpus_per_task: int = Field(1, ge=1)
    gpus_per_task: float = Field(0, ge=0)  # given to the steps that run a model
    mem_per_cpu_gb: float = Field(2, gt=0)
    num_cpus: int | None = Field(None, ge=1)  # size of a local instance started here
    num_gpus: int | None = Field(None, ge=0)
    tasks_per_job: int = Field(1, ge=1)
    time_s: int | None = Field(None, ge=1)  # a task running longer is killed and retried


class ExecutorConfig(StrictModel):
    """Where the tasks of a sharded stage run (datatrove executors)."""

    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = Field(1, ge=1)
    # tasks running at once; local default 1 (each loads its own model), slurm/ray default: no limit
    workers: int | None = Field(None, ge=1)
    slurm: SlurmConfig = SlurmConfig()
    ray: RayConfig = RayConfig()

    def after(self, depends: Any = None) -> Any:
        """What a stage's first job waits for: ``depends`` (a job id or executor), else the Slurm config's
        ``depends_job_id``."""
        return depends if depends is not None or self.kind != "slurm" else self.slurm.depends_job_id

    @model_validator(mode="after")
    def _needs_partition(self):
        if self.kind == "slurm" and not self.slurm.partition:
            raise ValueError("executor kind 'slurm' needs slurm.partition")
        return self


@dataclass
class Step:
    """One datatrove executor run of a stage (a Slurm job array, a Ray job, a local pool)."""

    name: str  # <stage>-<step>, also the Slurm job name suffix
    pipeline: list
    logging_dir: Path
    tasks: int = 1
    workers: int | None = None  # None: the executor config's
    uses_model: bool = False  # gets the GPUs of slurm/ray configs
    skip_completed: bool = True  # False for steps that must run again on every submission (finalisation)


def _venv_activate() -> str | None:
    activate = Path(sys.prefix) / "bin" / "activate"
    return str(activate) if sys.prefix != sys.base_prefix and activate.is_file() else None


@contextmanager
def task_logs_to_files_only() -> Iterator[None]:
    """Within the block, datatrove tasks log to their log files only, not to the console.

    datatrove logs a failing task's traceback on the console before it re-raises the exception; the exception
    then reaches the command, which reports it in one line (or with its own traceback when it is unexpected),
    and the task's log file keeps the full story."""
    import datatrove.executor.base as base
    from loguru import logger

    original = base.add_task_logger

    def add_task_logger(logging_dir, rank, local_rank=0, node_rank=-1):
        logfile = original(logging_dir, rank, local_rank, node_rank=node_rank)
        prefix = f"[NODE {node_rank}] " if node_rank != -1 else ""
        logger.remove()  # the console handler and the file handler datatrove added; the file one comes back
        logger.add(logfile, colorize=False, level="DEBUG",
                   format=prefix + "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - "
                                   "{message}")
        return logfile

    base.add_task_logger = add_task_logger
    try:
        yield
    finally:
        base.add_task_logger = original


class LocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor whose tasks log to their files only (the console with `humpback -vv`)."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
            return super()._run_for_rank(rank, local_rank, node_rank)
        with task_logs_to_files_only():
            return super()._run_for_rank(rank, local_rank, node_rank)


def build_executor(step: Step, config: ExecutorConfig, depends: Any = None):
    """The datatrove executor for one step. ``depends`` (slurm only) is a SlurmPipelineExecutor or job id."""
    if config.kind == "local":
        workers = min(step.workers or config.workers or 1, step.tasks)
        return LocalExecutor(pipeline=step.pipeline, tasks=step.tasks, workers=workers,
                             logging_dir=str(step.logging_dir), skip_completed=step.skip_completed)
    if config.kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        rc = config.ray
        return RayPipelineExecutor(
            pipeline=step.pipeline, tasks=step.tasks, workers=step.workers or config.workers or -1,
            logging_dir=str(step.logging_dir), skip_completed=step.skip_completed, cpus_per_task=rc.cpus_per_task,
            mem_per_cpu_gb=rc.mem_per_cpu_gb, gpus_per_task=rc.gpus_per_task if step.uses_model else 0,
            tasks_per_job=rc.tasks_per_job, time=rc.time_s)
    from datatrove.executor import SlurmPipelineExecutor

    sc = config.slurm
    depends_executor = depends if isinstance(depends, SlurmPipelineExecutor) else None
    depends_id = None if depends_executor is not None else (str(depends) if depends else sc.depends_job_id)
    return SlurmPipelineExecutor(
        pipeline=step.pipeline, tasks=step.tasks, time=sc.time, partition=sc.partition,
        cpus_per_task=sc.cpus_per_task, mem_per_cpu_gb=sc.mem_per_cpu_gb,
        gpus_per_task=sc.gpus_per_task if step.uses_model else 0,
        workers=-1 if step.tasks == 1 else (step.workers or config.workers or -1),
        job_name=f"{sc.job_name}-{step.name}", qos=sc.qos or "", env_command=sc.env_command,
        venv_path=sc.venv_path or (None if sc.env_command else _venv_activate()), sbatch_args=dict(sc.sbatch_args),
        max_array_size=sc.max_array_size, depends=depends_executor, depends_job_id=depends_id,
        logging_dir=str(step.logging_dir), skip_completed=step.skip_completed,
        slurm_logs_folder=sc.logs_folder and str(Path(sc.logs_folder) / step.name), mail_user=sc.mail_user,
        tasks_per_job=sc.tasks_per_job)


_SBATCH_RECORDER = r"""#!/bin/sh
# humpback dry run: records an sbatch submission instead of queueing it
dir="{folder}"
n=$(ls "$dir" | grep -c '\.sbatch$')
n=$((n + 1))
name=$(printf '%03d' "$n")
for script; do :; done
cp "$script" "$dir/$name.sbatch"
for arg; do [ "$arg" != "$script" ] && echo "$arg"; done > "$dir/$name.args"
echo "Submitted batch job dryrun-$n"
"""


@contextmanager
def sbatch_recorder(folder: str | os.PathLike) -> Iterator[Path]:
    """Within the block, ``sbatch`` is a recorder: datatrove's real launch code runs (executor pickling
    included) and each submission's script and arguments land in ``folder`` as NNN.sbatch / NNN.args."""
    folder = Path(folder).resolve()
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    shim = folder / "bin" / "sbatch"
    shim.write_text(_SBATCH_RECORDER.format(folder=folder))
    shim.chmod(0o755)
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{shim.parent}{os.pathsep}{old}"
    try:
        yield folder
    finally:
        os.environ["PATH"] = old


def ensure_ray(rc: RayConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if rc.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=rc.address, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus, include_dashboard=False, ignore_reinit_error=True,
                 log_to_driver=False)


# The task of a Slurm job array (`humpback run` on Slurm) this process runs; None: every task
_ARRAY_TASK: ContextVar[Optional[int]] = ContextVar("humpback_array_task", default=None)


class ArrayTaskDone(Exception):
    """Raised by run_steps inside ``array_task``: this task's share of the stage is done; the stage's own job
    (after the whole array) runs the rest: the other steps and the stage's finishing work."""


@contextmanager
def array_task(rank: int) -> Iterator[None]:
    """Within the block, run_steps runs task ``rank`` of the first step of a stage (the sharded model step, which
    reads only the stage's inputs) and raises ArrayTaskDone instead of going on. The later steps may read every
    task's output (rollouts, MinHash buckets), so they wait for the stage's job, which finds this task done."""
    token = _ARRAY_TASK.set(rank)
    try:
        yield
    finally:
        _ARRAY_TASK.reset(token)


def _run_array_task(step: Step, rank: int) -> None:
    if rank < step.tasks:
        executor = LocalExecutor(pipeline=step.pipeline, tasks=step.tasks, workers=1, local_tasks=1,
                                 local_rank_offset=rank, logging_dir=str(step.logging_dir))
        executor.run()
        if not executor.is_rank_completed(rank):
            raise RuntimeError(f"{step.name}: task {rank} did not finish; see {step.logging_dir / 'logs'}")
    raise ArrayTaskDone(f"{step.name}: task {rank} of {step.tasks} done")


def run_steps(steps: list[Step], config: ExecutorConfig, depends: Any = None,
              dry_run_dir: str | os.PathLike | None = None) -> str | None:
    """Run a stage's steps in order. Local and Ray block until each step's tasks are done and raise if any
    task did not finish. Slurm submits one job array per step, each depending on the one before (the first
    on ``depends``: an executor or a job id), and returns the last job's id at once. Inside ``array_task``
    (a local executor only) it runs that one task of the first step and raises ArrayTaskDone."""
    rank = _ARRAY_TASK.get()
    if rank is not None:
        if config.kind != "local":
            raise RuntimeError(f"{steps[0].name}: a Slurm array task runs its share with the local executor, "
                               f"not {config.kind}")
        _run_array_task(steps[0], rank)
    if config.kind == "slurm":
        recorder = sbatch_recorder(dry_run_dir or steps[-1].logging_dir / "dry_run") if config.slurm.dry_run \
            else nullcontext()
        previous = depends
        with recorder:
            for step in steps:
                executor = build_executor(step, config, depends=previous)
                executor.run()
                log.warning("%s: submitted Slurm job %s (%d tasks)", step.name, executor.job_id, step.tasks)
                previous = executor if executor.job_id not in (None, -1) else previous
        return str(previous.job_id) if previous is not None and hasattr(previous, "job_id") else (
            str(previous) if previous else None)
    if config.kind == "ray":
        ensure_ray(config.ray)
    for step in steps:
        executor = build_executor(step, config)
        executor.run()
        missing = executor.get_incomplete_ranks(skip_completed=True)
        if missing:
            raise RuntimeError(f"{step.name}: tasks {missing} did not finish; see {step.logging_dir / 'logs'}")
    return None


def run_pipeline(pipeline: list, config: ExecutorConfig, logging_dir: str | os.PathLike,
                 depends: Any = None, name: str = "stage", uses_model: bool = True) -> str | None:
    """One pipeline as a one-step stage (see run_steps)."""
    return run_steps([Step(name, pipeline, Path(logging_dir), tasks=config.tasks, uses_model=uses_model)],
                     config, depends=depends)


class CallbackStep(PipelineStep):
    """Runs ``function(*args)`` once, in task 0: a stage's finishing work as a job of its own, so that on Slurm
    it runs after the model steps without anyone waiting for them."""

    name = "finish stage"
    type = "🏁 - FINISH"

    def __init__(self, function, *args) -> None:
        super().__init__()
        self.function, self.args = function, args

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if rank == 0:
            self.function(*self.args)
        return
        yield


def run_then_finish(stage: str, steps: list[Step], config: ExecutorConfig, finish, args: tuple, finish_logs: Path, *,
                    depends: Any = None, dry_run_dir: str | os.PathLike | None = None,
                    finish_uses_model: bool = False) -> dict | str | None:
    """A stage's steps, then ``finish(*args)`` (its stats and self-checks): here, returning what finish returns;
    on Slurm, submitted with the finish as one more job after the steps (``finish_uses_model``: that job gets
    the model's resources), returning that job's id at once (the job writes finish's result itself)."""
    if config.kind != "slurm":
        run_steps(steps, config)
        return finish(*args)
    last = Step(f"{stage}-finish", [CallbackStep(finish, *args)], finish_logs, uses_model=finish_uses_model,
                skip_completed=False)
    return run_steps([*steps, last], config, depends=depends, dry_run_dir=dry_run_dir)


def stable_id(*parts: Any, length: int = 16) -> str:
    h = hashlib.sha1("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return h[:length]


def seed_from(*parts: Any) -> int:
    return int(stable_id(*parts, length=15), 16)


def chunked(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    for d in docs:
        chunk.append(d)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def count_rows(path: str | os.PathLike) -> int:
    from .records import parquet_files

    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path))


class RowsReader(PipelineStep):
    """Reads Parquet shards of our record schemas; each task takes every world_size-th file.

    Records travel as ``Document.metadata['row']`` so every field (lists, nulls) survives unchanged.
    """

    name = "rows reader"
    type = "📖 - READER"

    def __init__(self, folder: str | os.PathLike, id_key: str, text_key: str, limit: int = -1) -> None:
        super().__init__()
        self.folder, self.id_key, self.text_key, self.limit = str(folder), id_key, text_key, limit

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from .records import parquet_files

        files = parquet_files(self.folder)[rank::world_size]
        n = 0
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    if 0 <= self.limit <= n:
                        return
                    n += 1
                    self.stat_update("read")
                    yield Document(text=row[self.text_key] or "", id=str(row[self.id_key]),
                                   metadata={"row": row, "file": str(f)})


class ShardWriter(PipelineStep):
    """Writes ``metadata['row']`` of each document to ``<folder>/<rank>.parquet`` (atomic, streaming),
    plus rejected rows with their reason to ``<rejected>/<rank>.parquet``, plus per-rank counters."""

    name = "shard writer"
    type = "💽 - WRITER"

    def __init__(self, folder: str | os.PathLike, schema: str, stats_dir: str | os.PathLike,
                 rejected_folder: str | os.PathLike | None = None,
                 work_dir: str | os.PathLike | None = None, batch_rows: int = 512) -> None:
        super().__init__()
        self.folder, self.schema_name, self.stats_dir = str(folder), schema, str(stats_dir)
        self.rejected_folder = str(rejected_folder) if rejected_folder else None
        self.work_dir = str(work_dir) if work_dir else None  # chunk checkpoints, dropped once published
        self.batch_rows = batch_rows

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        schema = SCHEMAS[self.schema_name]
        rej_schema = schema.append(pa.field("reject_reason", pa.string()))
        counters: Counter = Counter()
        out_path = Path(self.folder) / f"{rank:05d}.parquet"
        rej_path = Path(self.rejected_folder) / f"{rank:05d}.parquet" if self.rejected_folder else None
        with atomic_path(out_path, suffix=".parquet") as tmp, \
                _maybe_atomic(rej_path) as rej_tmp:
            writer = pq.ParquetWriter(tmp, schema)
            rej_writer = pq.ParquetWriter(rej_tmp, rej_schema) if rej_tmp else None
            buf, rej_buf = [], []
            try:
                for doc in data or []:
                    reason = doc.metadata.get("reject_reason")
                    if reason:
                        counters[f"dropped:{reason}"] += 1
                        self.stat_update(f"dropped_{reason}")
                        if rej_writer is not None:
                            rej_buf.append({**doc.metadata["row"], "reject_reason": reason})
                    else:
                        counters["written"] += 1
                        self.stat_update("written")
                        buf.append(doc.metadata["row"])
                    for key, value in doc.metadata.get("counters", {}).items():
                        counters[key] += value
                    if len(buf) >= self.batch_rows:
                        writer.write_table(to_table(buf, schema, where=str(out_path)))
                        buf = []
                    if rej_writer is not None and len(rej_buf) >= self.batch_rows:
                        rej_writer.write_table(to_table(rej_buf, rej_schema, where=str(rej_path)))
                        rej_buf = []
                if buf:
                    fault_point("shard.before_write", out_path)
                    writer.write_table(to_table(buf, schema, where=str(out_path)))
                if rej_writer is not None and rej_buf:
                    rej_writer.write_table(to_table(rej_buf, rej_schema, where=str(rej_path)))
            finally:
                writer.close()
                if rej_writer is not None:
                    rej_writer.close()
        write_json(dict(counters), Path(self.stats_dir) / f"{rank:05d}.json")
        fault_point("shard.written")
        if self.work_dir:
            shutil.rmtree(Path(self.work_dir) / f"{rank:05d}", ignore_errors=True)
        return
        yield  # a generator, as datatrove expects of a step


class _maybe_atomic:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._cm = atomic_path(path, suffix=".parquet") if path else None

    def __enter__(self) -> Path | None:
        return self._cm.__enter__() if self._cm else None

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc) if self._cm else False


def merge_stats(stats_dir: str | os.PathLike) -> dict[str, int]:
    total: Counter = Counter()
    d = Path(stats_dir)
    if d.is_dir():
        for f in sorted(d.glob("[0-9]*.json")):
            total.update(json.loads(f.read_text()))
    return dict(sorted(total.items()))


def table_or_empty(path: str | os.PathLike, schema: str) -> pa.Table:
    p = Path(path)
    return read_table(p, schema) if p.exists() else SCHEMAS[schema].empty_table()
