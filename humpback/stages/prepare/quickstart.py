"""An offline quickstart corpus: the long descriptions (READMEs) of the installed Python distributions.

Every machine that runs humpback already has these texts in its virtual environment, so the quickstart
needs no download and no hub. They are real human-written prose with headings (installation, usage,
features, FAQ ...), which is the shape the backtranslation pipeline expects from web text. Each text stays
under its package's own license; the ``license`` field records it per document, and humpback only builds
the file locally (it never ships or redistributes these texts).

Markdown descriptions are used as written; reStructuredText ones (``include_rst``, on by default: on the
project venv they add about 40% more sections) get their section titles rewritten. Headings end up in ATX
form (``# Title``) because that is what the segmenter splits on: setext headings in Markdown (``Title``
over ``====``) and RST section titles are converted.
Badge rows, logo images, HTML-only lines and HTML comments are removed since they carry no prose, and so
are embedded release notes (``Changelog``, ``v2.1.0 (2024-01-02)`` sections): lists of pull-request links
that nobody would write an instruction for. Code blocks are kept verbatim (the corpus filters decide).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as importlib_metadata
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ...core.records import write_jsonl

log = logging.getLogger("humpback.quickstart_corpus")

SOURCE = "importlib.metadata"
# humpback's own README describes this tool, not the world; including it would also make the corpus change
# with every edit of the repository README.
DEFAULT_EXCLUDE = ("humpback",)

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^\s{0,3}(#{1,6})(?:[ \t]+|$)(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^\s{0,3}(=+|-+)[ \t]*$")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_MD_IMAGE = r"!\[[^\]]*\]\([^)]*\)"
_MD_IMAGE_REF = r"!\[[^\]]*\]\[[^\]]*\]"
_BADGE = rf"(?:\[\s*(?:{_MD_IMAGE}|{_MD_IMAGE_REF})\s*\](?:\([^)]*\)|\[[^\]]*\])|{_MD_IMAGE}|{_MD_IMAGE_REF})"
_BADGE_LINE = re.compile(rf"^\s*(?:{_BADGE}\s*)+$")
_HTML_ONLY_LINE = re.compile(r"^\s*(?:<[^>]*>\s*)+$")
_RST_ADORNMENT = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")
# A row of substitution references (badges), possibly inside a line block ("|  |downloads| |stars|").
_RST_SUBST_LINE = re.compile(r"^\s*(?:\|\s+)?(?:\|[^|\s][^|]*\|_{0,2}\s*)+$")
_RST_KEEP_BODY = re.compile(r"^\.\.\s+(?:code-block|code|sourcecode|highlight|note|warning|tip|important)::")
_SLUG = re.compile(r"[-_.]+")
# Release notes are lists of pull-request links, not prose a person would ask for; many READMEs embed them.
_CHANGELOG_TITLE = re.compile(
    r"^(?:change\s*log|changes|history|release\s+(?:notes|history)|what'?s\s+new|unreleased|new\s+contributors)\b"
    r"|^\[?v?\d+\.\d+(?:\.\d+)*\w*\]?(?:\s|$)", re.IGNORECASE)


def normalize_name(name: str) -> str:
    """PEP 503 normalised project name, so ``PyYAML`` and ``pyyaml`` are one distribution."""
    return _SLUG.sub("-", name).lower()


def _fence_mask(lines: list[str]) -> list[bool]:
    """True for lines inside (or delimiting) a fenced code block, where '#' starts a comment, not a heading."""
    mask = []
    fence: str | None = None
    for line in lines:
        m = _FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)[0] * len(m.group(1))
                mask.append(True)
            else:
                mask.append(False)
        else:
            mask.append(True)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):]:
                fence = None
    return mask


def clean_markdown(text: str) -> str:
    """Drop non-prose lines (badges, logos, HTML-only lines, comments) and turn setext headings into ATX."""
    text = _HTML_COMMENT.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = text.split("\n")
    mask = _fence_mask(lines)
    out: list[str] = []
    for i, line in enumerate(lines):
        if mask[i]:
            out.append(line)
            continue
        if _BADGE_LINE.match(line) or _HTML_ONLY_LINE.match(line):
            continue
        m = _SETEXT_UNDERLINE.match(line)
        # A setext underline only makes a heading of a preceding non-blank paragraph line (CommonMark);
        # after a blank line '---' is a thematic break and is kept as is.
        if m and out and out[-1].strip() and not (i > 0 and mask[i - 1]) and not _ATX.match(out[-1]) \
                and not out[-1].lstrip().startswith(("|", "-", "*", ">")):
            level = 1 if m.group(1)[0] == "=" else 2
            out[-1] = "#" * level + " " + out[-1].strip()
            continue
        out.append(line)
    return _collapse_blank_lines("\n".join(out))


def rst_to_markdown_headings(text: str) -> str:
    """Rewrite reStructuredText section titles as ATX headings and drop badge/image/link-target markup.

    Title levels follow the order in which adornment styles first appear, as RST defines them. Other
    markup stays as written: it is still readable text.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    styles: list[tuple[str, bool]] = []
    out: list[str] = []
    i = 0
    n = len(lines)

    def level_of(style: tuple[str, bool]) -> int:
        if style not in styles:
            styles.append(style)
        return min(styles.index(style) + 1, 6)

    while i < n:
        line = lines[i]
        # Overlined title: adornment / title / same adornment.
        if _RST_ADORNMENT.match(line) and i + 2 < n and lines[i + 1].strip() \
                and lines[i + 2].strip() == line.strip() and len(line.strip()) >= len(lines[i + 1].strip()):
            out.append("#" * level_of((line.strip()[0], True)) + " " + lines[i + 1].strip())
            i += 3
            continue
        # Underlined title: non-blank unindented text line followed by an adornment at least as long.
        if line.strip() and not line[0].isspace() and i + 1 < n and _RST_ADORNMENT.match(lines[i + 1]) \
                and len(lines[i + 1].strip()) >= len(line.strip()) and not _RST_ADORNMENT.match(line):
            out.append("#" * level_of((lines[i + 1].strip()[0], False)) + " " + line.strip())
            i += 2
            continue
        if line.startswith(".. "):
            keep_body = bool(_RST_KEEP_BODY.match(line))
            i += 1
            # The directive's body is the following indented block (blank lines inside it included).
            while i < n and (not lines[i].strip() or lines[i][0].isspace()):
                if lines[i].strip() and not lines[i].lstrip().startswith(":") and keep_body:
                    out.append(lines[i])
                elif not lines[i].strip() and keep_body:
                    out.append("")
                i += 1
            continue
        if _RST_SUBST_LINE.match(line):
            i += 1
            continue
        out.append(line)
        i += 1
    return _collapse_blank_lines("\n".join(out))


