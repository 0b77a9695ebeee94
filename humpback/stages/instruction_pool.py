"""The instructions of the pairs curated together, for scorers that judge a pair against the others.

A pointwise score cannot tell "this answers the question" from "this answers a question on the same topic": a
135M model finds an answer about ``apt`` as likely under a question about ``dpkg`` as under its own. Compared
with the other instructions of the run, it can: if an output is explained better by another pair's instruction
than by its own, its own is not the one it answers. ``InstructionPool`` holds those instructions and their
all-MiniLM-L6-v2 embeddings (computed once), and finds each instruction's nearest others.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Optional, Sequence

import numpy as np


class InstructionPool:
    def __init__(self, instructions: Sequence[str], vectors: Optional[np.ndarray] = None) -> None:
        from ..evaluate.diversity import embed

        self.instructions = list(dict.fromkeys(i for i in instructions if i and i.strip()))
        self.vectors = (vectors if vectors is not None else
                        embed(self.instructions) if self.instructions else np.zeros((0, 384), dtype=np.float32))

    def __len__(self) -> int:
        return len(self.instructions)

    def nearest(self, instructions: Sequence[str], vectors: np.ndarray, k: int) -> list[list[str]]:
        """For each instruction (with its embedding): the ``k`` most similar other instructions of the pool,
        most similar first; the instruction itself is never among them."""
        if not len(self) or k <= 0:
            return [[] for _ in instructions]
        sims = np.asarray(vectors) @ self.vectors.T
        out = []
        for ins, row in zip(instructions, sims):
            # k + 1 candidates are enough to drop the instruction itself; stable order makes ties reproducible
            order = np.argsort(-row, kind="stable")
            out.append([self.instructions[j] for j in order[: k + 1] if self.instructions[j] != ins][:k])
        return out


def read_pool(pairs_dir: str | Path, limit: int, seed: int = 0) -> InstructionPool:
    """The instructions of every pair in ``pairs_dir`` (Parquet shards), at most ``limit`` of them (a sample
    under ``seed`` beyond that, so a very large run embeds a bounded pool)."""
    import pyarrow.parquet as pq

    from ..core.records import parquet_files

    instructions: list[str] = []
    for f in parquet_files(pairs_dir):
        instructions.extend(i for i in pq.read_table(f, columns=["instruction"]).column(0).to_pylist() if i)
    instructions = list(dict.fromkeys(instructions))
    if len(instructions) > limit:
        instructions = sorted(random.Random(seed).sample(instructions, limit))
    return InstructionPool(instructions)
