"""Training data: reading seed and augmented pairs, and turning them into chat examples.

Prompts are built by ``backward_messages`` / ``forward_messages`` only, and the augment stage and
inference use the same functions, so what a model is trained on and what it is later asked never drift.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence


from ...core.prompts import render
from ...core.records import RecordError, parquet_schema, read_records, record_files, record_format
from .config import SEED_TAG, WEB_TAG

BACKWARD_TEMPLATE = "backward_train"

ORIGIN_SEED = "seed"
ORIGIN_AUGMENTED = "augmented"


def backward_messages(output: str, template: str = BACKWARD_TEMPLATE) -> list[dict[str, str]]:
    """The backward model's prompt for ``output``: used for training M_yx and for generating with it."""
    return [{"role": "user", "content": render(template, output=output)}]


def system_tag(tag: Optional[str], seed_tag: str = SEED_TAG, web_tag: str = WEB_TAG) -> Optional[str]:
    """The system prompt for a tag: ``seed`` (S_a), ``web`` (S_w), ``both`` (S_a then S_w) or None."""
    if tag is None:
        return None
    if tag == "seed":
        return seed_tag
    if tag == "web":
        return web_tag
    if tag == "both":
        return f"{seed_tag} {web_tag}"
    raise ValueError(f"unknown tag {tag!r}: expected 'seed', 'web', 'both' or None")


def forward_messages(
    instruction: str, tag: Optional[str] = "both", seed_tag: str = SEED_TAG, web_tag: str = WEB_TAG
) -> list[dict[str, str]]:
    """The forward model's prompt. At inference the paper's best setting is ``both`` (S_a + S_w)."""
    messages = []
    system = system_tag(tag, seed_tag, web_tag)
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": instruction})
    return messages


# ---------------------------------------------------------------------------------------------- reading


def read_pairs(path: Path, columns: Sequence[str], optional: Sequence[str] = ()) -> tuple[list[dict], set[str]]:
    """Rows of one file with ``columns`` (required) and whichever ``optional`` columns it has."""
    if record_format(path) == "parquet":
        names = set(parquet_schema(path).names)
        missing = [c for c in columns if c not in names]
        if missing:
            raise RecordError(f"{path}: missing column(s) {missing}")
        present = [c for c in optional if c in names]
        return [row for _, row in read_records(path, columns=list(columns) + present)], set(present)
    rows = [row for _, row in read_records(path)]
    present = {c for c in optional if any(c in r for r in rows)}
    for i, row in enumerate(rows, 1):
        missing = [c for c in columns if c not in row]
        if missing:
            raise RecordError(f"{path}: record {i}: missing field(s) {missing}")
    return [{c: r.get(c) for c in list(columns) + sorted(present)} for r in rows], present


def _clean(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _with_text(rows: Iterable[dict], st: SourceStats) -> Iterator[tuple[dict, str, str]]:
    """(row, instruction, output) of the rows whose instruction and output are non-empty text; the others are
    counted in ``st.empty``."""
    for row in rows:
        instruction, output = _clean(row["instruction"]), _clean(row["output"])
        if instruction and output:
            yield row, instruction, output
        else:
            st.empty += 1


@dataclass
class SourceStats:
    """What one input file contributed: the model card's data table is built from these."""

    origin: str
    path: str
    read: int = 0
    empty: int = 0  # instruction or output empty / not text
    below_min_score: int = 0
    kept: int = 0
    too_long: int = 0  # filled in when the examples are tokenized
    by_source: dict[str, int] = field(default_factory=dict)  # seed: rows per `source`/`category`
    by_score: dict[str, int] = field(default_factory=dict)  # augmented: kept rows per score bucket

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class Example:
    messages: list[dict[str, str]]
    origin: str
    source_index: int  # index into the SourceStats list

    @property
    def prompt(self) -> list[dict[str, str]]:
        return self.messages[:-1]

    @property
    def completion(self) -> list[dict[str, str]]:
        return self.messages[-1:]


def _score_bucket(score: float) -> str:
    return str(math.floor(score))


def load_seed(paths: Iterable[str | os.PathLike]) -> tuple[list[dict], list[SourceStats]]:
    """Seed pairs (``instruction``, ``output``; ``source`` or ``category`` counted when present)."""
    pairs: list[dict] = []
    stats: list[SourceStats] = []
    for path in paths:
        for f in record_files(path):
            rows, _ = read_pairs(f, ("instruction", "output"), ("source", "category"))
            st = SourceStats(ORIGIN_SEED, str(f), read=len(rows))
            by_source: Counter = Counter()
            for row, instruction, output in _with_text(rows, st):
                label = row.get("source") or row.get("category") or f.stem
                by_source[str(label)] += 1
                pairs.append({"instruction": instruction, "output": output, "source_index": len(stats)})
            st.kept = sum(by_source.values())
            st.by_source = dict(sorted(by_source.items()))
            stats.append(st)
    if not pairs:
        raise RecordError(f"no usable seed pairs in {', '.join(map(str, paths))}")
    return pairs, stats


def load_augmented(
    paths: Iterable[str | os.PathLike], min_score: Optional[float], first_index: int = 0
) -> tuple[list[dict], list[SourceStats]]:
    """Augmented (curated) pairs; with ``min_score`` only rows with ``score >= min_score`` are kept."""
    pairs: list[dict] = []
    stats: list[SourceStats] = []
    for path in paths:
        for f in record_files(path):
            rows, present = read_pairs(f, ("instruction", "output"), ("score",))
            if min_score is not None and "score" not in present:
                raise RecordError(
                    f"{f}: --min-score {min_score} needs a 'score' column, and this file has none "
                    "(give curated pairs, or drop --min-score)"
                )
            st = SourceStats(ORIGIN_AUGMENTED, str(f), read=len(rows))
            by_score: Counter = Counter()
            for row, instruction, output in _with_text(rows, st):
                score = row.get("score")
                if min_score is not None and (score is None or score < min_score):
                    st.below_min_score += 1
                    continue
                by_score["unscored" if score is None else _score_bucket(score)] += 1
                pairs.append({"instruction": instruction, "output": output,
                              "source_index": first_index + len(stats)})
            st.kept = sum(by_score.values())
            st.by_score = dict(sorted(by_score.items()))
            stats.append(st)
    return pairs, stats


def backward_examples(pairs: Sequence[dict], template: str = BACKWARD_TEMPLATE) -> list[Example]:
    """Reversed seed pairs: the prompt is the output, the completion is the instruction."""
    return [
        Example(backward_messages(p["output"], template) + [{"role": "assistant", "content": p["instruction"]}],
                ORIGIN_SEED, p["source_index"])
        for p in pairs
    ]


def forward_examples(
    seed_pairs: Sequence[dict], augmented_pairs: Sequence[dict], tags: bool = True,
    seed_tag: str = SEED_TAG, web_tag: str = WEB_TAG,
) -> list[Example]:
    """Seed pairs tagged S_a and augmented pairs tagged S_w (no system message at all without tags)."""
    out = []
    for origin, tag, pairs in ((ORIGIN_SEED, "seed", seed_pairs), (ORIGIN_AUGMENTED, "web", augmented_pairs)):
        for p in pairs:
            messages = forward_messages(p["instruction"], tag if tags else None, seed_tag, web_tag)
            out.append(Example(messages + [{"role": "assistant", "content": p["output"]}], origin,
                               p["source_index"]))
    return out
