"""One model step for every stage that runs a model over rows: the stage supplies a :class:`Task` (how a chunk of
documents becomes engine calls and how the results become rows) and the step does the rest.

On the transformers and endpoint engines :class:`ModelStep` builds the engine when the first chunk needs it,
checkpoints each chunk's rows (:class:`ChunkStore`), replays finished chunks after a kill, collects the engine's
counters per chunk, feeds the progress meter and closes the engine. On the vllm engine the same task runs one
document at a time inside datatrove's InferenceRunner (:class:`TaskRollout`), which checkpoints on its own, and
:class:`RolloutRows` turns what it wrote into the same rows; :func:`rollout_stats` checks it wrote every document.

Evaluations are not datatrove pipelines; :func:`run_chunks` is the chunk loop they share with the step.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from .config import EngineConfig
from .faults import fault_point
from .progress import Meter
from .records import atomic_path, to_table, write_json
from .shards import Step, chunked, stable_id


class ChunkStore:
    """Checkpoints of model outputs in ``dir``, one file per chunk, reused only for exactly the same ids.

    With a ``schema`` a chunk is a Parquet file of rows named by the hash of its ids (the datatrove stages);
    without one it is a JSON file of any results with the ids inside (the evaluations)."""

    def __init__(self, dir: str | os.PathLike, schema: pa.Schema | None = None, stage: str | None = None) -> None:
        self.dir = Path(dir)
        self.schema = schema
        self.stage = stage  # names the fault point after a save (humpback.core.faults)

    def _path(self, index: int, ids: list[str]) -> Path:
        if self.schema is None:
            return self.dir / f"{index:05d}.json"
        return self.dir / f"{index:06d}-{stable_id(*ids)}.parquet"

    def load(self, index: int, ids: list[str]) -> list | None:
        p = self._path(index, ids)
        if not p.is_file():
            return None
        if self.schema is None:
            try:
                saved = json.loads(p.read_text())
            except json.JSONDecodeError:
                return None
            return saved["results"] if saved.get("ids") == ids else None
        try:
            return pq.read_table(p).to_pylist()
        except (pa.ArrowInvalid, OSError):  # a torn file from a kill during write: recompute
            p.unlink(missing_ok=True)
            return None

    def save(self, index: int, ids: list[str], rows: list) -> None:
        if self.schema is None:
            write_json({"ids": ids, "results": rows}, self._path(index, ids))
        else:
            table = to_table(rows, self.schema, where=str(self.dir))
            with atomic_path(self._path(index, ids), suffix=".parquet") as tmp:
                pq.write_table(table, tmp)
        if self.stage:
            fault_point(f"{self.stage}.chunk_saved")

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def run_chunks(compute: Callable[[list], list], chunks: Iterable[list], store: ChunkStore,
               id_of: Callable[[Any], str]) -> Iterator[tuple[list, list, bool]]:
    """``(chunk, results, computed)`` for each chunk: its saved results, or ``compute(chunk)`` saved first."""
    for index, chunk in enumerate(chunks):
        ids = [id_of(x) for x in chunk]
        results = store.load(index, ids)
        if results is not None:
            yield chunk, results, False
            continue
        results = compute(chunk)
        store.save(index, ids, results)
        yield chunk, results, True


class Task:
    """What a stage tells the model step: how documents become requests and how results become rows.

    ``run`` serves the in-process and endpoint engines a chunk at a time; ``rollout`` and ``rollout_rows``
    serve datatrove's InferenceRunner (engine kind vllm) a document at a time and must give the same rows."""

    name = "model step"  # the step's name in datatrove's logs and stats
    label = "documents"  # what the progress meter counts
    schema: pa.Schema  # of the rows, as checkpointed per chunk
    stage = "stage"  # names the fault point after a chunk is saved
    text_key = "output"  # the row field a yielded Document carries as its text
    row_stat: Optional[str] = None  # a datatrove stat counted once per row

    def open(self, engine) -> None:
        """Called once the step has built the engine, before the first chunk's counters are taken."""

    def run(self, engine, docs: list[Document]) -> tuple[list[dict], int]:
        """The rows of a chunk of documents, and the completion tokens it took."""
        raise NotImplementedError

    def reject_reason(self, row: dict) -> Optional[str]:
        """Why a row goes to the rejected rows instead of the output (None: it is kept)."""
        return None

    async def rollout(self, engine, document: Document, pool) -> dict:
        """One document's result on the vllm path (``engine`` is a CallbackEngine; ``pool`` runs sync code)."""
        raise NotImplementedError

    def rollout_rows(self, document: dict) -> list[dict]:
        """The rows of one document the InferenceRunner wrote (metadata row and rollout_results)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the task opened itself (a second engine)."""


