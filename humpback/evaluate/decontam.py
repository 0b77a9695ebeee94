"""``humpback eval decontam``: word n-gram overlap between training pairs and evaluation prompts.

Text is normalised exactly as datatrove's n-gram decontamination does (``datatrove.utils.text.simplify_text``:
lowercase, punctuation removed, numbers and diacritics normalised, whitespace collapsed) and cut into word
n-grams with datatrove's ``ngrams``. datatrove's own steps (``NGramsDecontIndexer`` / ``NGramsDecontFilter``)
do not fit as they are: the indexer needs lighteval and builds its index from lighteval task names, its English
word tokenizer needs spaCy, and the filter keeps only the first task name matched, not which evaluation item
or how much of it. Here the index maps each n-gram to the evaluation items it comes from, so every flagged
pair names the items it overlaps and the share of each item's n-grams it contains.

An evaluation prompt shorter than n words is indexed whole (as one shorter n-gram) when it has at least
``min_short_words`` words, since a short prompt copied verbatim is still contamination; shorter ones are
counted and skipped because they would match common phrases.

The flagged file (JSONL, one row per flagged pair with ``pair_id``) is what ``humpback export --exclude`` reads.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from datatrove.utils.text import ngrams, simplify_text
from pydantic import Field, field_validator

from ..core.config import StrictModel
from ..core.records import RecordError, record_files, write_json, write_jsonl
from ..core.progress import Meter
from .common import is_run_dir, load_items
from .diversity import discover_sets

log = logging.getLogger("humpback.eval")


class DecontamConfig(StrictModel):
    n: int = Field(8, ge=2)  # n-gram length in words (GPT-3 used 13, many eval reports 8)
    min_short_words: int = Field(5, ge=1)  # shorter eval prompts are whole-prompt n-grams down to this length
    fields: list[str] = Field(default_factory=lambda: ["instruction", "output"])  # pair fields checked
    references: bool = True  # also index the eval files' reference answers when they have one
    min_overlap: float = Field(0.0, ge=0.0, le=1.0)  # flag only when >= this share of an eval item's n-grams match

    @field_validator("fields", mode="before")
    @classmethod
    def _split(cls, v):
        v = [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v  # "instruction,output"
        if not v:
            raise ValueError("name at least one pair field (e.g. instruction,output)")
        return v


def words(text: str) -> list[str]:
    return simplify_text(text or "").split()


def _grams(tokens: list[str], n: int) -> list[str]:
    """Word n-grams, leaving out those that are mostly numbers: numbers are normalised to 0, so a row of
    figures ("0 0 0 0 0 0 0 0") would match every table."""
    return [" ".join(g) for g in ngrams(tokens, n) if 2 * sum(w.isalpha() for w in g) > len(g)]


class EvalIndex:
    """n-gram → eval item ids, plus each item's text and n-gram count."""

    def __init__(self, cfg: DecontamConfig) -> None:
        self.cfg = cfg
        self.grams: dict[str, set[int]] = defaultdict(set)
        self.items: list[dict] = []
        self.short_lengths: set[int] = set()
        self.skipped_short = 0

    def add(self, text: str, info: dict) -> None:
        tokens = words(text)
        n = self.cfg.n
        if len(tokens) >= n:
            grams = set(_grams(tokens, n))
        elif len(tokens) >= self.cfg.min_short_words:
            grams = {" ".join(tokens)}
            self.short_lengths.add(len(tokens))
        else:
            self.skipped_short += 1
            return
        k = len(self.items)
        self.items.append({**info, "ngrams": len(grams)})
        for g in grams:
            self.grams[g].add(k)

    def matches(self, text: str) -> dict[int, set[str]]:
        """eval item index → the matched n-grams of ``text``."""
        tokens = words(text)
        found: dict[int, set[str]] = defaultdict(set)
        for length in {self.cfg.n, *self.short_lengths}:
            for g in _grams(tokens, length):
                for k in self.grams.get(g, ()):
                    found[k].add(g)
        return found


def build_index(against: Sequence[str | Path], cfg: DecontamConfig) -> EvalIndex:
    index = EvalIndex(cfg)
    for src in against:
        files = record_files(src)
        for item in load_items(src, need_output=False):
            info = {"eval_file": item.file, "eval_line": item.line, "eval_id": item.id}
            index.add(item.instruction, {**info, "eval_field": "prompt", "eval_text": item.instruction})
            if cfg.references and item.output:
                index.add(item.output, {**info, "eval_field": "reference", "eval_text": item.output})
        log.info("indexed %s (%d files)", src, len(files))
    if not index.items:
        raise RecordError(f"no evaluation prompt of at least {cfg.min_short_words} words in "
                          f"{', '.join(map(str, against))}")
    return index


def pair_sets(path: str | Path) -> list[tuple[str, Path]]:
    """What to check in ``path``: a run's seed and curated pairs of every round, or the file/folder itself."""
    p = Path(path)
    if is_run_dir(p):
        sets = [(name, q) for name, q in discover_sets([p]) if not name.startswith("candidates")]
        if not sets:
            raise FileNotFoundError(f"{p}: a run directory with neither seed.parquet nor curated pairs")
        return sets
    return [(p.stem if p.is_file() else p.name, p)]


