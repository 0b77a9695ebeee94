"""Final answers of math solutions: extraction from free text and equivalence with a reference.

Extraction looks, in order, for the last ``\\boxed{...}``, the last ``Answer: ...`` / ``The answer is ...`` /
``#### ...`` line, and (optionally) the last number in the text. Equivalence is tried as exact (after
normalising LaTeX, units, thousands separators, trailing punctuation), numeric (exact fractions, plus a
correctly rounded decimal of a non-terminating value) and symbolic (sympy), in that order.

Model output is untrusted: sympy's parser evaluates Python, so only strings made of digits, operators,
parentheses and a short list of names reach it, and huge powers are refused before anything is evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from tokenize import TokenError

# --------------------------------------------------------------------------------------------- extraction

_ANSWER_LINE = re.compile(
    r"(?:final[ \t]+answer|answer)[ \t]*(?:is|=|:)[ \t]*:?[ \t]*(?P<rest>[^\n]*)|^[ \t]*####[ \t]*(?P<gsm>[^\n]*)",
    re.IGNORECASE | re.MULTILINE,
)
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|-?\d+(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|-?\.\d+")


@dataclass(frozen=True)
class Extracted:
    text: str  # the answer as written (normalisation happens at comparison time)
    method: str  # boxed | answer-line | last-number


def _boxed_contents(text: str) -> str | None:
    """Contents of the last \\boxed{...} / \\fbox{...}, with nested braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start:i - 1]
    m = list(re.finditer(r"\\boxed\s+([^\s$]+)", text))  # \boxed 5 (no braces)
    return m[-1].group(1) if m else None


def extract_answer(text: str, last_number: bool = True) -> Extracted | None:
    """The final answer of a solution, or None when it states none (and ``last_number`` is off)."""
    boxed = _boxed_contents(text)
    if boxed is not None and boxed.strip():
        return Extracted(boxed.strip(), "boxed")
    found = None
    for m in _ANSWER_LINE.finditer(text):
        rest = (m.group("rest") if m.group("rest") is not None else m.group("gsm")).strip()
        rest = rest.strip("*_ ").strip()  # markdown bold/italic around the value
        if rest:
            found = rest
    if found is not None:
        return Extracted(found, "answer-line")
    if last_number:
        numbers = _NUMBER.findall(text)
        if numbers:
            return Extracted(numbers[-1], "last-number")
    return None


# --------------------------------------------------------------------------------------------- normalising

