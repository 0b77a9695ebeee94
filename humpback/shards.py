"""Shared machinery for the sharded model stages (augment, curate) on datatrove.

Resume works at two levels. datatrove's completion markers skip whole finished tasks; inside a task,
model outputs are checkpointed per chunk (keyed by the ids in the chunk), so a kill loses at most one
chunk of model work and a rerun replays the finished chunks from disk instead of regenerating them. A
task's output shard is written to a temporary file and renamed when the task ends, so readers never
see a partial shard and a rerun never duplicates rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from pydantic import Field

from .config import ConfigError, StrictModel
from .records import SCHEMAS, atomic_path, read_table, to_table, write_json

log = logging.getLogger(__name__)


class ExecutorConfig(StrictModel):
    """Where the tasks of a sharded stage run (datatrove executors)."""

    kind: Literal["local", "slurm", "ray"] = "local"
    tasks: int = Field(1, ge=1)
    workers: int = Field(1, ge=1)  # local: tasks run at once (each loads its own model)


def run_pipeline(pipeline: list, config: ExecutorConfig, logging_dir: str | os.PathLike) -> None:
    if config.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        workers = min(config.workers, config.tasks)
        LocalPipelineExecutor(pipeline=pipeline, tasks=config.tasks, workers=workers,
                              logging_dir=str(logging_dir)).run()
        return
    raise ConfigError(f"executor.kind: '{config.kind}' is not supported by this version yet; use 'local'")


def stable_id(*parts: Any, length: int = 16) -> str:
    h = hashlib.sha1("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return h[:length]


def seed_from(*parts: Any) -> int:
    return int(stable_id(*parts, length=15), 16)


class ChunkStore:
    """Per-task checkpoints of model outputs, one Parquet file per chunk, keyed by the chunk's ids."""

    def __init__(self, root: str | os.PathLike, rank: int, schema: pa.Schema) -> None:
        self.dir = Path(root) / f"{rank:05d}"
        self.schema = schema

    def _path(self, index: int, ids: list[str]) -> Path:
        return self.dir / f"{index:06d}-{stable_id(*ids)}.parquet"

    def load(self, index: int, ids: list[str]) -> Optional[list[dict]]:
        p = self._path(index, ids)
        if not p.is_file():
            return None
        try:
            return pq.read_table(p).to_pylist()
        except (pa.ArrowInvalid, OSError):  # a torn file from a kill during write: recompute
            p.unlink(missing_ok=True)
            return None

    def save(self, index: int, ids: list[str], rows: list[dict]) -> None:
        table = to_table(rows, self.schema, where=str(self.dir))
        with atomic_path(self._path(index, ids), suffix=".parquet") as tmp:
            pq.write_table(table, tmp)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def chunked(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    for d in docs:
        chunk.append(d)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class RateMeter:
    """Items/s, tokens/s and ETA for a task's log lines (datatrove runs tasks without a terminal bar)."""

    def __init__(self, label: str, total: Optional[int], rank: int, every_s: float = 10.0) -> None:
        self.label, self.total, self.rank = label, total, rank
        self.start = self.last = time.perf_counter()
        self.done = 0
        self.tokens = 0
        self.every_s = every_s

    def update(self, items: int, tokens: int = 0, force: bool = False) -> None:
        self.done += items
        self.tokens += tokens
        now = time.perf_counter()
        if force or now - self.last >= self.every_s:
            self.last = now
            el = max(now - self.start, 1e-9)
            rate = self.done / el
            eta = ""
            if self.total:
                left = max(self.total - self.done, 0)
                eta = f", ETA {left / rate:.0f}s" if rate > 0 else ""
            total = f"/{self.total}" if self.total else ""
            tok = f", {self.tokens / el:.1f} tok/s" if self.tokens else ""
            log.warning("[task %d] %s %d%s (%.2f/s%s%s)", self.rank, self.label, self.done, total, rate, tok, eta)


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
                 rejected_folder: Optional[str | os.PathLike] = None,
                 work_dir: Optional[str | os.PathLike] = None, batch_rows: int = 512) -> None:
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
                    writer.write_table(to_table(buf, schema, where=str(out_path)))
                if rej_writer is not None and rej_buf:
                    rej_writer.write_table(to_table(rej_buf, rej_schema, where=str(rej_path)))
            finally:
                writer.close()
                if rej_writer is not None:
                    rej_writer.close()
        write_json(dict(counters), Path(self.stats_dir) / f"{rank:05d}.json")
        if self.work_dir:
            shutil.rmtree(Path(self.work_dir) / f"{rank:05d}", ignore_errors=True)
        return
        yield  # a generator, as datatrove expects of a step


class _maybe_atomic:
    def __init__(self, path: Optional[Path]) -> None:
        self.path = path
        self._cm = atomic_path(path, suffix=".parquet") if path else None

    def __enter__(self) -> Optional[Path]:
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
