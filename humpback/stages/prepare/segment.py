"""Segmentation as in the paper: a segment is a heading plus the text under it, sub-headings included.

Headings are markdown ATX (``## Title``) or setext (a line underlined with ``===`` / ``---``); lines inside
fenced code blocks are never headings (a ``# comment`` in a shell snippet is not a section). For every
section the largest self-contained unit within the length limits is kept: a section that fits is one segment;
one that is too long is split into its own intro text and its sub-sections. A segment's text is the exact
slice ``document[char_start:char_end]`` of the (extracted) document, heading line included.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Optional

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from .config import SegmentConfig

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_LIST_OR_BLOCK = re.compile(r"^ {0,3}(?:[-*+>|]|\d+[.)])(?:\s|$)")
_TAGS = re.compile(r"<[^>]+>")
_SENT_SPLIT = re.compile(r"(?<=[.!?;:])\s+|\n+")
_WORD = re.compile(r"\w+", re.UNICODE)
_FENCED = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^ {0,3}\1[ \t]*$|\Z)", re.M | re.S)
_HEADING_MARK = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*)$", re.M)
_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-{3,}|\*{3,}|_{3,})[ \t]*$", re.M)
_IMAGE = re.compile(r"!\[[^\]\n]*\]\([^)\n]*\)")
_LINK_MD = re.compile(r"\[([^\]\n]*)\]\([^)\n]*\)")
_EMPHASIS = re.compile(r"\*\*|__|(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w)")
_HTML_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_TABLE_RULE = re.compile(r"^[ \t]*\|?(?:[ \t]*:?-{2,}:?[ \t]*\|?)+[ \t]*$", re.M)
_TABLE_PIPE = re.compile(r"[ \t]*\|[ \t]*")
_SOFT_BREAK = re.compile(r"(?<=\S)[ \t]*\n(?![ \t]*(?:\n|[-*+>•] |\d+[.)] |#))[ \t]*")


def prose_view(markdown: str) -> str:
    """The natural-language part of a markdown segment: code blocks dropped, markup removed, words kept."""
    text = _FENCED.sub("\n", markdown)
    text = _HEADING_MARK.sub(r"\1\n", text)  # a heading is a paragraph of its own
    text = _UNDERLINE.sub("", text)
    text = _IMAGE.sub("", text)  # badges and pictures are not prose
    text = _LINK_MD.sub(r"\1", text)
    text = text.replace("`", "")
    text = _EMPHASIS.sub("", text)
    text = _HTML_TAG.sub("", text)
    text = _TABLE_RULE.sub("", text)
    text = _TABLE_PIPE.sub(" ", text)
    # hard-wrapped paragraphs (common in markdown sources) become one line each, so that line-based heuristics
    # (FineWeb's share of lines ending in punctuation, short lines) see paragraphs, not wrap points
    text = _SOFT_BREAK.sub(" ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


@dataclass
class Section:
    level: int  # 0 for the text before the first heading
    heading: str
    start: int  # char offset of the heading line (or of the document for the preamble)
    body_start: int  # first char after the heading line(s)
    end: int = -1
    children: list["Section"] = field(default_factory=list)


_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_STAR_EMPHASIS = re.compile(r"(\*{1,3})(?=\S)(.+?)(?<=\S)\1")
# underscores emphasise only at word boundaries, so snake_case and __init__ inside words stay as written
_UNDERSCORE_EMPHASIS = re.compile(r"(?<!\w)(_{1,3})(?=\S)(.+?)(?<=\S)\1(?!\w)")


def clean_heading(raw: str) -> str:
    """The heading as a reader sees it: markdown emphasis, links, images, tags and escapes removed; code
    spans keep their text as written."""
    text = _IMAGE.sub("", raw)
    text = _LINK_MD.sub(r"\1", text)
    text = _TAGS.sub("", text)
    parts = []
    for i, piece in enumerate(_CODE_SPAN.split(text)):
        # re.split with two groups yields: text, fence, code, text, fence, code, ...
        if i % 3 == 2:
            parts.append(piece.strip())
        elif i % 3 == 0:
            piece = _STAR_EMPHASIS.sub(r"\2", piece)
            piece = _UNDERSCORE_EMPHASIS.sub(r"\2", piece)
            parts.append(re.sub(r"\\([\\`*_{}\[\]()#+\-.!])", r"\1", piece))
    return re.sub(r"\s+", " ", "".join(parts)).strip(" \t#¶")


def parse_sections(text: str) -> list[Section]:
    """Flat list of sections in document order: the preamble (level 0) then one per heading."""
    lines = text.split("\n")
    offsets = []
    pos = 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    sections = [Section(level=0, heading="", start=0, body_start=0)]
    fence: Optional[str] = None
    para_start: Optional[int] = None  # index of the first line of the current paragraph, for setext headings
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if fence is not None:
            if (
                m
                and m.group(1)[0] == fence[0]
                and len(m.group(1)) >= len(fence)
                and not line.strip()[len(m.group(1)) :].strip()
            ):
                fence = None
            continue
        if m:
            fence = m.group(1)
            para_start = None
            continue
        if not line.strip():
            para_start = None
            continue
        atx = _ATX.match(line)
        if atx:
            heading = clean_heading(atx.group(2) or "")
            # an empty '#' line is a permalink mark on many sites (Node.js docs), not a section
            if heading:
                end_of_line = offsets[i] + len(line) + 1
                sections.append(
                    Section(
                        level=len(atx.group(1)),
                        heading=heading,
                        start=offsets[i],
                        body_start=min(end_of_line, len(text)),
                    )
                )
            para_start = None
            continue
        setext = _SETEXT.match(line)
        if setext and para_start is not None:
            level = 1 if setext.group(1)[0] == "=" else 2
            heading = " ".join(lines[j].strip() for j in range(para_start, i))
            end_of_line = offsets[i] + len(line) + 1
            sections.append(
                Section(
                    level=level,
                    heading=clean_heading(heading),
                    start=offsets[para_start],
                    body_start=min(end_of_line, len(text)),
                )
            )
            para_start = None
            continue
        if para_start is None:
            # list items, quotes and table rows do not start a paragraph that a '---' could underline
            para_start = None if _LIST_OR_BLOCK.match(line) else i
    return sections


def build_tree(text: str) -> tuple[int, list[Section]]:
    """Nest the headings (each owns everything up to the next heading of the same or a higher level).

    Returns where the preamble (text before the first heading) ends, and the top-level sections.
    """
    top: list[Section] = []
    stack: list[Section] = []
    for sec in parse_sections(text)[1:]:
        while stack and stack[-1].level >= sec.level:
            stack.pop().end = sec.start
        (stack[-1].children if stack else top).append(sec)
        stack.append(sec)
    for sec in stack:
        sec.end = len(text)
    return (top[0].start if top else len(text)), top


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


@dataclass
class Candidate:
    heading: str
    start: int
    end: int
    reason: Optional[str] = None  # None: kept


class SegmentRules:
    """The paper's segment rules; ``judge`` gives the drop reason, or None to keep."""

    def __init__(self, cfg: SegmentConfig):
        self.cfg = cfg
        words = sorted(
            {k.strip().lower() for k in cfg.navigation_keywords if k.strip()}, key=len, reverse=True
        )
        self._nav = (
            # "channel.subscribe(fn)" names an API, it is not a "Subscribe" box
            re.compile(
                r"(?<![\w.])(?:"
                + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in words)
                + r")s?(?![\w(])"
            )
            if words
            else None
        )

    def heading_reason(self, heading: str) -> Optional[str]:
        if not heading.strip():
            return "heading_empty"
        cased = [c for c in heading if c.lower() != c.upper()]
        if self.cfg.drop_all_caps_headings and len(cased) >= 2 and all(c.isupper() for c in cased):
            return "heading_all_caps"
        if self._nav is not None and self._nav.search(heading.lower()):
            return "heading_navigation"
        return None

    def repetition(self, text: str) -> float:
        """Share of the prose's sentences that nearly repeat an earlier one: their word n-gram sets have a
        Jaccard similarity above ``max_sentence_jaccard``. Code blocks, whose lines legitimately repeat, are
        left out; sentences shorter than ``min_sentence_words`` are not counted."""
        n = self.cfg.sentence_ngram
        grams: list[frozenset] = []
        repeated = 0
        for sent in _SENT_SPLIT.split(prose_view(text)):
            words = _WORD.findall(sent.lower())
            if len(words) < max(self.cfg.min_sentence_words, n):
                continue
            g = frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
            if any(len(g & h) > self.cfg.max_sentence_jaccard * len(g | h) for h in grams):
                repeated += 1
            grams.append(g)
        return repeated / len(grams) if grams else 0.0

    def judge(self, text: str, heading: str, start: int, end: int) -> Optional[str]:
        reason = self.heading_reason(heading)
        if reason:
            return reason
        length = end - start
        if length < self.cfg.min_chars:
            return "too_short"
        if length > self.cfg.max_chars:
            return "too_long"
        if (
            self.cfg.max_sentence_jaccard < 1.0
            and self.repetition(text[start:end]) > self.cfg.max_repeated_sentences
        ):
            return "repetitive"
        return None


