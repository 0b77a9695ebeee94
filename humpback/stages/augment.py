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

from datatrove.data import Document
from pydantic import Field, model_validator

from ..core.config import ConfigError, EngineConfig, GenerationConfig, StrictModel, load_config
from ..engines.base import GenerationRequest
from ..core.model_step import Task, model_steps, rollout_stats
from ..core.records import PAIR_SCHEMA, parquet_files, parquet_schema, write_json
from ..core.shards import (ExecutorConfig, RowsReader, ShardWriter, Step, count_rows, merge_stats, run_then_finish,
                           seed_from, stable_id)

log = logging.getLogger("humpback.augment")

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


class SelectionConfig(StrictModel):
    """Best-of-k: which model judges the candidates, and on how much of each segment."""

    model: Optional[str] = None  # None: the backward model's base model (humpback.core.models.base_model_of)
    # Candidates are compared on the start of the segment only: the request is recoverable from it, and
    # scoring k candidates on whole 3000-character segments would cost more than generating them.
    max_output_chars: int = Field(2000, ge=100)
    engine: Optional[EngineConfig] = None  # None: augment.engine


class AugmentConfig(StrictModel):
    template: str = "backward"  # humpback/resources/prompts/backward.jinja, variable `output`
    system: Optional[str] = None
    generation: GenerationConfig = GenerationConfig(max_tokens=96)
    # Best-of-k backtranslation: sample this many instructions per segment and keep the accepted one that the
    # selection model finds most explanatory (highest PMI(segment | instruction)); every candidate, its PMI
    # and its filter verdict go into the pair's `candidates` provenance. 1: keep every sample (generation.n).
    candidates: int = Field(1, ge=1)
    selection: SelectionConfig = SelectionConfig()
    engine: EngineConfig = EngineConfig()
    executor: ExecutorConfig = ExecutorConfig()
    filters: PairFilterConfig = PairFilterConfig()
    chunk_size: int = Field(32, ge=1)  # segments per checkpointed engine call
    max_segments: int = -1
    round: int = 0

    @model_validator(mode="after")
    def _one_per_segment(self) -> "AugmentConfig":
        if self.candidates > 1 and self.generation.n != 1:
            raise ValueError(f"generation.n: must be 1 when candidates is {self.candidates} (best-of-k keeps one "
                             "instruction per segment)")
        return self


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
    from .train.data import backward_messages as build

    messages = build(output, template=template)
    return ([{"role": "system", "content": system}] if system else []) + messages


def selection_model(cfg: AugmentConfig, backward_model: str) -> str:
    from ..core.models import base_model_of

    return cfg.selection.model or base_model_of(backward_model)


def gen_params(cfg: AugmentConfig, backward_model: str | None = None) -> str:
    gen = cfg.generation
    params = {"temperature": gen.temperature, "top_p": gen.top_p, "top_k": gen.top_k,
              "max_tokens": gen.max_tokens, "seed": gen.seed, "template": cfg.template}
    if cfg.candidates > 1:
        params |= {"candidates": cfg.candidates, "selection_max_output_chars": cfg.selection.max_output_chars,
                   "selection_model": selection_model(cfg, backward_model) if backward_model else cfg.selection.model}
    return json.dumps(params, sort_keys=True)


def backward_requests(doc_id: str, text: str, cfg: AugmentConfig) -> GenerationRequest:
    gen = cfg.generation
    return GenerationRequest(
        messages=backward_messages(text, cfg.template, cfg.system), n=max(gen.n, cfg.candidates),
        temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k, max_tokens=gen.max_tokens,
        stop=list(gen.stop), seed=seed_from(gen.seed, doc_id), id=doc_id)


def pair_rows(doc_id: str, seg: dict, texts: list[str], model: str, cfg: AugmentConfig, params: str,
              candidates: list[dict] | None = None) -> list[dict]:
    return [{
        "pair_id": stable_id(doc_id, k, model, cfg.round, params),
        "instruction": clean_instruction(text),
        "output": seg["text"],
        "segment_id": seg.get("segment_id", doc_id),
        "doc_id": seg.get("doc_id"),
        "url": seg.get("url"),
        "backward_model": model,
        "gen_params": params,
        "round": cfg.round,
        "candidates": json.dumps(candidates, ensure_ascii=False) if candidates is not None else None,
    } for k, text in enumerate(texts)]