def _collapse_blank_lines(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def heading_sections(text: str) -> list[tuple[str, str]]:
    """Split ATX-headed Markdown into (heading, section text) pairs, ignoring '#' lines in code fences.

    Text before the first heading is returned with an empty heading. This is a simple counting aid, not
    the pipeline's segmenter.
    """
    lines = text.split("\n")
    mask = _fence_mask(lines)
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line, in_code in zip(lines, mask):
        m = None if in_code else _ATX.match(line)
        if m and m.group(2).strip():
            sections.append((m.group(2).strip(), [line]))
        else:
            sections[-1][1].append(line)
    result = [(h, "\n".join(body).strip()) for h, body in sections]
    return [(h, body) for h, body in result if body]


def drop_changelog_sections(text: str) -> str:
    """Remove sections titled like release notes (``Changelog``, ``v2.1.0 (2024-01-02)`` ...) with their subsections."""
    lines = text.split("\n")
    mask = _fence_mask(lines)
    out: list[str] = []
    skip_level: int | None = None
    for line, in_code in zip(lines, mask):
        m = None if in_code else _ATX.match(line)
        if m and m.group(2).strip():
            level = len(m.group(1))
            if skip_level is not None and level <= skip_level:
                skip_level = None
            title = re.sub(r"^[^\w\[]+", "", m.group(2).strip())  # leading emoji or punctuation
            if skip_level is None and _CHANGELOG_TITLE.match(title):
                skip_level = level
        if skip_level is None:
            out.append(line)
    return _collapse_blank_lines("\n".join(out))


def count_headings(text: str) -> int:
    return sum(1 for h, _ in heading_sections(text) if h)


def count_sections(text: str, min_chars: int = 600, max_chars: int = 3000) -> int:
    """Number of heading-delimited sections whose length (heading line included) is within the bounds."""
    return sum(1 for h, body in heading_sections(text) if h and min_chars <= len(body) <= max_chars)


def _first_line(value: str) -> str:
    for line in value.splitlines():
        if line.strip():
            return line.strip()
    return ""


def distribution_license(meta) -> str:
    """The license as the distribution declares it: License-Expression, a short License field, or classifiers.

    Some packages put the whole license text into ``License``; then the classifiers name it better, and
    failing those the text's first line does.
    """
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return expression
    license_field = (meta.get("License") or "").strip()
    if license_field.upper() == "UNKNOWN":
        license_field = ""
    if license_field and "\n" not in license_field and len(license_field) <= 100:
        return license_field
    classifiers = [c.split("::")[-1].strip() for c in (meta.get_all("Classifier") or [])
                   if c.startswith("License ::") and c.count("::") >= 2]
    if classifiers:
        return " OR ".join(dict.fromkeys(classifiers))
    if license_field:
        return _first_line(license_field)[:100]
    return "unknown (see the project page)"


def distribution_url(meta, name: str) -> str:
    home = (meta.get("Home-page") or "").strip()
    if home and home.upper() != "UNKNOWN":
        return home
    urls = []
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if url.strip():
            urls.append((label.strip().lower(), url.strip()))
    for wanted in ("homepage", "home", "source", "source code", "repository", "github"):
        for label, url in urls:
            if label == wanted:
                return url
    if urls:
        return urls[0][1]
    return f"https://pypi.org/project/{normalize_name(name)}/"


@dataclass
class QuickstartReport:
    output: str
    scanned: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    chars: int = 0
    headings: int = 0
    sections_in_range: int = 0
    section_bounds: tuple[int, int] = (600, 3000)

    def summary(self) -> str:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        lo, hi = self.section_bounds
        return (f"scanned {self.scanned} installed distributions\n"
                f"wrote {self.written} documents ({self.chars} chars, {self.headings} headings) to {self.output}\n"
                f"sections of {lo}-{hi} chars under a heading: {self.sections_in_range}\n"
                f"skipped: {skipped}")


def iter_quickstart_docs(
    min_chars: int = 1500,
    min_headings: int = 3,
    include_rst: bool = True,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    distributions: Iterable | None = None,
    skipped: Counter | None = None,
    drop_changelog: bool = True,
) -> Iterator[dict]:
    """Corpus documents from installed distributions, sorted by normalised name, one per distribution.

    ``distributions`` defaults to ``importlib.metadata.distributions()``; when a name is installed on more
    than one path, the first one (the one Python imports) wins. Documents with identical text are kept once.
    """
    skipped = skipped if skipped is not None else Counter()
    excluded = {normalize_name(e) for e in exclude}
    by_name: dict[str, object] = {}
    for dist in distributions if distributions is not None else importlib_metadata.distributions():
        name = dist.metadata.get("Name")
        if not name:
            skipped["no_name"] += 1
            continue
        key = normalize_name(name)
        if key in by_name:
            skipped["same_name_on_another_path"] += 1
            continue
        by_name[key] = dist
    seen_text: set[str] = set()
    for key in sorted(by_name):
        if key in excluded:
            skipped["excluded"] += 1
            continue
        meta = by_name[key].metadata
        content_type = (meta.get("Description-Content-Type") or "").split(";")[0].strip().lower()
        description = meta.get("Description") or meta.get_payload() or ""
        if not isinstance(description, str):
            description = ""
        if content_type == "text/markdown":
            text = clean_markdown(description)
        elif content_type == "text/x-rst" and include_rst:
            text = rst_to_markdown_headings(description)
        else:
            skipped["not_markdown" if not include_rst else "not_markdown_or_rst"] += 1
            continue
        if drop_changelog:
            text = drop_changelog_sections(text)
        if len(text) < min_chars:
            skipped["too_short"] += 1
            continue
        if count_headings(text) < min_headings:
            skipped["too_few_headings"] += 1
            continue
        digest = hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()
        if digest in seen_text:
            skipped["duplicate_text"] += 1
            continue
        seen_text.add(digest)
        name = meta["Name"]
        yield {
            "id": f"pypi:{key}",
            "text": text,
            "url": distribution_url(meta, name),
            "source": SOURCE,
            "license": distribution_license(meta),
        }


def build_quickstart_corpus(
    output_jsonl: str | os.PathLike,
    min_chars: int = 1500,
    min_headings: int = 3,
    include_rst: bool = True,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    section_bounds: tuple[int, int] = (600, 3000),
    drop_changelog: bool = True,
) -> QuickstartReport:
    """Write the quickstart corpus JSONL (``id, text, url, source, license``) and report what it holds."""
    report = QuickstartReport(output=str(output_jsonl), section_bounds=section_bounds)
    dists = list(importlib_metadata.distributions())
    report.scanned = len({normalize_name(d.metadata.get("Name") or "") for d in dists} - {""})
    docs = []
    for doc in iter_quickstart_docs(min_chars, min_headings, include_rst, exclude, dists, report.skipped,
                                    drop_changelog):
        docs.append(doc)
        report.chars += len(doc["text"])
        report.headings += count_headings(doc["text"])
        report.sections_in_range += count_sections(doc["text"], *section_bounds)
    if not docs:
        raise FileNotFoundError("no installed distribution has a long description that fits the quickstart "
                                f"corpus (min_chars={min_chars}, min_headings={min_headings})")
    write_jsonl(docs, output_jsonl)
    report.written = len(docs)
    log.debug("quickstart corpus: %d documents, %d sections in range", report.written, report.sections_in_range)
    return report
