"""Sample solutions for problems and grade them, checkpointed per chunk (shared by the E-step and eval).

Work happens in ``WORK/chunks/``: one Parquet file per chunk of problems, keyed by its index and problem
ids, written atomically. A rerun after a kill loads the finished chunks and generates only the rest, so
a kill loses at most one chunk. Each problem's samples come from seeds derived from (plan seed, mode,
problem id), so a resumed run draws exactly what an uninterrupted one would have.
``WORK/settings.json`` records what the chunks were made with; different settings are refused rather than
mixed in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..core.progress import Meter
from ..engines import Engine, GenerationRequest
from ..core.prompts import render
from ..core.records import write_json
from ..core.model_step import ChunkStore, run_chunks
from ..core.shards import seed_from
from .problems import Problem
from .rewards import Reward

log = logging.getLogger("humpback.rest")

SAMPLE_SCHEMA = pa.schema([
    ("problem_id", pa.string()),
    ("mode", pa.string()),  # sample | greedy
    ("sample", pa.int64()),  # index among this problem's samples of this mode
    ("completion", pa.string()),
    ("finish_reason", pa.string()),  # stop | length
    ("completion_tokens", pa.int64()),
    ("reward", pa.float64()),
    ("extracted", pa.string()),
    ("key", pa.string()),  # majority-vote key (null when the reward has none)
    ("detail", pa.string()),
    ("difficulty", pa.int64()),
])


class SamplingError(RuntimeError):
    """Leftover work of different settings, or another condition that needs the user; the message says what."""


@dataclass
class SamplingPlan:
    """How many solutions to draw per problem, and how."""

    mode: str  # sample | greedy
    n: int
    temperature: float
    top_k: int | None = None
    top_p: float = 1.0
    max_tokens: int = 512
    stop: list[str] = field(default_factory=list)
    seed: int = 0


def prompt_messages(template: str, problem: Problem) -> list[dict[str, str]]:
    """The chat prompt for ``problem``: what the E-step samples from, eval asks and the M-step trains on."""
    return [{"role": "user", "content": render(template, problem=problem.problem)}]


def _check_settings(work: Path, settings: dict[str, Any]) -> None:
    path = work / "settings.json"
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != json.loads(json.dumps(settings)):
            raise SamplingError(f"{work} holds samples made with other settings (model, sampling, template or "
                                "reward changed); remove it to start over")
    else:
        write_json(settings, path)


def sample_and_grade(engine: Engine, problems: Sequence[Problem], reward: Reward, template: str,
                     plans: Sequence[SamplingPlan], work: str | Path, chunk_problems: int, label: str,
                     settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of SAMPLE_SCHEMA for every (problem, plan, sample), in problem order; resumes from ``work``."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    _check_settings(work, {"template": template, "reward": reward.name,
                           "reward_options": reward.options.model_dump(mode="json"),
                           "plans": [asdict(p) for p in plans], "chunk_problems": chunk_problems,
                           **(settings or {})})
    store = ChunkStore(work / "chunks" / "00000", SAMPLE_SCHEMA, stage="rest")
    meter = Meter(f"[{label}] problems", len(problems), logger=log)
    samples = 0
    rows: list[dict[str, Any]] = []
    replayed = 0
    chunks = (list(problems[i:i + chunk_problems]) for i in range(0, len(problems), chunk_problems))
    for chunk, chunk_rows, computed in run_chunks(lambda c: _sample_chunk(engine, c, reward, template, plans),
                                                  chunks, store, lambda p: p.id):
        rows.extend(chunk_rows)
        if not computed:
            replayed += 1
            meter.update(len(chunk), replayed=True)
            continue
        samples += len(chunk_rows)
        meter.update(len(chunk), sum(r["completion_tokens"] for r in chunk_rows), extra=f"{samples} samples")
    if replayed:
        log.info("[%s] %d chunk(s) reused from %s", label, replayed, work / "chunks")
    return rows


def _sample_chunk(engine: Engine, chunk: list[Problem], reward: Reward, template: str,
                  plans: Sequence[SamplingPlan]) -> list[dict[str, Any]]:
    requests, owners = [], []
    for p in chunk:
        messages = prompt_messages(template, p)
        for plan in plans:
            requests.append(GenerationRequest(
                messages=messages, n=plan.n, temperature=plan.temperature, top_p=plan.top_p, top_k=plan.top_k,
                max_tokens=plan.max_tokens, stop=list(plan.stop), seed=seed_from(plan.seed, plan.mode, p.id) % 2**31,
                id=p.id))
            owners.append((p, plan))
    results = engine.generate(requests)
    items, meta = [], []
    for (p, plan), res in zip(owners, results):
        for j, (text, finish, ntok) in enumerate(zip(res.texts, res.finish_reasons, res.completion_tokens)):
            items.append((text, p))
            meta.append((p, plan.mode, j, text, finish, ntok))
    grades = reward.grade_many(items)
    rows = [{"problem_id": p.id, "mode": mode, "sample": j, "completion": text, "finish_reason": finish,
             "completion_tokens": int(ntok), "reward": float(g.reward), "extracted": g.extracted, "key": g.key,
             "detail": g.detail, "difficulty": p.difficulty}
            for (p, mode, j, text, finish, ntok), g in zip(meta, grades)]
    return rows


__all__ = ["SAMPLE_SCHEMA", "SamplingError", "SamplingPlan", "prompt_messages", "sample_and_grade"]
