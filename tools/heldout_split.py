"""Split each held-out FAQ set into dev (first N after `random.Random(0).shuffle`) and test (the rest).

The dev split is the only part anything is fitted or tuned on (the backward recipe, the `humpback` scorer's
blend); figures are reported on the test split. Writes NAME.dev.jsonl and NAME.test.jsonl beside NAME.jsonl.

    .venv/bin/python tools/heldout_split.py data/heldout/debian_faq.jsonl data/heldout/python_faq.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from humpback.core.records import write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", type=Path)
    ap.add_argument("--dev", type=int, default=40)
    args = ap.parse_args()
    for path in args.sets:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        random.Random(0).shuffle(rows)
        for name, part in (("dev", rows[: args.dev]), ("test", rows[args.dev:])):
            out = path.with_suffix(f".{name}.jsonl")
            write_jsonl(part, out)
            print(f"{out}: {len(part)} pairs")


if __name__ == "__main__":
    main()