def best_of_k(segments: list[str], candidate_lists: list[list[str]], pair_filter: "PairFilter", engine,
              max_output_chars: int) -> list[tuple[str, list[dict]]]:
    """For each segment, the accepted candidate with the highest PMI(segment | candidate) under ``engine``
    (the first candidate when none is accepted, so that it is rejected with its reason), and every
    candidate with its PMI and filter verdict. Only accepted candidates are scored."""
    from ..evaluate.backward import select
    from .scorers import conditional_logprobs, pmi_of

    cleaned = [[clean_instruction(t) for t in texts] for texts in candidate_lists]
    reasons = [[pair_filter.reason(c, seg) for c in cands] for cands, seg in zip(cleaned, segments)]
    accepted = [[c for c, r in zip(cands, rs) if r is None] for cands, rs in zip(cleaned, reasons)]
    both = conditional_logprobs(engine, segments, accepted, max_output_chars=max_output_chars)
    out = []
    for texts, cands, rs, (u, conds) in zip(candidate_lists, cleaned, reasons, both):
        scores = iter(pmi_of(u, c) for c in conds)
        pmis = [next(scores) if r is None else None for r in rs]
        j = select(pmis, rs, len(cands))
        info = [{"instruction": c, "pmi": None if p is None else round(p, 5), "reject_reason": r}
                for c, p, r in zip(cands, pmis, rs)]
        out.append((texts[0 if j is None else j], info))
    return out


class AugmentTask(Task):
    """Backward generation as a model-step task: a segment becomes its candidate pairs, post-filtered."""

    name = "backward generation"
    label = "segments"
    schema = PAIR_SCHEMA
    stage = "augment"
    text_key = "instruction"
    row_stat = "generated"

    def __init__(self, model: str, cfg: AugmentConfig, engine_dir: str | None = None) -> None:
        self.model, self.cfg = model, cfg
        self.engine_dir = engine_dir  # the selection model's request cache and token ledger (endpoint)
        self.pair_filter = PairFilter(cfg.filters)
        self.judge = None
        self._params: str | None = None

    @property
    def params(self) -> str:
        # computed where the task runs: the backward model may not exist yet when a Slurm stage is submitted
        if self._params is None:
            self._params = gen_params(self.cfg, self.model)
        return self._params

    def run(self, engine, docs: list[Document]) -> tuple[list[dict], int]:
        from ..engines import make_engine

        cfg = self.cfg
        results = engine.generate([backward_requests(d.id, d.text, cfg) for d in docs])
        tokens = sum(sum(res.completion_tokens) for res in results)
        rows = []
        if cfg.candidates > 1:
            if self.judge is None:
                self.judge = make_engine(selection_model(cfg, self.model), cfg.selection.engine or cfg.engine,
                                         run_dir=self.engine_dir)
            picked = best_of_k([d.text for d in docs], [res.texts for res in results], self.pair_filter,
                               self.judge, cfg.selection.max_output_chars)
            for d, (text, info) in zip(docs, picked):
                rows.extend(pair_rows(d.id, d.metadata["row"], [text], self.model, cfg, self.params, info))
        else:
            for d, res in zip(docs, results):
                rows.extend(pair_rows(d.id, d.metadata["row"], res.texts, self.model, cfg, self.params))
        return rows, tokens

    def reject_reason(self, row: dict) -> Optional[str]:
        return self.pair_filter.reason(row["instruction"], row["output"])

    async def rollout(self, engine, document: Document, pool) -> dict:
        [res] = await engine.agenerate([backward_requests(document.id, document.text, self.cfg)])
        return {"texts": res.texts, "finish_reasons": res.finish_reasons,
                "completion_tokens": res.completion_tokens}

    def rollout_rows(self, document: dict) -> list[dict]:
        meta = document.get("metadata") or {}
        texts = [t for r in meta.get("rollout_results") or [] for t in r["texts"]]
        return pair_rows(str(document["id"]), meta["row"], texts, self.model, self.cfg, self.params)

    def close(self) -> None:
        if self.judge is not None:
            self.judge.close()
            self.judge = None


def is_segments_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    files = parquet_files(path)
    if not files:
        return False

    return {"segment_id", "text"} <= set(parquet_schema(files[0]).names)


def _segments_folder(src: Path, out: Path, prepare_config: str | None, depends) -> Path:
    if is_segments_folder(src):
        return src
    if is_segments_folder(src / "segments"):  # a `humpback prepare` output folder
        return src / "segments"
    if depends is not None:  # a prepare stage queued before this one (Slurm): its segments do not exist yet
        return src if src.name == "segments" else src / "segments"
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    from .prepare import run_prepare  # raw corpus: prepare it first, resumably, inside the output

    run_prepare([str(src)], str(out / "prepared"), config=prepare_config)
    return out / "prepared" / "segments"


