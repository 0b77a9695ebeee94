"""Markdown for text nobody here wrote: the inert-text, number and code-span formatting that the dataset card,
the stage results and the report share (a pair's text may hold Markdown, HTML, control or bidi characters)."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Optional

DASH = "–"
TRAINING = re.compile(r"^(backward|m\d+)$")  # the run stages that train a model

# characters with a Markdown meaning anywhere in a line: backslash-escaped (CommonMark allows it for any ASCII
# punctuation); `$` because the Hub renders $...$ as math. &, <, > become entities, newlines <br>.
_MD_SPECIAL = frozenset("\\`*_{}[]()#+!|~$")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BREAKS = re.compile(r"(?:<br>)(?:\s*<br>)+")


def md_text(text: Any, limit: Optional[int] = None) -> str:
    """``text`` as inert Markdown on one line: cut to ``limit`` characters (then "…"), Markdown punctuation
    escaped, HTML as entities, line breaks as <br> (several in a row as two), control and bidi characters
    dropped. Safe inside a table cell and in running text."""
    s = "" if text is None else str(text)
    s = s.replace("\r\n", "\n").replace("\r", "\n")
    cut = limit is not None and len(s) > limit
    if cut:
        s = s[:limit].rstrip()
    out = []
    for ch in s:
        if ch == "\n":
            out.append("<br>")
        elif ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ch in "\t\v\f" or unicodedata.category(ch) in ("Zl", "Zp"):
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf"):  # NUL, ESC, zero-width and direction overrides
            continue
        else:
            out.append(ch)
    joined = _BREAKS.sub("<br><br>", "".join(out)).strip()
    while joined.startswith("<br>"):
        joined = joined[4:].lstrip()
    while joined.endswith("<br>"):
        joined = joined[:-4].rstrip()
    return joined + ("…" if cut else "")


def code(text: Any, table: bool = False) -> str:
    """``text`` as an inline code span (literal: no escapes apply inside one), on one line; ``table``: pipes
    escaped as GFM tables need even inside code."""
    if text is None:
        return DASH
    s = "".join(" " if ch in "\n\r\t" else ch for ch in str(text)
                if ch in "\n\r\t" or unicodedata.category(ch) not in ("Cc", "Cf"))
    if table:
        s = s.replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    mark = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{mark}{pad}{s}{pad}{mark}"


def fence(text: str, info: str = "") -> list[str]:
    """A code block around ``text`` whose fence is longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    mark = "`" * max(3, longest + 1)
    return [mark + info, text, mark]


def num(x: Any, digits: int) -> str:
    """A number with ``digits`` decimals; "–" for None, "n/a" for NaN; anything else as inert text."""
    if x is None:
        return DASH
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return md_text(x)
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    return f"{x:.{digits}f}"


def value(x: Any) -> str:
    """A continuous scorer value (PMI, blend, mean): 2 decimals, or 2 significant digits when that would read 0.00."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and x and abs(x) < 0.005:
        return f"{x:.1e}"
    return num(x, 2)


def score(x: Any) -> str:
    """A 1-5 score: as an integer when it is one, else 2 decimals."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and float(x).is_integer():
        return str(int(x))
    return num(x, 2)


def steps(n: Any) -> str:
    return f"{count(n)} step{'' if n == 1 else 's'}"


def g(x: Any) -> str:
    """A threshold as written (2, 3.5)."""
    return DASH if x is None else (f"{x:g}" if isinstance(x, (int, float)) else md_text(x))


def count(x: Any) -> str:
    return DASH if x is None else (f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else md_text(x))


def params(n: Optional[int]) -> str:
    """134515008 -> "134.5M parameters"."""
    if not n:
        return "parameter count unknown (no local safetensors copy)"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit} parameters"
    return f"{n} parameters"


def fig(f: Any) -> str:
    """A figure {"value", "ci"} (or a bare number) as "0.93 [0.90, 0.96]"."""
    if isinstance(f, dict):
        ci = f.get("ci")
        return num(f.get("value"), 2) + (f" [{num(ci[0], 2)}, {num(ci[1], 2)}]" if ci else "")
    return num(f, 2)