_TEXT_MACROS = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad|~")
_UNIT_TAIL = re.compile(r"^(?P<num>[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?)\s*(?:[a-z][a-z .']*)$")
_VAR_PREFIX = re.compile(r"^[a-z]\s*=\s*(?=\S)")
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_NUMBER_WORDS = {w: str(i) for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"))}
_MIXED = re.compile(r"^(?P<sign>-?)(?P<whole>\d+)\s+(?P<num>\d+)\s*/\s*(?P<den>\d+)$")


def _replace_frac(s: str) -> str:
    """\\frac{a}{b} -> (a)/(b), innermost first; also the \\frac12 shorthand."""
    s = re.sub(r"\\[dt]?frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    for _ in range(20):
        m = re.search(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", s)
        if not m:
            break
        s = s[:m.start()] + f"({m.group(1)})/({m.group(2)})" + s[m.end():]
    return s


def normalize_answer(s: str) -> str:
    """A canonical text form: LaTeX, currency, percent, degree signs, units and punctuation removed."""
    s = s.strip().strip("\"'`\u201c\u201d").strip()
    s = s.replace("\u2212", "-").replace("\u00d7", "*").replace("\u00f7", "/").replace("\u00b0", "")
    s = re.sub(r"^\$+|\$+$", "", s.strip())
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s.strip())
    s = _SPACING.sub(" ", s)
    s = s.replace("\\left", "").replace("\\right", "")
    for _ in range(3):
        s = _TEXT_MACROS.sub(r" \1 ", s)
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = s.replace("{,}", "")
    for _ in range(10):  # \frac and \sqrt nest inside each other: rewrite innermost first until stable
        before = s
        s = re.sub(r"\\sqrt\s*\{([^{}]*)\}", r"sqrt(\1)", s)
        s = re.sub(r"\\sqrt\s*(\d+)", r"sqrt(\1)", s)
        s = _replace_frac(s)
        if s == before:
            break
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/").replace("\\pi", "pi")
    s = s.replace("\\infty", "oo")
    s = s.replace("{", "(").replace("}", ")") if "\\" not in s else s
    s = s.lower().strip()
    s = re.sub(r"[.!,;:\s\"'`\u201c\u201d]+$", "", s)  # trailing period and friends (and closing quotes)
    s = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), s)
    s = _VAR_PREFIX.sub("", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = _NUMBER_WORDS.get(s, s)
    m = _UNIT_TAIL.match(s)
    if m:  # "12 apples", "3/4 of the cake", "5 cm"
        s = m.group("num")
    if _MIXED.match(s):  # "8 3/4" is eight and three quarters, not 83/4
        return re.sub(r"\s*/\s*", "/", re.sub(r"\s+", " ", s))
    return s.replace(" ", "") if re.fullmatch(r"[-+*/().\d\s]+", s) else s


def parse_number(s: str) -> Fraction | None:
    """An exact value for integers, decimals, fractions a/b (also in parentheses) and mixed numbers."""
    s = s.strip()
    m = _MIXED.match(s)
    if m:
        value = int(m.group("whole")) + Fraction(int(m.group("num")), int(m.group("den")))
        return -value if m.group("sign") else value
    s = s.replace(" ", "")
    m = re.fullmatch(r"\(?([-+]?(?:\d+(?:\.\d*)?|\.\d+))\)?(?:/\(?([-+]?(?:\d+(?:\.\d*)?|\.\d+))\)?)?", s)
    if not m:
        return None
    try:
        value = Fraction(m.group(1))
        if m.group(2) is not None:
            den = Fraction(m.group(2))
            if den == 0:
                return None
            value /= den
    except (ValueError, ZeroDivisionError):
        return None
    return value


def _decimals(s: str) -> int:
    m = re.fullmatch(r"[-+]?\d*\.(\d+)", s.strip())
    return len(m.group(1)) if m else 0


def _number_in_phrase(s: str) -> str | None:
    """The value a wordy answer states: the first number after its last '=' ("12 - 5 = 7 apples" -> 7)."""
    tail = s.rsplit("=", 1)[-1]
    m = _NUMBER.search(tail)
    return m.group(0).replace(",", "").replace(" ", "") if m else None


def canonical(answer: str) -> str:
    """The key majority voting groups answers by: an exact number when it is one, else the normalised text."""
    norm = normalize_answer(answer)
    value = parse_number(norm)
    if value is None and not _symbolic_ok(norm):
        phrase = _number_in_phrase(norm)
        value = parse_number(phrase) if phrase else None
    return f"={value}" if value is not None else norm


# --------------------------------------------------------------------------------------------- symbolic

_ALLOWED_NAMES = {"sqrt", "pi", "e", "oo", "sin", "cos", "tan", "log", "ln", "exp", "i"}
_SAFE_CHARS = re.compile(r"[0-9a-z+\-*/^().,\s]*")
_MAX_SYMBOLIC_CHARS = 120
_MAX_EXPONENT = 64
# What sympy's parser and simplify raise on odd input (SympifyError is a ValueError).
_SYMPY_ERRORS: tuple[type[BaseException], ...] = (SyntaxError, TokenError, TypeError, ValueError, AttributeError,
                                                  KeyError, IndexError, ZeroDivisionError, OverflowError,
                                                  RecursionError, NotImplementedError)


def _symbolic_ok(s: str) -> bool:
    if not s or len(s) > _MAX_SYMBOLIC_CHARS or not _SAFE_CHARS.fullmatch(s) or "**" in s:
        return False
    return all(len(w) == 1 or w in _ALLOWED_NAMES for w in re.findall(r"[a-z]+", s))


def _sympy_expr(s: str):
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    if not _symbolic_ok(s):
        return None
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    local = {"e": sympy.E, "i": sympy.I, "ln": sympy.log, "pi": sympy.pi, "oo": sympy.oo}
    try:
        expr = parse_expr(s, transformations=transformations, local_dict=local, evaluate=False)
    except _SYMPY_ERRORS:
        return None
    pows = [expr] if isinstance(expr, sympy.Pow) else []
    if isinstance(expr, sympy.Basic):
        pows += list(expr.atoms(sympy.Pow))
    for p in pows:  # 9^9^9 would take forever to evaluate
        if p.exp.is_Number and abs(p.exp) > _MAX_EXPONENT:
            return None
        if not p.exp.is_Number and any(isinstance(a, sympy.Pow) for a in p.exp.atoms(sympy.Pow)):
            return None
    return expr


def _symbolic_equal(a: str, b: str) -> bool:
    import sympy

    ea, eb = _sympy_expr(a), _sympy_expr(b)
    if ea is None or eb is None:
        return False
    try:
        if isinstance(ea, tuple) or isinstance(eb, tuple):
            ta = ea if isinstance(ea, tuple) else (ea,)
            tb = eb if isinstance(eb, tuple) else (eb,)
            return len(ta) == len(tb) and all(sympy.simplify(x - y) == 0 for x, y in zip(ta, tb))
        return bool(sympy.simplify(ea - eb) == 0)
    except _SYMPY_ERRORS:  # comparing incompatible objects (sets, relations) is simply "not equal"
        return False


# --------------------------------------------------------------------------------------------- equivalence


@dataclass(frozen=True)
class Match:
    equal: bool
    how: str  # exact | numeric | numeric-rounded | symbolic | phrase-number | different | unparseable


def answers_equal(candidate: str, reference: str, min_rounding_decimals: int = 2) -> Match:
    """Whether ``candidate`` states the same value as ``reference``; ``how`` says which test decided."""
    c, r = normalize_answer(candidate), normalize_answer(reference)
    if not c:
        return Match(False, "unparseable")
    if c == r:
        return Match(True, "exact")
    rv = parse_number(r)
    cv = parse_number(c)
    if rv is not None and cv is not None:
        if cv == rv:
            return Match(True, "numeric")
        # A decimal that rounds the reference correctly, when the reference has no exact decimal that short
        # (1/3 as 0.33 or 0.333); an integer reference needs the integer, so 12346 never passes for 12345.
        places = _decimals(c)
        if (places >= min_rounding_decimals and rv * 10**places != int(rv * 10**places)
                and abs(cv - rv) <= Fraction(1, 2 * 10**places)):
            return Match(True, "numeric-rounded")
        return Match(False, "different")
    if rv is not None and cv is None:
        phrase = _number_in_phrase(c)
        pv = parse_number(phrase) if phrase else None
        if pv is not None and not _symbolic_ok(c):
            return Match(pv == rv, "phrase-number" if pv == rv else "different")
    if _symbolic_equal(c, r):
        return Match(True, "symbolic")
    return Match(False, "different")


__all__ = ["Extracted", "Match", "answers_equal", "canonical", "extract_answer", "normalize_answer", "parse_number"]
