"""Segment deduplication with datatrove's stages: exact (normalised-text hash) first, then MinHash.

Exact duplicates are removed before MinHash signatures are computed. If both ran over the same segments, each
would pick its own survivor of a group of identical segments (exact keeps the first, MinHash keeps its
cluster root) and the group could lose every member. Both filters address segments by their position in a
task's intermediate shard, so the shard is re-read in the same order by every stage that needs it.
"""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from functools import partial

import orjson
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter, ExactFindDedups
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupCluster
from datatrove.utils.hashing import HashConfig

from .config import DedupConfig

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_for_exact(text: str) -> str:
    """Case, punctuation, markdown markup and whitespace do not make two segments different."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _NON_WORD.sub(" ", text).strip()


def exact_content(doc: Document) -> str:
    return normalize_for_exact(doc.text)


def exact_config() -> ExactDedupConfig:
    return ExactDedupConfig(
        content_getter=exact_content, hash_config=HashConfig(precision=64, hash_fc="xxhash")
    )


def minhash_config(cfg: DedupConfig) -> MinhashConfig:
    return MinhashConfig(
        n_grams=cfg.minhash_ngrams,
        num_buckets=cfg.minhash_buckets,
        hashes_per_bucket=cfg.minhash_hashes_per_bucket,
        seed=cfg.minhash_seed,
        hash_config=HashConfig(precision=64, hash_fc="xxhash"),
    )


class ShardReader(PipelineStep):
    """Reads back this task's intermediate segment shard (written by datatrove's JsonlWriter), in order."""

    type = "📖 - READER"
    name = "📖 segment shard"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        path = os.path.join(self.folder, f"{rank:05d}.jsonl")
        if not os.path.exists(path):  # a task whose input gave no segment writes no shard
            return
        with open(path, "rb") as f:
            for line in f:
                rec = orjson.loads(line)
                self.stat_update("segments")
                yield Document(text=rec["text"], id=rec["id"], metadata=rec.get("metadata", {}))


class _NoInnerBars:
    """Some datatrove dedup steps draw their own tqdm bars, which would cut through humpback's stage progress
    bar. They are silenced where the step runs (in whichever process), for the duration of the step only."""

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        base = next(c for c in type(self).__mro__ if c.__module__.startswith("datatrove."))
        module = sys.modules[base.__module__]
        original = module.tqdm
        module.tqdm = partial(original, disable=True)
        try:
            result = super().run(data, rank, world_size)
            if result is not None:
                yield from result
        finally:
            module.tqdm = original


class QuietExactFindDedups(_NoInnerBars, ExactFindDedups):
    pass


class QuietExactDedupFilter(_NoInnerBars, ExactDedupFilter):
    pass


class QuietMinhashDedupCluster(_NoInnerBars, MinhashDedupCluster):
    pass
