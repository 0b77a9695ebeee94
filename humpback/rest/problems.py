"""Problems for ReST-EM: reading ``id, problem, answer`` (or ``tests``) records, quarantining bad ones, and
the train / held-out split.

A record that cannot be used (no id, no problem text, a duplicate id, nothing the reward can grade) is not
an error for the whole file: it goes to the quarantine file with its line and reason, and the counts are
logged. Invalid JSON is an error naming the file and line, as everywhere in humpback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.records import RecordError, iter_jsonl, read_rows, write_jsonl
from ..core.shards import stable_id

log = logging.getLogger("humpback.rest")


@dataclass
class Problem:
    id: str
    problem: str
    answer: str | None = None  # math: the reference final answer
    tests: Any = None  # code: assert source, or [{input, output}], or {inputs, outputs}
    difficulty: int | None = None
    solution: str | None = None  # a reference solution when the source has one (never trained on)

    def as_record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Quarantined:
    source: str
    line: int
    id: str | None
    reason: str
    record: dict[str, Any]


def _records(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    if path.suffix == ".parquet":
        yield from enumerate(read_rows(path), start=1)
    elif path.suffix in (".jsonl", ".json") or path.name.endswith(".jsonl.gz"):
        yield from iter_jsonl(path)
    else:
        raise RecordError(f"{path}: problems must be a .jsonl or .parquet file")


def load_problems(path: str | os.PathLike, check: Callable[[Problem], str | None] | None = None,
                  ) -> tuple[list[Problem], list[Quarantined]]:
    """Problems of one file, in file order; records that cannot be used are returned as quarantined."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: problems file not found")
    kept: list[Problem] = []
    bad: list[Quarantined] = []
    first_line: dict[str, int] = {}
    for line, rec in _records(p):
        rid = rec.get("id")
        rid = str(rid) if isinstance(rid, (str, int)) and str(rid).strip() else None
        text = rec.get("problem")
        answer = rec.get("answer")
        difficulty = rec.get("difficulty")
        reason = None
        if rid is None:
            reason = "missing id"
        elif not isinstance(text, str) or not text.strip():
            reason = "missing or empty 'problem'"
        elif rid in first_line:
            reason = f"duplicate id (first at line {first_line[rid]})"
        elif answer is not None and not isinstance(answer, (str, int, float)):
            reason = f"'answer' must be a string or a number, got {type(answer).__name__}"
        elif difficulty is not None and (not isinstance(difficulty, int) or isinstance(difficulty, bool)):
            reason = f"'difficulty' must be an integer, got {difficulty!r}"
        if reason is None:
            prob = Problem(rid, text.strip(), None if answer is None else str(answer).strip(), rec.get("tests"),
                           difficulty, rec.get("solution") if isinstance(rec.get("solution"), str) else None)
            reason = check(prob) if check else None
        if reason:
            bad.append(Quarantined(str(p), line, rid, reason, rec))
            continue
        first_line[rid] = line
        kept.append(prob)
    return kept, bad


def split_problems(problems: list[Problem], heldout_fraction: float, seed: int = 0
                   ) -> tuple[list[Problem], list[Problem]]:
    """A deterministic split by a hash of (seed, id) against ``heldout_fraction``: a problem's side depends on
    its id alone, so adding problems to the file never moves an existing one (the held-out share is
    therefore close to, not exactly, the fraction). Each side gets at least one problem when there are two."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError("heldout_fraction must be between 0 and 1")
    unit = {q.id: int(stable_id(seed, q.id), 16) / 16**16 for q in problems}
    held = {q.id for q in problems if unit[q.id] < heldout_fraction}
    if len(problems) > 1 and not held:
        held = {min(problems, key=lambda q: unit[q.id]).id}
    elif len(problems) > 1 and len(held) == len(problems):
        held.discard(max(problems, key=lambda q: unit[q.id]).id)
    return [q for q in problems if q.id not in held], [q for q in problems if q.id in held]


def write_problems(problems: Iterable[Problem], path: str | os.PathLike) -> Path:
    return write_jsonl((q.as_record() for q in problems), path)


def read_problems(path: str | os.PathLike) -> list[Problem]:
    """Problems a previous stage wrote (already checked): bad records here are errors, not quarantine."""
    problems, bad = load_problems(path)
    if bad:
        b = bad[0]
        raise RecordError(f"{b.source}:{b.line}: {b.reason}")
    return problems


def write_quarantine(items: Iterable[Quarantined], path: str | os.PathLike) -> Path:
    return write_jsonl((asdict(q) for q in items), path)


__all__ = ["Problem", "Quarantined", "load_problems", "read_problems", "split_problems", "write_problems",
           "write_quarantine"]