def decontaminate(
    pairs: str | Path,
    against: Sequence[str | Path],
    output: str | Path | None = None,
    config: DecontamConfig | None = None,
) -> dict:
    """Flag pairs of ``pairs`` whose fields share n-grams with the evaluation prompts in ``against``.

    Writes the flagged rows to ``output`` (JSONL; default ``decontam_flagged.jsonl`` in the run's eval/ folder
    or the current folder) and a summary next to it (``<output stem>.stats.json``).
    """
    cfg = config or DecontamConfig()
    if not against:
        raise RecordError("--against: give at least one evaluation prompt file")
    index = build_index(against, cfg)
    sets = pair_sets(pairs)
    out = Path(output) if output else (Path(pairs) / "eval" if is_run_dir(pairs) else Path(".")) / \
        "decontam_flagged.jsonl"
    flagged: list[dict] = []
    checked: Counter = Counter()
    flagged_by_set: Counter = Counter()
    flagged_by_eval: Counter = Counter()
    for name, path in sets:
        items = [it for it in load_items(path, need_output=False)]
        progress = Meter(f"decontam {name}", len(items), logger=log)
        for it in items:
            checked[name] += 1
            row = _check(it, name, index, cfg)
            if row is not None:
                flagged.append(row)
                flagged_by_set[name] += 1
                for m in row["matches"]:
                    flagged_by_eval[m["eval_file"]] += 1
            progress.update(1)
    write_jsonl(flagged, out)
    stats = {
        "command": "eval decontam", "pairs": str(pairs), "against": [str(a) for a in against],
        "config": cfg.model_dump(), "eval_items_indexed": len(index.items),
        "eval_items_too_short": index.skipped_short, "ngrams_indexed": len(index.grams),
        "checked": dict(checked), "flagged": dict(flagged_by_set), "flagged_total": len(flagged),
        "flagged_by_eval_file": dict(flagged_by_eval), "output": str(out),
    }
    write_json(stats, out.with_name(out.name.removesuffix(".jsonl") + ".stats.json"))
    stats["rows"] = flagged
    return stats


def _check(it, set_name: str, index: EvalIndex, cfg: DecontamConfig) -> dict | None:
    texts = {"instruction": it.instruction, "output": it.output or ""}
    unknown = [f for f in cfg.fields if f not in texts]
    if unknown:
        raise RecordError(f"decontam fields {unknown}: expected instruction and/or output")
    matches = []
    for field in cfg.fields:
        for k, grams in index.matches(texts[field]).items():
            item = index.items[k]
            overlap = len(grams) / item["ngrams"]
            if overlap < cfg.min_overlap or overlap == 0:
                continue
            matches.append({
                "field": field, "eval_file": item["eval_file"], "eval_line": item["eval_line"],
                "eval_id": item["eval_id"], "eval_field": item["eval_field"],
                "eval_text": item["eval_text"][:300], "matched_ngrams": len(grams),
                "eval_ngrams": item["ngrams"], "overlap": round(overlap, 4), "example_ngram": min(grams),
            })
    if not matches:
        return None
    matches.sort(key=lambda m: (-m["overlap"], -m["matched_ngrams"]))
    return {"pair_id": it.id, "set": set_name, "file": it.file, "line": it.line,
            "instruction": it.instruction[:300], "max_overlap": matches[0]["overlap"], "matches": matches[:10],
            "matched_eval_items": len(matches)}


def format_decontam_summary(stats: dict) -> str:
    cfg = stats["config"]
    lines = [f"indexed {stats['eval_items_indexed']} evaluation texts ({stats['ngrams_indexed']} {cfg['n']}-grams) "
             f"from {', '.join(stats['against'])}"
             + (f"; {stats['eval_items_too_short']} shorter than {cfg['min_short_words']} words skipped"
                if stats["eval_items_too_short"] else "")]
    for name, n in stats["checked"].items():
        lines.append(f"  {name}: checked {n}, flagged {stats['flagged'].get(name, 0)}")
    lines.append(f"flagged {stats['flagged_total']} pair(s) -> {stats['output']}")
    for row in stats.get("rows", [])[:10]:
        m = row["matches"][0]
        lines.append(f"  {row['pair_id']} ({row['set']}, {m['field']}): {m['overlap']:.0%} of "
                     f"{Path(m['eval_file']).name}:{m['eval_line']} ({m['eval_field']}) e.g. \"{m['example_ngram']}\"")
    if stats["flagged_total"] > 10:
        lines.append(f"  ... {stats['flagged_total'] - 10} more in the file")
    if stats["flagged_total"]:
        lines.append(f"drop them at export with: humpback export ... --exclude {stats['output']}")
    return "\n".join(lines)


__all__ = ["DecontamConfig", "decontaminate", "format_decontam_summary"]