def segment_document(text: str, rules: SegmentRules, title: Optional[str] = None) -> list[Candidate]:
    """Every candidate segment of a document, in order, each with its drop reason (None when kept)."""
    preamble_end, top = build_tree(text)
    out: list[Candidate] = []
    pre_start, pre_end = _trim(text, 0, preamble_end)
    if pre_end > pre_start:
        heading = title if (title and rules.cfg.title_as_heading) else ""
        out.append(Candidate(heading, pre_start, pre_end, rules.judge(text, heading, pre_start, pre_end)))
    for sec in top:
        _visit(text, sec, rules, out)
    return out


def _visit(text: str, sec: Section, rules: SegmentRules, out: list[Candidate]) -> None:
    start, end = _trim(text, sec.start, sec.end)
    if end - start > rules.cfg.max_chars and sec.children:
        # too long as a whole: its own text up to the first sub-heading, then each sub-section
        intro_start, intro_end = _trim(text, sec.start, sec.children[0].start)
        if intro_end - intro_start > len(text[sec.start : sec.body_start].strip()):
            out.append(
                Candidate(
                    sec.heading,
                    intro_start,
                    intro_end,
                    rules.judge(text, sec.heading, intro_start, intro_end),
                )
            )
        for child in sec.children:
            _visit(text, child, rules, out)
        return
    if end > start:
        out.append(Candidate(sec.heading, start, end, rules.judge(text, sec.heading, start, end)))