def engine_counters(engine, before: dict) -> dict[str, int]:
    """What an engine's counters (endpoint: requests sent, cache hits, retries, tokens) grew by."""
    now = dict(getattr(engine, "counters", {}) or {})
    return {f"engine:{k}": v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}


def _document(task: Task, row: dict, reason: Optional[str], counters: dict | None = None) -> Document:
    meta: dict[str, Any] = {"row": row, "reject_reason": reason}
    if counters:
        meta["counters"] = counters
    return Document(text=row[task.text_key] or "", id=row["pair_id"], metadata=meta)


class ModelStep(PipelineStep):
    """Runs a task over the documents in checkpointed chunks, on the engine the config names."""

    type = "🤖 - MODEL"

    def __init__(self, task: Task, model: str, engine: EngineConfig, work_dir: str, total: int | None,
                 chunk_size: int, engine_dir: str | None = None) -> None:
        super().__init__()
        self.name = task.name
        self.task, self.model, self.engine_config, self.work_dir = task, model, engine, work_dir
        self.total, self.chunk_size = total, chunk_size
        self.engine_dir = engine_dir  # request cache and token ledger of endpoint engines

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from ..engines import make_engine

        task = self.task
        store = ChunkStore(Path(self.work_dir) / f"{rank:05d}", task.schema, stage=task.stage)
        meter = Meter(task.label, self.total if world_size == 1 else None, prefix=f"[task {rank}] ")
        engine = None
        spent: dict[str, Any] = {}

        def compute(chunk: list[Document]) -> list[dict]:
            nonlocal engine
            if engine is None:
                engine = make_engine(self.model, self.engine_config, run_dir=self.engine_dir)
                task.open(engine)
            before = dict(getattr(engine, "counters", {}) or {})
            rows, spent["tokens"] = task.run(engine, chunk)
            spent["counters"] = engine_counters(engine, before)
            return rows

        try:
            for chunk, rows, computed in run_chunks(compute, chunked(data or [], self.chunk_size), store,
                                                    lambda d: d.id):
                tokens, counters = (spent.pop("tokens"), spent.pop("counters")) if computed else (0, {})
                if not computed:
                    self.stat_update("replayed_from_checkpoint", value=len(chunk))
                reasons = [task.reject_reason(row) for row in rows]
                meter.update(len(chunk), tokens, replayed=not computed, dropped=Counter(r for r in reasons if r))
                for i, (row, reason) in enumerate(zip(rows, reasons)):
                    if task.row_stat:
                        self.stat_update(task.row_stat)
                    yield _document(task, row, reason, counters if i == 0 else None)
            meter.update(0, 0, force=True)
        finally:
            task.close()
            if engine is not None:
                engine.close()


