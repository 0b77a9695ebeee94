"""Self-augmentation: the backward model writes an instruction for each corpus segment.

A datatrove pipeline over the segment shards: read → generate (chunked, checkpointed) → post-filter →
write candidate pairs. Each segment's sampling seed derives from its id, so a rerun after a kill
produces exactly the pairs an uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Optional

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from pydantic import Field

from .config import ConfigError, EngineConfig, GenerationConfig, StrictModel, load_config
from .records import PAIR_SCHEMA, parquet_files, write_json
from .shards import (
    ChunkStore,
    ExecutorConfig,
    RateMeter,
    RowsReader,
    ShardWriter,
    chunked,
    count_rows,
    merge_stats,
    run_pipeline,
    seed_from,
    stable_id,
)

log = logging.getLogger(__name__)

DEFAULT_REQUEST_PATTERNS = [
    r"\?\s*$",
    r"^(please\s+|can you\s+|could you\s+|would you\s+)?(write|explain|describe|tell|give|list|summari[sz]e|"
    r"compare|create|generate|provide|show|help|make|suggest|recommend|outline|draft|compose|define|discuss|"
    r"analy[sz]e|calculate|find|identify|translate|rewrite|share|teach|walk|introduce|review|plan|design|build|"
    r"implement|convert|classify|propose|offer|present|prepare|set up|install|use|how|what|why|when|where|"
    r"which|who|whom|whose|is|are|do|does|did|can|could|should|would|will|i need|i want|i'm|i am|i have|"
    r"i'd like|my|we|help me)\b",
]
DEFAULT_REJECT_PATTERNS = [
    r"^(sure|certainly|of course|here is|here's|here are|as an ai|i'm sorry|sorry|thank you)\b",
    r"^(response|answer|output)\s*:",
    # the model talking about itself or asking for the task instead of writing one
    r"^i'?m (ready|here|happy|glad|not sure|an ai)\b",
    r"^i am (ready|here|happy|glad|an ai)\b",
    r"\bplease provide the (instruction|question|task)\b",
    r"\bwhat'?s the user'?s (task|question|request)\b",
]
_PREFIX = re.compile(r"^\s*(instruction|question|user|prompt|request|query)\s*:\s*", re.I)


class PairFilterConfig(StrictModel):
    """Post-filters on generated instructions; each drop is counted by reason and kept in rejected/."""

    min_chars: int = Field(8, ge=0)
    max_chars: int = Field(1000, ge=1)
    max_copy_overlap: float = Field(0.6, ge=0, le=1)  # share of instruction word 3-grams found in the segment
    copy_ngram: int = Field(3, ge=1)
    request_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_REQUEST_PATTERNS))
    reject_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_REJECT_PATTERNS))


class AugmentConfig(StrictModel):
    template: str = "backward"  # prompts/backward.jinja, variable `output`
    system: Optional[str] = None
    generation: GenerationConfig = GenerationConfig(max_tokens=96)
    engine: EngineConfig = EngineConfig()
    executor: ExecutorConfig = ExecutorConfig()
    filters: PairFilterConfig = PairFilterConfig()
    chunk_size: int = Field(32, ge=1)  # segments per checkpointed engine call
    max_segments: int = -1
    round: int = 0


def clean_instruction(text: str) -> str:
    text = text.strip()
    text = _PREFIX.sub("", text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def copy_overlap(instruction: str, segment: str, n: int = 3) -> float:
    iw = re.findall(r"\w+", instruction.lower())
    if len(iw) < n:
        return 0.0
    grams = _ngrams(iw, n)
    seg = _ngrams(re.findall(r"\w+", segment.lower()), n)
    return len(grams & seg) / len(grams)


class PairFilter:
    def __init__(self, cfg: PairFilterConfig) -> None:
        self.cfg = cfg
        try:
            self.request = [re.compile(p, re.I) for p in cfg.request_patterns]
            self.reject = [re.compile(p, re.I) for p in cfg.reject_patterns]
        except re.error as e:
            raise ConfigError(f"filters: invalid regular expression: {e}") from None

    def reason(self, instruction: str, segment: str) -> Optional[str]:
        if len(instruction) < self.cfg.min_chars:
            return "empty_instruction"
        if len(instruction) > self.cfg.max_chars:
            return "instruction_too_long"
        if copy_overlap(instruction, segment, self.cfg.copy_ngram) > self.cfg.max_copy_overlap:
            return "copies_segment"
        first_line = instruction.strip()
        if any(p.search(first_line[:300]) for p in self.reject):
            return "not_a_request"
        if self.request and not any(p.search(first_line) for p in self.request):
            return "not_a_request"
        return None


def backward_messages(output: str, template: str = "backward", system: Optional[str] = None) -> list[dict]:
    """The backward prompt for one text: the same builder that `train backward` trains M_yx on."""
    from .training.data import backward_messages as build

    messages = build(output, template=template)
    return ([{"role": "system", "content": system}] if system else []) + messages


class BackwardGenerator(PipelineStep):
    """Writes n instructions per segment with the backward model; outputs are checkpointed per chunk."""

    name = "backward generation"
    type = "🤖 - MODEL"

    def __init__(self, model: str, cfg: AugmentConfig, work_dir: str, total: Optional[int]) -> None:
        super().__init__()
        self.model, self.cfg, self.work_dir, self.total = model, cfg, work_dir, total

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from .engines import GenerationRequest, make_engine

        cfg, gen = self.cfg, self.cfg.generation
        store = ChunkStore(self.work_dir, rank, PAIR_SCHEMA)
        pair_filter = PairFilter(cfg.filters)
        engine = None
        params = json.dumps({"temperature": gen.temperature, "top_p": gen.top_p, "top_k": gen.top_k,
                             "max_tokens": gen.max_tokens, "seed": gen.seed, "template": cfg.template},
                            sort_keys=True)
        meter = RateMeter("segments", self.total if world_size == 1 else None, rank)
        for index, chunk in enumerate(chunked(data or [], cfg.chunk_size)):
            ids = [d.id for d in chunk]
            rows = store.load(index, ids)
            tokens = 0
            if rows is None:
                if engine is None:
                    engine = make_engine(self.model, cfg.engine)
                reqs = [GenerationRequest(
                    messages=backward_messages(d.text, cfg.template, cfg.system), n=gen.n,
                    temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k, max_tokens=gen.max_tokens,
                    stop=list(gen.stop), seed=seed_from(gen.seed, d.id), id=d.id) for d in chunk]
                results = engine.generate(reqs)
                rows = []
                for d, res in zip(chunk, results):
                    seg = d.metadata["row"]
                    tokens += sum(res.completion_tokens)
                    for k, text in enumerate(res.texts):
                        rows.append({
                            "pair_id": stable_id(d.id, k, self.model, cfg.round, params),
                            "instruction": clean_instruction(text),
                            "output": seg["text"],
                            "segment_id": seg.get("segment_id", d.id),
                            "doc_id": seg.get("doc_id"),
                            "url": seg.get("url"),
                            "backward_model": self.model,
                            "gen_params": params,
                            "round": cfg.round,
                        })
                store.save(index, ids, rows)
            else:
                self.stat_update("replayed_from_checkpoint", value=len(chunk))
            meter.update(len(chunk), tokens)
            for row in rows:
                reason = pair_filter.reason(row["instruction"], row["output"])
                self.stat_update("generated")
                yield Document(text=row["instruction"], id=row["pair_id"],
                               metadata={"row": row, "reject_reason": reason})
        meter.update(0, 0, force=True)


def is_segments_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    files = parquet_files(path)
    if not files:
        return False
    import pyarrow.parquet as pq

    return {"segment_id", "text"} <= set(pq.read_schema(files[0]).names)


def run_augment(input_path: str, model: str, output: str, config: AugmentConfig | None = None,
                prepare_config: Optional[str] = None) -> dict:
    """Generate candidate pairs for every segment under ``input_path`` into ``output``/pairs.

    ``input_path`` is a ``prepare`` output folder (or its segments/); anything else is treated as a raw
    corpus and prepared first into ``output``/prepared. Returns the stage stats (also written to stats.json).
    """
    cfg = config or AugmentConfig()
    out = Path(output)
    src = Path(input_path)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    if is_segments_folder(src):
        segments = src
    elif is_segments_folder(src / "segments"):  # a `humpback prepare` output folder
        segments = src / "segments"
    else:
        from .corpus import run_prepare  # raw corpus: prepare it first, resumably, inside the output

        run_prepare([str(src)], str(out / "prepared"), config=prepare_config)
        segments = out / "prepared" / "segments"
    total = count_rows(segments)
    if cfg.max_segments >= 0:
        total = min(total, cfg.max_segments)
    log.warning("augment: %d segments from %s with %s -> %s", total, segments, model, out / "pairs")
    pipeline = [
        RowsReader(segments, id_key="segment_id", text_key="text", limit=cfg.max_segments),
        BackwardGenerator(model, cfg, str(out / ".work" / "augment"), total),
        ShardWriter(out / "pairs", "pair", out / ".work" / "augment-stats", rejected_folder=out / "rejected",
                    work_dir=out / ".work" / "augment"),
    ]
    run_pipeline(pipeline, cfg.executor, out / ".work" / "augment-logs")
    counters = merge_stats(out / ".work" / "augment-stats")
    stats = {
        "stage": "augment",
        "model": model,
        "segments_in": total,
        "pairs_written": counters.get("written", 0),
        "dropped": {k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("dropped:")},
        "config": cfg.model_dump(),
    }
    stats["pairs_generated"] = stats["pairs_written"] + sum(stats["dropped"].values())
    write_json(stats, out / "stats.json")
    return stats


def load_augment_config(path: Optional[str], **overrides) -> AugmentConfig:
    return load_config(AugmentConfig, path, overrides)