def finish_augment(out: str, model: str, config: dict, segments: str) -> dict:
    """Stage statistics from the tasks' counters (also a job of its own on Slurm)."""
    cfg = AugmentConfig.model_validate(config)
    out_p = Path(out)
    total = count_rows(segments)
    if cfg.max_segments >= 0:
        total = min(total, cfg.max_segments)
    counters = merge_stats(out_p / ".work" / "augment-stats")
    stats = {
        "stage": "augment",
        "model": model,
        "segments_in": total,
        "pairs_written": counters.get("written", 0),
        "dropped": {k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("dropped:")},
        "engine": {k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("engine:")},
        "config": cfg.model_dump(),
    }
    if cfg.engine.kind == "vllm":
        stats["engine"] = rollout_stats(out_p / ".work" / "augment-vllm", "augment", "segments")
    stats["pairs_generated"] = stats["pairs_written"] + sum(stats["dropped"].values())
    write_json(stats, out_p / "stats.json")
    return stats


def augment_steps(segments: Path, model: str, out: Path, cfg: AugmentConfig, total: int | None) -> list[Step]:
    """The executor runs of the stage: generate pairs (on vllm: generate, then turn rollouts into pairs)."""
    work = out / ".work"
    writer = ShardWriter(out / "pairs", "pair", work / "augment-stats", rejected_folder=out / "rejected",
                         work_dir=work / "augment")
    reader = RowsReader(segments, id_key="segment_id", text_key="text", limit=cfg.max_segments)
    task = AugmentTask(model, cfg, str(work / "augment-engine"))
    return model_steps(("augment-generate", "augment-pairs"), reader, task, writer, model, cfg.engine,
                       logs=work / "augment-logs", chunks=work / "augment", engine_dir=work / "augment-engine",
                       total=total, chunk_size=cfg.chunk_size, tasks=cfg.executor.tasks,
                       vllm_work=work / "augment-vllm", use_chat=True, requests_per_document=cfg.generation.n)


def run_augment(input_path: str, model: str, output: str, config: AugmentConfig | None = None,
                prepare_config: str | None = None, depends=None) -> dict:
    """Generate candidate pairs for every segment under ``input_path`` into ``output``/pairs.

    ``input_path`` is a ``prepare`` output folder (or its segments/); anything else is treated as a raw
    corpus and prepared first into ``output``/prepared. Returns the stage stats (also written to stats.json).
    With ``executor.kind: slurm`` the stage is submitted (after ``depends``: a Slurm job id or executor) and
    the returned dict names the last job; its stats.json is written by that job.
    """
    cfg = config or AugmentConfig()
    depends = cfg.executor.after(depends)
    out = Path(output)
    segments = _segments_folder(Path(input_path), out, prepare_config, depends)
    if cfg.engine.kind == "vllm" and cfg.candidates > 1:
        raise ConfigError("augment.candidates > 1 (best-of-k) needs continuation log-probabilities from the "
                          "selection model, which the vllm engine's InferenceRunner path does not score; use engine "
                          "kind endpoint against the vLLM server, or candidates: 1")
    if cfg.engine.kind == "vllm" and cfg.executor.kind != "slurm":
        from ..engines.vllm_engine import check_server_installed

        check_server_installed(cfg.engine)
    total = None
    if segments.exists():
        total = count_rows(segments)
        if cfg.max_segments >= 0:
            total = min(total, cfg.max_segments)
    log.warning("augment: %s segments from %s with %s (%s engine, %s executor) -> %s",
                "?" if total is None else total, segments, model, cfg.engine.kind, cfg.executor.kind, out / "pairs")
    steps = augment_steps(segments, model, out, cfg, total)
    done = run_then_finish("augment", steps, cfg.executor, finish_augment, (str(out), model, cfg.model_dump(),
                           str(segments)), out / ".work" / "augment-finish-logs", depends=depends,
                           dry_run_dir=out / ".work" / "slurm-dry-run")
    if cfg.executor.kind != "slurm":
        return done
    # counts are None until the last job has written stats.json
    return {"stage": "augment", "model": model, "submitted": True, "executor": "slurm", "job_id": done,
            "dry_run": cfg.executor.slurm.dry_run, "output": str(out), "segments_in": total,
            "pairs_generated": None, "pairs_written": None, "dropped": {}}


def load_augment_config(path: Optional[str], **overrides) -> AugmentConfig:
    return load_config(AugmentConfig, path, overrides)
