"""Shared pieces of the evaluation commands: reading pairs and prompts from any layout, bootstrap confidence
intervals, rank-based AUROC, resumable chunked model calls, and engine settings.

Evaluations call models for minutes to hours, so every model call goes through :func:`cached_chunks`: results
are written per chunk (atomically) under the output's ``.work/`` folder, keyed by everything that determines
them, and a rerun after a kill recomputes only the chunks that were not written yet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ..core.config import EngineConfig, StrictModel
from ..core.model_step import ChunkStore, run_chunks
from ..core.progress import Meter
from ..core.records import RecordError, read_records, write_json
from ..core.shards import stable_id

log = logging.getLogger("humpback.eval")

# Text fields accepted for instructions / prompts, tried in this order.
INSTRUCTION_KEYS = ("instruction", "prompt", "problem", "question", "query")
# Reference answers (held-out outputs, eval references), tried in this order.
OUTPUT_KEYS = ("output", "response", "answer", "completion", "reference", "solution", "target")
ID_KEYS = ("pair_id", "id", "question_id", "prompt_id", "uid")


class EvalConfig(StrictModel):
    """Settings shared by the evaluation commands (``--config`` YAML)."""

    engine: EngineConfig = EngineConfig(progress=False)
    bootstrap: int = Field(1000, ge=0)  # resamples for confidence intervals; 0 disables them
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    seed: int = 0
    chunk_size: int = Field(32, ge=1)  # model calls are checkpointed per chunk of this many items


# ------------------------------------------------------------------------------------------- reading inputs
def is_run_dir(path: str | Path) -> bool:
    """A ``humpback run`` / quickstart directory (as opposed to a folder of pair shards)."""
    p = Path(path)
    return p.is_dir() and any((p / name).exists() for name in ("seed.parquet", "manifest.json", "curate", "augment"))


def _pick(row: dict, keys: Sequence[str]) -> str | None:
    for k in keys:
        v = row.get(k)
        if isinstance(v, str) and v.strip():
            return k
    return None


@dataclass
class Item:
    """One pair or prompt read from an input file, with where it came from."""

    id: str
    instruction: str
    output: str | None
    file: str
    line: int

    def as_pair(self) -> dict[str, Any]:
        return {"pair_id": self.id, "instruction": self.instruction, "output": self.output or ""}


def load_items(path: str | Path, need_output: bool, instruction_keys: Sequence[str] = INSTRUCTION_KEYS,
               output_keys: Sequence[str] = OUTPUT_KEYS) -> list[Item]:
    """Pairs (``need_output``) or prompts from every file of ``path``.

    A record without an instruction field (or without an output when one is needed) is an input error that
    names the file, the row and the keys tried: evaluation data is small and hand-picked, so nothing is skipped.
    """
    items: list[Item] = []
    for where, row in read_records(path):
        f, line = where.file, where.number
        ikey = _pick(row, instruction_keys)
        if ikey is None:
            raise RecordError(f"{f}:{line}: no instruction text; tried fields {list(instruction_keys)} "
                              f"(record has {sorted(row)})")
        okey = _pick(row, output_keys)
        if need_output and okey is None:
            raise RecordError(f"{f}:{line}: no output text; tried fields {list(output_keys)} "
                              f"(record has {sorted(row)})")
        idkey = next((k for k in ID_KEYS if row.get(k) not in (None, "")), None)
        output = row[okey] if okey else None
        item_id = str(row[idkey]) if idkey else stable_id(row[ikey], output or "")
        items.append(Item(item_id, row[ikey], output, str(f), line))
    if not items:
        raise RecordError(f"{path}: no records")
    return items


def sample_items(items: Sequence[Any], n: int | None, seed: int) -> list[Any]:
    """A fixed-seed random sample of ``n`` items (all of them, in order, when n is None or >= len)."""
    if n is None or n < 0 or n >= len(items):
        return list(items)
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(items), size=n, replace=False).tolist())
    return [items[i] for i in idx]


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def model_label(ref: str) -> str:
    """A short display name: the folder name for a local path, the reference itself otherwise."""
    p = Path(ref).expanduser()
    return p.name if p.exists() and p.name else ref


def model_key(ref: str) -> str:
    """What identifies a model's outputs in a cache key: a local folder also by its files' mtimes, so a
    model retrained into the same folder never reuses the old model's cached results."""
    p = Path(ref).expanduser()
    if not p.is_dir():
        return ref
    stamps = [int(f.stat().st_mtime_ns) for f in sorted(p.glob("*")) if f.suffix in (".json", ".safetensors")]
    return f"{p.resolve()}:{fingerprint(stamps)}"


def unique_labels(refs: Sequence[str]) -> list[str]:
    labels = [model_label(r) for r in refs]
    if len(set(labels)) < len(labels):
        return list(refs)
    return labels


