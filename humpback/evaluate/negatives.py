"""Typed negatives for judging a curation scorer: for every real (instruction, output) pair, a bad pair built from
real material, never from a model.

- ``shuffled``: the output with another pair's instruction (the easiest negative);
- ``neighbor``: the instruction with the output of the most similar other pair (all-MiniLM-L6-v2 cosine of the
  outputs): on topic, but an answer to another question;
- ``truncated``: the instruction with its output cut to the first sentence (when that is at most 30% of it) or
  else to its first 15%, at a word boundary: relevant but incomplete;
- ``boilerplate``: the instruction with page furniture in place of the output (cookie banners, navigation,
  "related posts", sign-up boxes, ads, footers, comment forms), from ``humpback/resources/boilerplate.jsonl``,
  a list written for this project;
- ``web-voice``: the instruction with the corpus segment closest to it (cosine of instruction and segment), a page
  on the same topic written as a page, not as an answer; needs a corpus (``--corpus``). Segments that are
  (near-)copies of the pair's own output are never chosen.

Every builder is deterministic under its seed and never returns the pair's own output.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Optional, Sequence

import numpy as np

KINDS = ("shuffled", "neighbor", "truncated", "boilerplate", "web-voice")
NEEDS_CORPUS = ("web-voice",)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[`*-])")


def parse_kinds(spec: Optional[str | Sequence[str]], have_corpus: bool) -> list[str]:
    """The kinds named in a comma list (default: all that can be built without a corpus, plus web-voice with one)."""
    from ..core.config import ConfigError

    if spec is None or spec == "all" or spec == ["all"]:
        return [k for k in KINDS if have_corpus or k not in NEEDS_CORPUS]
    kinds = [k.strip() for k in (spec.split(",") if isinstance(spec, str) else spec) if k.strip()]
    for k in kinds:
        if k not in KINDS:
            raise ConfigError(f"--negatives: unknown kind {k!r} (expected some of {', '.join(KINDS)})")
        if k in NEEDS_CORPUS and not have_corpus:
            raise ConfigError(f"--negatives {k}: needs --corpus (segments on the same topics as the pairs)")
    if "shuffled" not in kinds:
        kinds.insert(0, "shuffled")  # the top-level AUROC is the shuffled one
    return kinds


def boilerplate_snippets() -> list[str]:
    text = resources.files("humpback").joinpath("resources/boilerplate.jsonl").read_text(encoding="utf-8")
    return [json.loads(line)["text"] for line in text.splitlines() if line.strip()]


def shuffled(pairs: Sequence[dict], seed: int) -> list[dict]:
    from .backward import derangement

    perm = derangement(len(pairs), seed)
    return [{**p, "instruction": pairs[perm[i]]["instruction"]} for i, p in enumerate(pairs)]


def neighbor(pairs: Sequence[dict], vectors: np.ndarray) -> list[dict]:
    sims = vectors @ vectors.T
    out = []
    for i, p in enumerate(pairs):
        order = np.argsort(-sims[i], kind="stable")
        j = next(int(j) for j in order if int(j) != i and pairs[int(j)]["output"] != p["output"])
        out.append({**p, "output": pairs[j]["output"], "negative_source": pairs[j].get("pair_id")})
    return out


def truncate(text: str) -> str:
    """The first sentence if it is at most 30% of the text, else the first 15% cut back to a word boundary."""
    text = text.strip()
    parts = _SENTENCE_END.split(text, maxsplit=1)
    if len(parts) == 2 and len(parts[0]) <= 0.3 * len(text):
        return parts[0].strip()
    limit = max(1, int(len(text) * 0.15))
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 3 else cut).rstrip()


def truncated(pairs: Sequence[dict]) -> list[dict]:
    return [{**p, "output": truncate(p["output"])} for p in pairs]


def boilerplate(pairs: Sequence[dict], seed: int) -> list[dict]:
    snippets = boilerplate_snippets()
    rng = np.random.default_rng(seed)
    out = []
    for p in pairs:
        k = int(rng.integers(1, 4))  # one to three pieces of furniture, as a page would show them
        picks = rng.choice(len(snippets), size=k, replace=False)
        out.append({**p, "output": "\n\n".join(snippets[int(i)] for i in picks)})
    return out


def web_voice(pairs: Sequence[dict], instruction_vectors: np.ndarray, segments: Sequence[str],
              segment_vectors: np.ndarray, output_vectors: np.ndarray) -> list[dict]:
    sims = instruction_vectors @ segment_vectors.T
    copy = output_vectors @ segment_vectors.T  # a segment that is the pair's own output is no negative
    out = []
    for i, p in enumerate(pairs):
        for j in np.argsort(-sims[i], kind="stable"):
            j = int(j)
            if copy[i, j] < 0.9 and segments[j].strip() != p["output"].strip():
                out.append({**p, "output": segments[j]})
                break
    return out


def build_negatives(pairs: Sequence[dict], kinds: Sequence[str], seed: int = 0,
                    corpus: Optional[Sequence[str]] = None) -> dict[str, list[dict]]:
    """{kind: negatives, in the order of ``pairs``} for each of ``kinds``."""
    from .diversity import embed

    out: dict[str, list[dict]] = {}
    vec_out = vec_ins = None
    if {"neighbor", "web-voice"} & set(kinds):
        vec_out = embed([p["output"] for p in pairs])
    for kind in kinds:
        if kind == "shuffled":
            out[kind] = shuffled(pairs, seed)
        elif kind == "neighbor":
            out[kind] = neighbor(pairs, vec_out)
        elif kind == "truncated":
            out[kind] = truncated(pairs)
        elif kind == "boilerplate":
            out[kind] = boilerplate(pairs, seed)
        elif kind == "web-voice":
            if not corpus:
                raise ValueError("web-voice negatives need corpus segments")
            vec_ins = embed([p["instruction"] for p in pairs]) if vec_ins is None else vec_ins
            out[kind] = web_voice(pairs, vec_ins, list(corpus), embed(list(corpus)), vec_out)
        else:
            raise ValueError(f"unknown negative kind {kind!r}")
    for kind, negs in out.items():
        for p, n in zip(pairs, negs):
            if kind != "shuffled":
                assert n["output"] != p["output"], f"{kind}: a negative kept its pair's own output"
            else:
                assert n["instruction"] != p["instruction"] or len({q["instruction"] for q in pairs}) == 1
    return out


def read_corpus_segments(path: str, limit: int = 20000, seed: int = 0) -> list[str]:
    """Segment texts of a `humpback prepare` output (its segments/), a segments folder or a JSONL/Parquet file."""
    from pathlib import Path

    from ..core.records import read_records

    p = Path(path)
    if (p / "segments").is_dir():
        p = p / "segments"
    texts = []
    for _, row in read_records(p):
        t = row.get("text") or row.get("output")
        if isinstance(t, str) and t.strip():
            texts.append(t)
    if len(texts) > limit:
        rng = np.random.default_rng(seed)
        texts = [texts[int(i)] for i in sorted(rng.choice(len(texts), size=limit, replace=False))]
    return texts


__all__ = ["KINDS", "boilerplate_snippets", "build_negatives", "parse_kinds", "read_corpus_segments", "truncate"]
