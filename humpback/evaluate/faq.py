"""Held-out human (question, answer) pairs from HTML documentation whose section headings are questions.

Figures measured on our own seed flatter us: we wrote it. These sets come from documentation nobody on the
team wrote, installed from Debian packages, and are kept out of every training set:

- ``debian-faq``: the Debian FAQ (package ``debian-faq``), /usr/share/doc/debian/FAQ/*.en.html;
- ``python-faq``: the Python FAQ (package ``python3.11-doc``), /usr/share/doc/python3.*/html/faq/*.html.

``humpback eval faq-pairs debian-faq --output FILE`` (or a list of HTML files/folders) writes one JSONL row
per section whose heading is a question: ``id``, ``instruction`` (the heading without its number),
``output`` (the section's own text, nested sections left out, as Markdown-like plain text), ``source``,
``url`` (file#anchor) and ``license``. ``make heldout`` installs the packages and builds both sets into
data/heldout/ (docs/eval.md: how they are built, their sizes and checksums).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

from ..core.records import RecordError, write_jsonl


@dataclass(frozen=True)
class FaqSource:
    name: str
    package: str
    patterns: tuple[str, ...]
    license: str


SOURCES = {
    "debian-faq": FaqSource("debian-faq", "debian-faq", ("/usr/share/doc/debian/FAQ/*.en.html",),
                            "Debian FAQ licence (verbatim/modified copies under the same notice), (C) SPI"),
    "python-faq": FaqSource("python-faq", "python3.11-doc", ("/usr/share/doc/python3*/html/faq/*.html",),
                            "PSF documentation licence (PSF-2.0)"),
}

_NUMBER = re.compile(r"^\s*(\d+(\.\d+)*\.?|[A-Z]\.\d+(\.\d+)*\.?)\s+")
_BLOCKS = {"p", "pre", "ul", "ol", "dl", "table", "blockquote", "div", "section", "figure"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_SKIP = {"script", "style", "nav", "head"}


def _inline(el) -> str:
    return re.sub(r"\s+", " ", el.text_content()).strip()


def _is_section(el) -> bool:
    cls = (el.get("class") or "").split()
    return el.tag == "section" or (el.tag == "div" and ("section" in cls or "sect1" in cls or "sect2" in cls))


def _render(el, out: list[str], depth: int = 0) -> None:
    """Block-level text of ``el``'s children; nested sections are their own pairs and are skipped here."""
    tag = el.tag if isinstance(el.tag, str) else ""
    if tag in _SKIP or "headerlink" in (el.get("class") or ""):
        return
    if tag == "pre":
        code = (el.text_content() or "").rstrip()
        if code.strip():
            out.append("```\n" + code.strip("\n") + "\n```")
        return
    if tag in ("ul", "ol"):
        items = [li for li in el if getattr(li, "tag", None) == "li"]
        lines = [("- " if tag == "ul" else f"{i}. ") + _inline(li) for i, li in enumerate(items, 1)]
        if lines:
            out.append("\n".join(line for line in lines if line.strip(" -.0123456789")))
        return
    if tag == "dl":
        for child in el:
            text = _inline(child)
            if text:
                out.append(text if child.tag == "dt" else "  " + text)
        return
    if tag == "table":
        rows = [" | ".join(_inline(c) for c in tr if getattr(c, "tag", None) in ("td", "th")) for tr in el.iter("tr")]
        if rows:
            out.append("\n".join(r for r in rows if r.strip(" |")))
        return
    if tag == "p":
        text = _inline(el)
        if text:
            out.append(text)
        return
    for child in el:
        ctag = child.tag if isinstance(child.tag, str) else ""
        if ctag in _HEADINGS or (depth > 0 and _is_section(child)):
            continue
        if ctag in _BLOCKS or ctag in ("li", "dt", "dd"):
            _render(child, out, depth + 1)
        elif ctag and ctag not in _SKIP:
            text = _inline(child)
            if text and ctag not in ("a",) or (ctag == "a" and text):
                out.append(text)


def _heading(section) -> Optional[tuple[str, str]]:
    """(title, anchor) of a section's own heading (the first heading not inside a nested section)."""
    for el in section.iter():
        if el is not section and _is_section(el):
            return None
        if isinstance(el.tag, str) and el.tag in _HEADINGS:
            anchor = section.get("id") or next((a.get("id") for a in el.iter("a") if a.get("id")), "") or ""
            title = _NUMBER.sub("", _inline(el)).replace("¶", "").strip()
            return title, anchor
    return None


def pairs_from_html(path: str | os.PathLike, source: str, license: str = "",
                    min_answer_chars: int = 150, max_answer_chars: int = 4000) -> Iterator[dict]:
    """One pair per section of ``path`` whose heading ends with a question mark."""
    import lxml.html

    p = Path(path)
    try:
        root = lxml.html.fromstring(p.read_bytes())
    except (OSError, ValueError) as e:
        raise RecordError(f"{p}: cannot read HTML ({e})") from None
    for section in root.iter():
        if not isinstance(section.tag, str) or not _is_section(section):
            continue
        head = _heading(section)
        if head is None or not head[0].endswith("?"):
            continue
        title, anchor = head
        blocks: list[str] = []
        _render(section, blocks, depth=0)
        answer = "\n\n".join(b for b in blocks if b and b != title).strip()
        if not (min_answer_chars <= len(answer) <= max_answer_chars):
            continue
        slug = anchor or hashlib.sha256(title.encode()).hexdigest()[:10]
        yield {"id": f"{source}/{p.stem.replace('.en', '')}/{slug}", "instruction": title, "output": answer,
               "source": source, "url": f"{p}#{anchor}" if anchor else str(p), "license": license}


def faq_files(spec: Sequence[str]) -> tuple[list[Path], str, str]:
    """The HTML files of a named source (``debian-faq``, ``python-faq``) or of the given files/folders."""
    if len(spec) == 1 and spec[0] in SOURCES:
        src = SOURCES[spec[0]]
        files = sorted({Path(f) for pat in src.patterns for f in glob.glob(pat)})
        files = [f for f in files if f.name not in ("index.html", "index.en.html")]
        if not files:
            raise RecordError(f"{spec[0]}: no HTML under {', '.join(src.patterns)}; install it with "
                              f"`apt-get install {src.package}` (or run `make heldout`)")
        return files, src.name, src.license
    files: list[Path] = []
    for item in spec:
        p = Path(item)
        if p.is_dir():
            files += sorted(p.rglob("*.htm*"))
        elif p.is_file():
            files.append(p)
        else:
            raise RecordError(f"{item}: no such file or folder (or a source name: {', '.join(SOURCES)})")
    return files, "html", ""


def build_faq_pairs(spec: Sequence[str], output: str | os.PathLike, exclude_ids: Iterable[str] = ()) -> dict:
    """Write the question/answer pairs of ``spec`` to ``output`` (JSONL); returns counts and a checksum."""
    files, source, license = faq_files(spec)
    excluded = set(exclude_ids)
    rows, seen = [], set()
    for f in files:
        for row in pairs_from_html(f, source, license):
            key = row["instruction"].lower()
            if key in seen or row["id"] in excluded:  # a question asked twice keeps its first answer
                continue
            seen.add(key)
            rows.append(row)
    if not rows:
        raise RecordError(f"{', '.join(spec)}: no section headed by a question")
    write_jsonl(rows, output)
    digest = hashlib.sha256(Path(output).read_bytes()).hexdigest()
    return {"output": str(output), "pairs": len(rows), "files": len(files), "source": source, "sha256": digest}


__all__ = ["SOURCES", "build_faq_pairs", "faq_files", "pairs_from_html"]