# ------------------------------------------------------------------------------------------- statistics
def auroc(positives: Sequence[float | None], negatives: Sequence[float | None]) -> float | None:
    """P(positive > negative) with ties counted half (Mann-Whitney U from ranks); None values left out.

    Ranks rather than all pairs (O(n log n)), so bootstrap resampling stays cheap.
    """
    from scipy.stats import rankdata

    pos = np.asarray([p for p in positives if p is not None and not _isnan(p)], dtype=float)
    neg = np.asarray([n for n in negatives if n is not None and not _isnan(n)], dtype=float)
    if not len(pos) or not len(neg):
        return None
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def spearman(x: Sequence[float | None], y: Sequence[float | None]) -> float | None:
    """Spearman rank correlation over the positions where both values are present."""
    from scipy.stats import spearmanr

    keep = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and not _isnan(a) and not _isnan(b)]
    if len(keep) < 3:
        return None
    a, b = zip(*keep)
    if len(set(a)) < 2 or len(set(b)) < 2:
        return None  # a constant scorer has no rank order to agree with
    return float(spearmanr(a, b).statistic)


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def bootstrap_ci(stat: Callable[[np.ndarray], float | None], n: int, reps: int, confidence: float,
                 seed: int) -> list[float] | None:
    """Percentile bootstrap interval of ``stat(indices)`` over ``n`` units resampled with replacement."""
    if reps <= 0 or n < 2:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        v = stat(rng.integers(0, n, size=n))
        if v is not None and not _isnan(v):
            values.append(v)
    if len(values) < max(10, reps // 10):
        return None
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return [float(lo), float(hi)]


def fmt_ci(value: float | None, ci: Sequence[float] | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    s = f"{value:.{digits}f}"
    if ci:
        s += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return s


def histogram(values: Sequence[float | None], bins: int = 20) -> dict[str, list[float]]:
    present = [v for v in values if v is not None and not _isnan(v)]
    if not present:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(present, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


# ------------------------------------------------------------------------------------------- resumable calls
def cached_chunks(work: Path, ids: Sequence[str], compute: Callable[[list[int]], list[Any]], chunk_size: int,
                  label: str) -> list[Any]:
    """``compute`` over index chunks of ``ids``, each chunk's results saved to ``work/NNNNN.json``.

    A saved chunk is reused only if it holds results for exactly the same ids, so a changed input never
    mixes with stale results; ``work`` itself must be keyed by everything else the results depend on.
    """
    def checked(idx: list[int]) -> list[Any]:
        results = compute(idx)
        if len(results) != len(idx):
            raise RuntimeError(f"{label}: {len(results)} results for {len(idx)} items")
        return results

    work.mkdir(parents=True, exist_ok=True)
    out: list[Any] = []
    progress = Meter(label, len(ids), logger=log)
    chunks = (list(range(start, min(start + chunk_size, len(ids)))) for start in range(0, len(ids), chunk_size))
    for idx, results, computed in run_chunks(checked, chunks, ChunkStore(work), lambda i: ids[i]):
        out.extend(results)
        progress.update(len(idx), replayed=not computed)
    return out


def load_engine(model: str, cfg: EvalConfig):
    from ..engines import make_engine

    log.info("loading %s", model)
    return make_engine(model, cfg.engine)


def release(engine) -> None:
    """Free a model before the next one is loaded (evaluations go through several models in turn)."""
    import gc

    try:
        engine.close()
    finally:
        del engine
        gc.collect()


class LazyModel:
    """A model loaded by the first call that needs it, so a rerun over saved chunks loads none, and freed when
    the ``with`` block ends, before the next one is loaded. A call returns ``setup(engine)`` (made once, e.g. a
    scorer over the engine, or the engine after a capability check), or the engine itself."""

    def __init__(self, model: str, cfg: EvalConfig, setup: Callable[[Any], Any] | None = None) -> None:
        self.model, self.cfg, self.setup = model, cfg, setup
        self._engine: Any = None
        self._made: Any = None

    def __call__(self) -> Any:
        if self._engine is None:
            self._engine = load_engine(self.model, self.cfg)
            self._made = self.setup(self._engine) if self.setup else self._engine
        return self._made

    def __enter__(self) -> LazyModel:
        return self

    def __exit__(self, *exc) -> None:
        self._made = None
        if self._engine is not None:
            release(self._take())  # no reference left here: release's gc.collect frees the weights

    def _take(self) -> Any:
        engine, self._engine = self._engine, None
        return engine


def default_output(inputs: Sequence[str | Path], name: str) -> Path:
    """RUN/eval/NAME for a run directory, else ./eval/NAME."""
    for p in inputs:
        if p is not None and is_run_dir(p):
            return Path(p) / "eval" / name
    return Path("eval") / name


def save_figure(fig, path: Path) -> Path:
    from ..core.records import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_result(obj: dict, path: Path) -> Path:
    return write_json(obj, path)
