"""Seed pairs: import instruction/output pairs into the seed schema, and describe a seed file.

Sources are JSONL (also ``.jsonl.gz``, ``.json`` lines or a JSON array), Parquet (a file or a folder of
shards), a folder written by ``datasets.save_to_disk``, or the OpenAssistant oasst1 export (message trees
or flat messages, in any of those containers). Every imported pair is written as ``id, instruction, output,
source`` (:data:`humpback.core.records.SEED_SCHEMA`).

The oasst1 selection is the paper's (Li et al. 2023, section 3): the first turn of each conversation only
(a root prompter message and its direct reply), English, and the reply ranked best (rank 0).

A seed set is small and hand-made, so a malformed line or a missing key is an error that names the file
and the line, never a row silently skipped. Empty and duplicate pairs are dropped and counted, because
those are expected in scraped sources and the user should see how many.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import statistics
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import ConfigError
from ..core.records import RecordError, parquet_files, read_records, record_format, write_jsonl, write_parquet

log = logging.getLogger("humpback.seed")

SEED_FORMATS = ("jsonl", "parquet", "hf", "oasst1")

# The word `builtin` in place of a seed path (`seed.path: builtin` in a run config, `humpback seed import builtin`)
# names the 260 pairs shipped inside the package (CC-BY-4.0, see its README.md), wherever humpback is installed.
BUILTIN_SEED = "builtin"
BUILTIN_SEED_PATH = Path(__file__).resolve().parents[1] / "resources" / "seed" / "seed.jsonl"

# Tried in order when the user did not name the keys. "input" comes last as an instruction key because in
# the Alpaca layout it is the optional context that goes with "instruction" (see CONTEXT_KEYS).
INSTRUCTION_ALIASES = ("instruction", "prompt", "question", "query", "input")
OUTPUT_ALIASES = ("output", "response", "answer", "completion", "target")
# Alpaca ("input") and Dolly ("context") keep part of the request in a second field; without it many
# instructions ("Summarise the text below.") make no sense, so it is appended to the instruction.
CONTEXT_KEYS = ("input", "context")

OASST1_READY_STATE = "ready_for_export"


@dataclass
class ImportReport:
    """What an import read, wrote and dropped.

    ``read`` counts source records (rows, lines, or oasst1 messages). ``candidates`` counts the pairs formed
    from them (one per row; one per first-turn prompt for oasst1), and every candidate is either written,
    held out, or dropped for exactly one reason: ``candidates == written + heldout + sum(dropped)``.
    ``skipped`` counts oasst1 messages that are not part of any candidate (later turns, lower-ranked replies).
    """

    src: str
    output: str
    format: str
    instruction_key: str = "instruction"
    output_key: str = "output"
    read: int = 0
    candidates: int = 0
    written: int = 0
    heldout: int = 0
    heldout_output: str | None = None
    dropped: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> str:
        unit = "messages" if self.format == "oasst1" else "records"
        lines = [f"read {self.read} {unit} from {self.src} (format {self.format})"]
        if self.format == "oasst1":
            lines.append(f"first-turn prompts: {self.candidates}")
        else:
            lines.append(f"keys: instruction='{self.instruction_key}', output='{self.output_key}'")
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"wrote {self.written} pairs to {self.output}")
        if self.heldout_output is not None:
            lines.append(f"held out {self.heldout} pairs to {self.heldout_output}")
        lines.append(f"dropped {self.dropped_total}" + _counts(self.dropped))
        if self.skipped:
            lines.append(f"skipped messages {sum(self.skipped.values())}" + _counts(self.skipped))
        return "\n".join(lines)


def _counts(counter: Counter) -> str:
    if not counter:
        return ""
    return ": " + ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))


# --------------------------------------------------------------------------------------------- reading


def detect_container(src: str | os.PathLike) -> str:
    """``jsonl``, ``parquet`` or ``hf`` from the path; raises ConfigError when it cannot tell."""
    p = Path(src)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        if (p / "dataset_dict.json").is_file() or (p / "state.json").is_file():
            return "hf"
        if parquet_files(p):
            return "parquet"
        raise ConfigError(f"{p}: folder holds neither Parquet files nor a dataset saved with "
                          "datasets.save_to_disk; pass --format")
    fmt = record_format(p)
    if fmt is not None:
        return fmt
    raise ConfigError(f"{p}: cannot tell the format from the name; pass --format jsonl|parquet|hf|oasst1")


def _iter_hf_records(path: Path, split: str | None, notes: list[str]) -> Iterator[tuple[str, dict]]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    where = str(path)
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if split is None:
            if len(splits) == 1:
                split = splits[0]
            elif "train" in splits:
                split = "train"
                notes.append(f"{path} has splits {splits}; read 'train' (choose with --split)")
            else:
                raise ConfigError(f"{path}: dataset has splits {splits}; choose one with --split")
        if split not in ds:
            raise ConfigError(f"{path}: no split '{split}' (splits: {splits})")
        ds = ds[split]
        where = f"{path} [{split}]"
    elif split is not None:
        raise ConfigError(f"{path}: a single dataset without splits; drop --split")
    for i, record in enumerate(ds):
        yield f"{where} row {i}", record


def iter_records(src: str | os.PathLike, container: str | None = None, split: str | None = None,
                 notes: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """(location, record) for every record of ``src``; the location names the file and line/row."""
    path = Path(src)
    container = container or detect_container(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if container in ("jsonl", "parquet"):
        if container == "jsonl" and path.is_dir():
            raise ConfigError(f"{path}: a folder, not a JSONL file")
        return ((str(where), record) for where, record in read_records(path, container))
    if container == "hf":
        return _iter_hf_records(path, split, notes if notes is not None else [])
    raise ConfigError(f"unknown container format '{container}' (expected jsonl, parquet or hf)")


# ------------------------------------------------------------------------------------------- helpers


def normalize_text(text: str) -> str:
    """The comparison key for duplicates: Unicode NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _clean(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def pair_id(instruction: str, output: str) -> str:
    """A stable id for a pair without one: the same text always gets the same id, on any machine."""
    digest = hashlib.sha1(f"{_clean(instruction)}\x00{_clean(output)}".encode()).hexdigest()
    return f"seed-{digest[:16]}"


def _as_text(value: Any, key: str, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "" if isinstance(value, float) and math.isnan(value) else str(value)
    raise RecordError(f"{where}: '{key}' must be text, got {type(value).__name__}")


def seed_source_path(src: str | os.PathLike) -> Path:
    """The file a seed reference names: :data:`BUILTIN_SEED_PATH` for the word ``builtin``, else ``src``."""
    return BUILTIN_SEED_PATH if str(src) == BUILTIN_SEED else Path(src)


def source_label(src: str | os.PathLike) -> str:
    """The path as a provenance string: relative to the working directory when inside it."""
    p = Path(src)
    try:
        return p.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def heldout_path(output: str | os.PathLike) -> Path:
    """``runs/x/seed.parquet`` → ``runs/x/seed.heldout.parquet``."""
    p = Path(output)
    suffix = _output_kind(p)
    stem = p.name[: -len(suffix) - 1]
    return p.with_name(f"{stem}.heldout.{suffix}")


def _output_kind(output: Path) -> str:
    name = output.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".jsonl"):
        return "jsonl"
    raise ConfigError(f"{output}: output must end in .parquet or .jsonl")


def _one_key(record: dict, where: str, what: str, key: str | None, aliases: Sequence[str], other: str | None) -> str:
    """The user's ``key`` (which must be present) or the first alias present that is not ``other``'s."""
    if key is None:
        key = next((k for k in aliases if k in record and k != other), None)
        if key is None:
            raise RecordError(f"{where}: no {what} key: none of {list(aliases)} is present "
                              f"(keys: {list(record)}); name it with --{what}-key")
    elif key not in record:
        raise RecordError(f"{where}: key '{key}' not found (keys: {list(record)})")
    return key


def resolve_keys(record: dict, where: str, instruction_key: str | None, output_key: str | None,
                 notes: list[str]) -> tuple[str, str, str | None]:
    """The instruction, output and context keys to use, from the first record and the user's choice."""
    explicit = instruction_key is not None or output_key is not None
    instruction_key = _one_key(record, where, "instruction", instruction_key, INSTRUCTION_ALIASES, output_key)
    output_key = _one_key(record, where, "output", output_key, OUTPUT_ALIASES, instruction_key)
    context_key = None
    if not explicit and instruction_key == "instruction":
        context_key = next((k for k in CONTEXT_KEYS if k in record and k != output_key), None)
    added = []
    if not explicit and (instruction_key, output_key) != ("instruction", "output"):
        added.append(f"using keys instruction='{instruction_key}', output='{output_key}' "
                     "(set --instruction-key/--output-key to choose others)")
    if context_key:
        added.append(f"appending non-empty '{context_key}' to the instruction (Alpaca/Dolly layout)")
    for note in added:
        log.info(note)
    notes.extend(added)
    return instruction_key, output_key, context_key


# --------------------------------------------------------------------------------------------- oasst1


def is_oasst1_record(record: dict) -> bool:
    return ("message_id" in record and "parent_id" in record) or \
        ("message_tree_id" in record and isinstance(record.get("prompt"), dict))


def _oasst1_messages(records: Iterable[tuple[str, dict]]) -> Iterator[tuple[str, dict]]:
    """Flatten trees into messages (each with parent_id and tree_state); pass flat messages through."""
    for where, record in records:
        if isinstance(record.get("prompt"), dict):
            tree_state = record.get("tree_state")
            stack = [(record["prompt"], None)]
            while stack:
                message, parent = stack.pop()
                if not isinstance(message, dict) or "message_id" not in message:
                    raise RecordError(f"{where}: oasst1 tree message without 'message_id'")
                flat = {k: v for k, v in message.items() if k != "replies"}
                flat.setdefault("parent_id", parent)
                flat.setdefault("tree_state", tree_state)
                yield where, flat
                # Reversed so that replies come out in their file order.
                stack.extend((r, message["message_id"]) for r in reversed(message.get("replies") or []))
        elif "message_id" in record:
            yield where, record
        else:
            raise RecordError(f"{where}: not an oasst1 record: neither a message tree ('prompt') "
                              "nor a message ('message_id')")


def _lang_ok(lang: str | None, wanted: str | None) -> bool:
    return wanted is None or (lang or "").lower() == wanted.lower()


def _usable(message: dict) -> bool:
    return not message.get("deleted") and message.get("review_result") is not False


def select_oasst1(records: Iterable[tuple[str, dict]], lang: str | None, report: ImportReport,
                  source: str) -> Iterator[tuple[str, dict]]:
    """The paper's oasst1 selection: first turn only, language ``lang``, the rank-0 reply.

    Yields candidate pairs ``(location, {id, instruction, output, source})`` in file order of their prompts,
    counting per-prompt drops in ``report.dropped`` and unused messages in ``report.skipped``.
    """
    messages: dict[str, tuple[str, dict]] = {}
    children: dict[str, list[dict]] = {}
    roots: list[str] = []
    for where, message in _oasst1_messages(records):
        report.read += 1
        mid = str(message["message_id"])
        if mid in messages:
            report.skipped["repeated_message_id"] += 1
            continue
        messages[mid] = (where, message)
        parent = message.get("parent_id")
        if parent in (None, ""):
            roots.append(mid)
        else:
            children.setdefault(str(parent), []).append(message)
    root_set = set(roots)
    for mid, (_, message) in messages.items():
        parent = message.get("parent_id")
        if parent in (None, "") or str(parent) in root_set:
            continue
        report.skipped["not_first_turn"] += 1
    for mid in roots:
        where, prompt = messages[mid]
        replies = children.get(mid, [])
        report.candidates += 1
        reason = None
        reply = None
        if prompt.get("role") != "prompter":
            reason = "root_not_prompter"
        elif prompt.get("tree_state") not in (None, OASST1_READY_STATE):
            reason = "tree_not_ready"
        elif prompt.get("deleted"):
            reason = "deleted"
        elif prompt.get("review_result") is False:
            reason = "review_failed"
        elif not _lang_ok(prompt.get("lang"), lang):
            reason = "non_target_lang"
        else:
            # rank is null for replies that were never ranked (or deleted), so only an explicit 0 counts.
            best = [r for r in replies if r.get("role") == "assistant" and r.get("rank") == 0 and _usable(r)]
            if not best:
                reason = "no_rank0_reply"
            elif not _lang_ok(best[0].get("lang") or prompt.get("lang"), lang):
                reason = "non_target_lang"
            else:
                reply = best[0]
        unused = len(replies) - (1 if reply is not None else 0)
        if unused:
            report.skipped["not_selected_reply"] += unused
        if reason:
            report.dropped[reason] += 1
            continue
        yield where, {"id": mid, "instruction": _as_text(prompt.get("text"), "text", where),
                      "output": _as_text(reply.get("text"), "text", where), "source": source}


# --------------------------------------------------------------------------------------------- import


def _pairs_from_records(records: Iterator[tuple[str, dict]], first: tuple[str, dict], report: ImportReport,
                        instruction_key: str | None, output_key: str | None, id_key: str | None,
                        source: str, source_is_explicit: bool) -> Iterator[tuple[str, dict]]:
    where0, record0 = first
    ikey, okey, ckey = resolve_keys(record0, where0, instruction_key, output_key, report.notes)
    report.instruction_key, report.output_key = ikey, okey
    if id_key is not None and id_key not in record0:
        raise RecordError(f"{where0}: key '{id_key}' not found (keys: {list(record0)})")
    use_id = id_key or ("id" if "id" in record0 else None)
    for where, record in records:
        report.read += 1
        report.candidates += 1
        for key in (ikey, okey) + ((id_key,) if id_key else ()):
            if key not in record:
                raise RecordError(f"{where}: key '{key}' not found (keys: {list(record)})")
        instruction = _as_text(record[ikey], ikey, where)
        if ckey:
            context = _clean(_as_text(record.get(ckey), ckey, where))
            if context:
                instruction = f"{_clean(instruction)}\n\n{context}"
        row_source = source
        if not source_is_explicit and isinstance(record.get("source"), str) and record["source"].strip():
            row_source = record["source"]  # re-importing a seed file keeps the original provenance
        pid = record.get(use_id) if use_id else None
        yield where, {"id": None if pid in (None, "") else str(pid), "instruction": instruction,
                      "output": _as_text(record[okey], okey, where), "source": row_source}


def split_heldout(ids: list[str], fraction: float, seed: int) -> set[str]:
    """The ids held out: the ``round(n * fraction)`` (at least one) with the smallest seeded hash.

    Hashing each id (rather than shuffling the list) keeps a pair's membership independent of the order of
    the file, so the same seed gives the same held-out set however the source was sorted.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"heldout fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or not ids:
        return set()
    k = max(1, round(len(ids) * fraction))
    if k >= len(ids):
        raise ConfigError(f"heldout fraction {fraction} would hold out all {len(ids)} pairs")
    ranked = sorted(ids, key=lambda i: hashlib.sha1(f"{seed}\x00{i}".encode()).hexdigest())
    return set(ranked[:k])


def import_seed(
    src: str | os.PathLike,
    output: str | os.PathLike,
    format: str | None = None,
    instruction_key: str | None = None,
    output_key: str | None = None,
    lang: str | None = "en",
    id_key: str | None = None,
    split: str | None = None,
    heldout_fraction: float = 0.0,
    seed: int = 0,
    source: str | None = None,
) -> ImportReport:
    """Import seed pairs from ``src`` (a path, or ``builtin`` for the shipped seed) into ``output`` (``.parquet``
    or ``.jsonl``) in the seed schema.

    ``format`` is ``jsonl``, ``parquet``, ``hf`` or ``oasst1`` (oasst1 records in any container); by default
    it is detected from the path, and oasst1 from the first record's keys. ``instruction_key``/
    ``output_key`` default to the first of :data:`INSTRUCTION_ALIASES`/:data:`OUTPUT_ALIASES` present.
    ``lang`` filters oasst1 prompts (``None`` or ``"any"`` keeps all languages). Ids come from ``id_key``
    (default ``id`` when present), else :func:`pair_id`. ``source`` overrides the provenance string, which
    defaults to the source path (``oasst1:<path>`` for oasst1; ``builtin`` for the shipped seed) or a ``source``
    column already present.

    With ``heldout_fraction`` > 0 a deterministic (``seed``) share of the pairs goes to
    ``<output stem>.heldout.<ext>`` instead, for evaluation.
    """
    if format is not None and format not in SEED_FORMATS:
        raise ConfigError(f"format must be one of {list(SEED_FORMATS)}, got '{format}'")
    out_path = Path(output)
    out_kind = _output_kind(out_path)
    src_path = seed_source_path(src)
    label = BUILTIN_SEED if str(src) == BUILTIN_SEED else source_label(src_path)
    if src_path.exists() and out_path.exists() and src_path.resolve() == out_path.resolve():
        raise ConfigError(f"{out_path}: output would overwrite the source")
    if lang is not None and lang.lower() in ("", "any", "*"):
        lang = None
    container = format if format in ("jsonl", "parquet", "hf") else detect_container(src_path)
    report = ImportReport(src=str(src), output=str(output), format=format or container)
    records = iter_records(src_path, container, split, report.notes)
    first = next(records, None)
    if first is None:
        raise RecordError(f"{src}: no records")
    records = _chain(first, records)
    if format is None and is_oasst1_record(first[1]):
        report.format = "oasst1"
        report.notes.append("detected the oasst1 message format from the keys")
    if report.format == "oasst1":
        report.instruction_key, report.output_key = "prompt text", "rank-0 reply text"
        label = source or f"oasst1:{label}"
        candidates = select_oasst1(records, lang, report, label)
    else:
        candidates = _pairs_from_records(records, first, report, instruction_key, output_key, id_key,
                                         source or label, source is not None)

    kept: list[dict] = []
    seen_instructions: dict[str, tuple[str, str]] = {}
    seen_ids: dict[str, str] = {}
    for where, pair in candidates:
        pair["instruction"] = _clean(pair["instruction"])
        pair["output"] = _clean(pair["output"])
        if not pair["instruction"] or not pair["output"]:
            report.dropped["empty"] += 1
            continue
        ikey = normalize_text(pair["instruction"])
        okey = normalize_text(pair["output"])
        if ikey in seen_instructions:
            same_output = seen_instructions[ikey][1] == okey
            report.dropped["duplicate_pair" if same_output else "duplicate_instruction"] += 1
            continue
        seen_instructions[ikey] = (where, okey)
        if pair["id"] is None:
            pair["id"] = pair_id(pair["instruction"], pair["output"])
        if pair["id"] in seen_ids:
            raise RecordError(f"{where}: id '{pair['id']}' already used at {seen_ids[pair['id']]} "
                              "for a different pair; ids must be unique")
        seen_ids[pair["id"]] = where
        kept.append(pair)

    if not kept:
        raise RecordError(f"{src}: no pairs left to write (read {report.read}; dropped"
                          f"{_counts(report.dropped) or ' 0'})")
    held = split_heldout([p["id"] for p in kept], heldout_fraction, seed)
    train = [p for p in kept if p["id"] not in held]
    report.written = len(train)
    _write(train, out_path, out_kind)
    if heldout_fraction > 0:
        hpath = heldout_path(out_path)
        report.heldout = len(held)
        report.heldout_output = str(hpath)
        _write([p for p in kept if p["id"] in held], hpath, out_kind)
    log.debug("seed import: %s", report.summary().replace("\n", "; "))
    return report


def _chain(first, rest):
    yield first
    yield from rest


def _write(rows: list[dict], path: Path, kind: str) -> None:
    if kind == "parquet":
        write_parquet(rows, path, "seed")
    else:
        write_jsonl(rows, path)


# ---------------------------------------------------------------------------------------------- stats


def _length_stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "median": 0, "mean": 0.0, "max": 0}
    return {"min": min(values), "median": statistics.median(values),
            "mean": round(statistics.fmean(values), 1), "max": max(values)}


def seed_stats(path: str | os.PathLike, instruction_key: str | None = None,
               output_key: str | None = None, category_key: str = "category",
               split: str | None = None) -> dict[str, Any]:
    """Count, per-category counts (when ``category_key`` exists) and word-length stats of a seed file
    (``builtin``: the shipped one)."""
    notes: list[str] = []
    records = iter_records(seed_source_path(path), None, split, notes)
    first = next(records, None)
    if first is None:
        raise RecordError(f"{path}: no records")
    ikey, okey, _ = resolve_keys(first[1], first[0], instruction_key, output_key, notes)
    instr_words: list[int] = []
    out_words: list[int] = []
    per_category: dict[str, dict[str, list[int]]] = {}
    has_category = category_key in first[1]
    for where, record in _chain(first, records):
        for key in (ikey, okey):
            if key not in record:
                raise RecordError(f"{where}: key '{key}' not found (keys: {list(record)})")
        iw = len(_as_text(record[ikey], ikey, where).split())
        ow = len(_as_text(record[okey], okey, where).split())
        instr_words.append(iw)
        out_words.append(ow)
        if has_category:
            cat = _as_text(record.get(category_key), category_key, where).strip() or "(none)"
            entry = per_category.setdefault(cat, {"instruction": [], "output": []})
            entry["instruction"].append(iw)
            entry["output"].append(ow)
    categories = None
    if has_category:
        categories = {
            cat: {"count": len(v["instruction"]),
                  "instruction_words_median": statistics.median(v["instruction"]),
                  "output_words_median": statistics.median(v["output"])}
            for cat, v in sorted(per_category.items())
        }
    return {"path": str(path), "count": len(instr_words), "instruction_key": ikey, "output_key": okey,
            "categories": categories, "instruction_words": _length_stats(instr_words),
            "output_words": _length_stats(out_words)}


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) else str(x)


def format_stats(stats: dict[str, Any], markdown: bool = False) -> str:
    """Plain text for the terminal, or Markdown tables (what the shipped seed's README.md is generated from)."""
    count = stats["count"]
    cats = stats["categories"]
    lengths = [("instruction", stats["instruction_words"]), ("output", stats["output_words"])]
    lines: list[str] = []
    if markdown:
        lines.append(f"Pairs: **{count}**")
        if cats:
            lines += ["", "| category | pairs | share | median instruction words | median output words |",
                      "|---|---:|---:|---:|---:|"]
            for cat, c in cats.items():
                lines.append(f"| {cat} | {c['count']} | {100 * c['count'] / count:.1f}% | "
                             f"{_fmt(c['instruction_words_median'])} | {_fmt(c['output_words_median'])} |")
        lines += ["", "| words per pair | min | median | mean | max |", "|---|---:|---:|---:|---:|"]
        for name, s in lengths:
            lines.append(f"| {name} | {_fmt(s['min'])} | {_fmt(s['median'])} | {_fmt(s['mean'])} | "
                         f"{_fmt(s['max'])} |")
        return "\n".join(lines)
    lines.append(f"{stats['path']}: {count} pairs")
    if cats:
        width = max(len(c) for c in cats)
        lines.append("categories:")
        for cat, c in cats.items():
            lines.append(f"  {cat:<{width}}  {c['count']:>5}  ({100 * c['count'] / count:.1f}%)")
    lines.append("words:        min  median    mean    max")
    for name, s in lengths:
        lines.append(f"  {name:<11} {_fmt(s['min']):>4} {_fmt(s['median']):>7} {_fmt(s['mean']):>7} "
                     f"{_fmt(s['max']):>6}")
    return "\n".join(lines)