def segment_id(source: str, doc_id: str, start: int, end: int, text: str) -> str:
    """Stable over reruns and over moves of the corpus: a hash of where the segment comes from (its file's path
    relative to the input given, the document, the span) and what it says."""
    h = hashlib.sha256()
    for part in (source or "", doc_id or "", str(start), str(end), text):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()[:32]


class Segmenter(PipelineStep):
    """One document in, its kept segments out (each a Document with the provenance of DESIGN.md)."""

    type = "✂️ - SEGMENT"
    name = "✂️ heading segments"

    def __init__(self, cfg: SegmentConfig):
        super().__init__()
        self.cfg = cfg
        self.rules = SegmentRules(cfg)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                meta = doc.metadata
                candidates = segment_document(doc.text, self.rules, meta.get("title"))
            self.stat_update("documents")
            kept = 0
            for c in candidates:
                self.stat_update("candidates")
                if c.reason:
                    self.stat_update("dropped", f"dropped_{c.reason}")
                    continue
                kept += 1
                seg_text = doc.text[c.start : c.end]
                source, doc_id = meta.get("source") or "", meta.get("doc_id") or doc.id
                sid = segment_id(meta.get("source_key") or source, doc_id, c.start, c.end, seg_text)
                self.stat_update("forwarded")
                yield Document(
                    text=seg_text,
                    id=sid,
                    metadata={
                        "heading": c.heading,
                        "doc_id": doc_id,
                        "url": meta.get("url"),
                        "source": source,
                        "char_start": c.start,
                        "char_end": c.end,
                    },
                )
            if not kept:
                self.stat_update("documents_without_segments")
