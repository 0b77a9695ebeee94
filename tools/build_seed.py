#!/usr/bin/env python
"""Merge the hand-written seed parts into the shipped seed.jsonl and regenerate its README.md.

    python tools/build_seed.py [--parts humpback/resources/seed/parts] [--output humpback/resources/seed/seed.jsonl]
                               [--readme humpback/resources/seed/README.md] [--check]

The parts are where people write pairs (one file per author, any ids they like). This script is the only
writer of seed.jsonl and README.md, so the shipped file always has the same layout: sorted by category, then
by the part's id; ids renumbered ``seed-0001``, ``seed-0002`` ...; fields ``id, instruction, output,
category``. Every problem in every part is listed before it exits, so an author can fix them in one pass.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from humpback.core.records import atomic_path, write_jsonl
from humpback.stages.seed import format_stats, normalize_text, seed_stats

SEED_DIR = REPO / "humpback" / "resources" / "seed"  # seed.jsonl and README.md ship in the package; parts/ do not
FIELDS = ("id", "instruction", "output", "category")

README_TEMPLATE = """\
# humpback seed set

`seed.jsonl` holds {count} instruction/response pairs written for the humpback project. They are the seed
data of instruction backtranslation (Li et al. 2023): the backward model learns from them to write an
instruction for a given text, and round 0 of the forward model is trained on them (tagged S_a, "Answer in
the style of an AI Assistant.").

## License

The seed pairs were written for this project by its contributors and are licensed under the
[Creative Commons Attribution 4.0 International license (CC-BY-4.0)](https://creativecommons.org/licenses/by/4.0/).
You may share and adapt them for any purpose, including commercially, as long as you credit
"the humpback seed set" and indicate changes. (The humpback code is Apache-2.0; this license covers
the data in this folder.)

## Format

JSON Lines, one pair per line, UTF-8:

| field | meaning |
|---|---|
| `id` | `seed-0001` ... stable within a release, assigned in (category, part id) order |
| `instruction` | what a user asks |
| `output` | the response |
| `category` | the kind of request (table below) |

It ships inside the humpback package, and the word `builtin` names it: `seed.path: builtin` in a run config (the
default), `humpback seed import builtin`, `humpback seed stats builtin`. Import it into a run (the seed schema
keeps `id, instruction, output, source`; the category is only used for the statistics here):

```
humpback seed import builtin --output runs/demo/seed.parquet
# keep 10% aside for evaluation, written to runs/demo/seed.heldout.parquet
humpback seed import builtin --output runs/demo/seed.parquet --heldout-fraction 0.1 --seed 0
```

## Contents

Lengths are counted in whitespace-separated words.

{stats}

## Editing

Pairs are written in `parts/*.jsonl` (fields `id, instruction, output, category`). Do not edit
`seed.jsonl` or this README by hand: `python tools/build_seed.py` merges the parts, checks that every
pair has all four fields and that no instruction appears twice, renumbers the ids, and regenerates both.
"""


def load_parts(parts_dir: Path) -> tuple[list[dict], list[str]]:
    """All pairs of all parts, each with its origin, and the list of problems found."""
    rows: list[dict] = []
    errors: list[str] = []
    files = sorted(parts_dir.glob("*.jsonl"))
    if not files:
        errors.append(f"{parts_dir}: no *.jsonl parts")
    for path in files:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            where = f"{path}:{lineno}"
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{where}: not valid JSON: {e.msg} (column {e.colno})")
                continue
            if not isinstance(record, dict):
                errors.append(f"{where}: expected a JSON object")
                continue
            missing = [k for k in FIELDS if k not in record]
            extra = sorted(set(record) - set(FIELDS))
            if missing:
                errors.append(f"{where}: missing key(s) {missing}")
            if extra:
                errors.append(f"{where}: unknown key(s) {extra} (allowed: {list(FIELDS)})")
            if missing or extra:
                continue
            bad = [k for k in FIELDS if not isinstance(record[k], str) or not record[k].strip()]
            if bad:
                errors.append(f"{where}: empty or non-text value(s) for {bad}")
                continue
            rows.append({**{k: record[k].strip() for k in FIELDS}, "_where": where})
    return rows, errors


def check_duplicates(rows: list[dict]) -> list[str]:
    errors = []
    first_instruction: dict[str, str] = {}
    first_id: dict[str, str] = {}
    for row in rows:
        key = normalize_text(row["instruction"])
        if key in first_instruction:
            errors.append(f"{row['_where']}: duplicate instruction (first at {first_instruction[key]})")
        else:
            first_instruction[key] = row["_where"]
        if row["id"] in first_id:
            errors.append(f"{row['_where']}: duplicate id '{row['id']}' (first at {first_id[row['id']]})")
        else:
            first_id[row["id"]] = row["_where"]
    return errors


def merge(rows: list[dict]) -> list[dict]:
    ordered = sorted(rows, key=lambda r: (r["category"], r["id"]))
    return [{"id": f"seed-{i:04d}", "instruction": r["instruction"], "output": r["output"],
             "category": r["category"]} for i, r in enumerate(ordered, start=1)]


def build(parts_dir: Path, output: Path, readme: Path, check_only: bool = False) -> tuple[int, list[str]]:
    """Merge and write; returns (number of pairs, problems). Nothing is written when there are problems."""
    rows, errors = load_parts(parts_dir)
    errors += check_duplicates(rows)
    if errors:
        return len(rows), errors
    merged = merge(rows)
    if check_only:
        return len(merged), []
    write_jsonl(merged, output)
    stats = format_stats(seed_stats(output), markdown=True)
    with atomic_path(readme, suffix=".md") as tmp:
        tmp.write_text(README_TEMPLATE.format(count=len(merged), stats=stats), encoding="utf-8")
    return len(merged), []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=Path, default=SEED_DIR / "parts")
    ap.add_argument("--output", type=Path, default=SEED_DIR / "seed.jsonl")
    ap.add_argument("--readme", type=Path, default=SEED_DIR / "README.md")
    ap.add_argument("--check", action="store_true", help="Validate the parts only; write nothing.")
    args = ap.parse_args(argv)
    count, errors = build(args.parts, args.output, args.readme, check_only=args.check)
    if errors:
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        print(f"{len(errors)} problem(s) in {args.parts}; nothing written", file=sys.stderr)
        return 1
    if args.check:
        print(f"{count} pairs in {args.parts}: OK")
    else:
        print(f"wrote {count} pairs to {args.output} and regenerated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