class TaskRollout:
    """A task's ``rollout`` inside datatrove's InferenceRunner: requests go through its ``generate`` callback.

    ``tokenizer_ref`` and ``server_support`` (what a probe found an external server to accept: token-id prompts,
    trustworthy echo) shape the requests of text-completion rollouts; vLLM and SGLang accept both."""

    def __init__(self, task: Task, model: str, use_chat: bool = True, tokenizer_ref: str | None = None,
                 server_support: dict | None = None) -> None:
        self.task, self.model, self.use_chat, self.tokenizer_ref = task, model, use_chat, tokenizer_ref
        self.server_support = server_support or {}

    async def __call__(self, document: Document, generate, pool=None, tokenizer=None, tokenizer_lock=None) -> dict:
        import asyncio

        from ..engines.vllm_engine import CallbackEngine

        engine = CallbackEngine(self.model, generate, asyncio.get_running_loop(), use_chat=self.use_chat,
                                tokenizer=self.tokenizer_ref, shared_tokenizer=tokenizer,
                                tokenizer_lock=tokenizer_lock, **self.server_support)
        return await self.task.rollout(engine, document, pool)


class RolloutRows(PipelineStep):
    """Turns the documents an InferenceRunner step wrote into the task's rows (with their reject reasons)."""

    name = "rollouts to rows"
    type = "🔢 - PROCESS"

    def __init__(self, folder: str, task: Task) -> None:
        super().__init__()
        self.folder, self.task = folder, task

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from ..engines.vllm_engine import iter_rollouts

        for doc in iter_rollouts(self.folder, rank, world_size):
            for row in self.task.rollout_rows(doc):
                if self.task.row_stat:
                    self.stat_update(self.task.row_stat)
                yield _document(self.task, row, self.task.reject_reason(row))


def model_steps(names: tuple[str, str], reader: PipelineStep, task: Task, writer: PipelineStep, model: str,
                engine: EngineConfig, *, logs: Path, chunks: Path, engine_dir: Path, total: int | None,
                chunk_size: int, tasks: int, vllm_work: Path, rollout: TaskRollout | None = None,
                **inference: Any) -> list[Step]:
    """The executor runs that take a stage's rows through ``task`` on ``engine`` and write them.

    In-process and endpoint engines: one run, reader → :class:`ModelStep` → writer, named ``names[0]``. vllm: the
    reader feeds datatrove's InferenceRunner (``rollout``, default ``TaskRollout(task, model)``; ``inference`` goes
    to ``vllm_engine.inference_step``) under ``vllm_work``, then a second run, ``names[1]``, turns what it wrote
    into rows for the writer: the rollouts of every task must exist before any is turned into rows."""
    if engine.kind == "vllm":
        from ..engines.vllm_engine import inference_step

        runner = inference_step(rollout or TaskRollout(task, model), model, engine, vllm_work, **inference)
        return [Step(names[0], [reader, runner], vllm_work / "logs", tasks=tasks, uses_model=True),
                Step(names[1], [RolloutRows(str(vllm_work / "rollouts"), task), writer], logs, tasks=tasks)]
    step = ModelStep(task, model, engine, str(chunks), total, chunk_size, engine_dir=str(engine_dir))
    return [Step(names[0], [reader, step, writer], logs, tasks=tasks, uses_model=True)]


def rollout_stats(work: Path, stage: str, noun: str) -> dict[str, float]:
    """The InferenceRunner step's counters (vllm_engine.inference_stats), once its outputs are checked.

    InferenceRunner counts a document it failed to save as processed and the task still succeeds (a missing
    aiofiles does that to every document), so the documents written are counted against those read."""
    from ..engines.vllm_engine import count_rollouts, inference_stats

    done = count_rollouts(work / "rollouts")
    stats = inference_stats(work / "logs")
    read = stats.get("documents_read", 0)
    if done != read:
        raise RuntimeError(f"{stage}: the InferenceRunner step wrote {done} of the {read} {noun} it read; see "
                           f"{work / 'logs'} (failed_documents: {stats.get('failed_documents', 0)})")
    return stats


__all__ = ["ChunkStore", "ModelStep", "RolloutRows", "Task", "TaskRollout", "engine_counters", "model_steps",
           "rollout_stats", "run_chunks"]
