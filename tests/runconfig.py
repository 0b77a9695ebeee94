"""Shared test helpers (tests/ is on sys.path through pytest's `pythonpath` setting)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from humpback.core.records import parquet_files
from humpback.stages.seed import BUILTIN_SEED_PATH

REPO = Path(__file__).resolve().parent.parent
# a random model writes no requests: the default filters would drop everything it writes
OPEN_FILTERS = {"request_patterns": [], "reject_patterns": [], "min_chars": 0, "max_copy_overlap": 1.0}


def tiny_run_config(tmp: Path, tiny_model_dir: str, **changes) -> Path:
    corpus = tmp / "corpus.jsonl"
    if not corpus.exists():  # fixed once: the quickstart corpus follows the installed packages
        from humpback.stages.prepare.quickstart import build_quickstart_corpus

        build_quickstart_corpus(corpus)
    seed = tmp / "seed.jsonl"
    if not seed.exists():
        lines = (BUILTIN_SEED_PATH).read_text().splitlines()
        # short pairs only: the tiny-model trainings use max_length 384
        seed.write_text("\n".join([line for line in lines if len(line) < 1200][:14]) + "\n")
    engine = {"dtype": "float32", "progress": False}
    cfg = {
        "name": "t",
        "base_model": tiny_model_dir,
        "rounds": 2,
        "corpus": {"inputs": [str(corpus)]},
        "prepare": {"progress": False},
        "seed": {"path": str(seed), "heldout_fraction": 0.2},
        "train": {"max_steps": 2, "batch_size": 2, "micro_batch_size": 2, "max_length": 384, "save_steps": 1},
        "augment": {"max_segments": 8, "chunk_size": 4, "candidates": 2, "generation": {"max_tokens": 12},
                    "engine": engine,
                    "filters": OPEN_FILTERS},
        "curate": {"scorer": {"kind": "humpback"}, "min_score": 2, "self_check_sample": 6, "chunk_size": 4,
                   "self_check_negatives": ["shuffled", "truncated", "boilerplate"], "engine": engine},
    }
    for key, value in changes.items():
        cur = cfg
        *parents, last = key.split(".")
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[last] = value
    path = tmp / f"run-{abs(hash(json.dumps(changes, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def rows(folder: Path, columns: list[str] | None = None) -> list[dict]:
    """Every row of the Parquet shards under ``folder`` (only ``columns`` if given), in a stable order."""
    out = []
    for f in parquet_files(folder) if Path(folder).exists() else []:
        out += pq.read_table(f, columns=columns).to_pylist()
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))
