"""Every command on every kind of bad input: one line ``error: ...`` naming the file (and line or key), exit 2,
no traceback, and nothing left behind that looks complete.

The expected lines are the table in docs/errors.md; each cell here runs the real CLI and compares what it printed
with its row, so the table cannot drift. ``HUMPBACK_UPDATE_ERRORS_DOC=1`` rewrites the rows the cells ran with
what the commands printed (review the diff).

Permission cells need a process that the file modes apply to: as root, the command runs in a subprocess whose
capability bounding set lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, i.e. a root that obeys chmod.
"""

from __future__ import annotations

import ctypes
import gzip
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from humpback.core import faults, records
from humpback.cli import main
from humpback.core.faults import ENV as FAULT_ENV

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "errors.md"
UPDATE_ENV = "HUMPBACK_UPDATE_ERRORS_DOC"
START, END = "<!-- errors-table:start -->", "<!-- errors-table:end -->"

DAMAGES = {
    "truncated": "truncated file",
    "non-utf8": "non-UTF-8 bytes",
    "invalid": "invalid JSON / YAML",
    "missing": "missing column or key",
    "unreadable": "unreadable input (permission denied)",
    "unwritable": "unwritable output (permission denied)",
    "disk-full": "disk full (ENOSPC)",
    "model": "unknown model reference",
}
COMMANDS = ["seed", "prepare", "train", "augment", "curate", "run", "export", "stats", "eval", "rest"]

PAIRS = [{"id": f"p{i}", "instruction": f"Explain topic number {i} to a curious friend in two sentences.",
          "output": f"Topic {i} is about how small things add up. It matters because every part {i} counts."}
         for i in range(4)]
DOCS = [{"id": "d0", "text": "# Watering basil\n\nBasil likes bright light and moist soil. Water it when the top "
                             "of the soil is dry, and pinch off the flowers so that it keeps growing leaves."}]
PROBLEMS = [{"id": f"q{i}", "problem": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(1, 5)]


# ---------------------------------------------------------------------------------------------- bad files
def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def cut_gzip(rows: list[dict], path: Path, keep: int) -> Path:
    """A .jsonl.gz whose data stops after ``keep`` complete lines (no end-of-stream marker, no trailer): a
    download cut short, made the same way by every zlib."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(_jsonl(rows[:keep])) + c.flush(zlib.Z_FULL_FLUSH)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    path.write_bytes(header + body)
    return path


def damaged_jsonl(kind: str, rows: list[dict], path: Path, drop: str) -> Path:
    """``rows`` as JSONL with the damage ``kind`` (truncated: a cut .jsonl.gz; missing: key ``drop`` gone)."""
    if kind == "truncated":
        return cut_gzip(rows, path.with_name(path.name + ".gz"), keep=len(rows) - 1)
    if kind == "non-utf8":  # Latin-1 "é" in the last record
        last = json.dumps(rows[-1]).encode().replace(b"to ", b"caf\xe9 ", 1).replace(b"is ", b"caf\xe9 ", 1)
        path.write_bytes(_jsonl(rows[:-1]) + last + b"\n")
    elif kind == "invalid":
        path.write_bytes(_jsonl(rows[:-1]) + json.dumps(rows[-1]).encode()[:-1] + b"\n")  # no closing brace
    elif kind == "missing":
        path.write_bytes(_jsonl([{k: v for k, v in r.items() if k != drop} for r in rows]))
    else:
        path.write_bytes(_jsonl(rows))
    return path


def cut_parquet(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def drop_column(path: Path, column: str) -> Path:
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([column]), path)
    return path


def bad_yaml(kind: str, path: Path, good: dict) -> Path:
    text = yaml.safe_dump(good)
    if kind == "non-utf8":
        path.write_bytes(text.encode() + b"# caf\xe9\n")
    else:  # an unclosed flow mapping
        path.write_text(text + "oops: {unclosed: [1, 2\n")
    return path


def read_only_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    return path


def unreadable(path: Path) -> Path:
    path.chmod(0)
    return path


# ---------------------------------------------------------------------------------------------- cells
@dataclass
class Invocation:
    argv: list[str]
    given: str  # what the table says was damaged
    must_not_exist: list[Path] = field(default_factory=list)  # complete-looking outputs
    env: dict[str, str] = field(default_factory=dict)
    obey_chmod: bool = False  # run as a process that file modes apply to (see the module docstring)
    expect_exit: int = 2


@dataclass
class Ctx:
    tmp: Path
    tiny: str
    curated: Path  # a finished curate output (export's input)


def fault(point: str) -> dict[str, str]:
    return {FAULT_ENV: f"{point}=enospc"}


def seed_cell(c: Ctx, kind: str) -> Invocation | str:
    out = c.tmp / "out" / "seed.parquet"
    outs = [out, c.tmp / "out" / "seed.heldout.parquet"]
    src = damaged_jsonl(kind, PAIRS, c.tmp / "seed.jsonl", drop="output")
    argv = ["seed", "import", str(src), "-o", str(out)]
    given = {"truncated": "SRC: .jsonl.gz cut short", "non-utf8": "SRC: .jsonl", "invalid": "SRC: .jsonl",
             "missing": "SRC: .jsonl without `output`"}
    if kind in given:
        return Invocation(argv, given[kind], outs)
    if kind == "unreadable":
        return Invocation(argv[:2] + [str(unreadable(src))] + argv[3:], "SRC chmod 000", outs, obey_chmod=True)
    if kind == "unwritable":
        ro = read_only_dir(c.tmp / "ro")
        return Invocation(argv[:3] + ["-o", str(ro / "seed.parquet")], "-o in a read-only folder",
                          [ro / "seed.parquet"], obey_chmod=True)
    if kind == "disk-full":
        return Invocation(argv, "writing seed.parquet", outs, env=fault("write:seed.parquet"))
    return "takes no model"


def prepare_cell(c: Ctx, kind: str) -> Invocation | str:
    out = c.tmp / "prep"
    src = damaged_jsonl(kind, DOCS, c.tmp / "corpus.jsonl", drop="text")
    if kind == "truncated":  # nothing of it is readable: a partly readable corpus is quarantined (docs/prepare.md)
        src = cut_gzip(DOCS, c.tmp / "corpus.jsonl.gz", keep=0)
    argv = ["prepare", str(src), "-o", str(out), "--no-progress", "--workers", "1"]
    outs = [out / "stats.json"]
    given = {"truncated": "INPUT: .jsonl.gz cut before its first line", "non-utf8": "INPUT: .jsonl, its only record",
             "invalid": "INPUT: .jsonl, its only record", "missing": "INPUT: .jsonl without `text`"}
    if kind in given:
        return Invocation(argv, given[kind], outs)
    if kind == "unreadable":
        return Invocation(["prepare", str(unreadable(src))] + argv[2:], "INPUT chmod 000", outs, obey_chmod=True)
    if kind == "unwritable":
        ro = read_only_dir(c.tmp / "ro")
        return Invocation(argv[:2] + ["-o", str(ro / "prep")] + argv[4:], "-o in a read-only folder",
                          [ro / "prep"], obey_chmod=True)
    if kind == "disk-full":
        return Invocation(argv, "writing stats.json", outs, env=fault("write:stats.json"))
    return "takes no model"


def train_cell(c: Ctx, kind: str) -> Invocation | str:
    out = c.tmp / "model"
    seed = damaged_jsonl(kind, PAIRS, c.tmp / "seed.jsonl", drop="output")
    if kind == "truncated":  # training reads .parquet and .jsonl (not .gz)
        seed = c.tmp / "seed.parquet"
        records.write_parquet([{**p, "source": "t"} for p in PAIRS], seed, "seed")
        cut_parquet(seed)
    argv = ["train", "backward", "--seed", str(seed), "--base", c.tiny, "--output", str(out), "--max-steps", "1",
            "--config", str(_train_yaml(c))]
    outs = [out]
    given = {"truncated": "--seed: .parquet cut in half", "non-utf8": "--seed: .jsonl", "invalid": "--seed: .jsonl",
             "missing": "--seed: .jsonl without `output`"}
    if kind in given:
        return Invocation(argv, given[kind], outs)
    if kind == "unreadable":
        unreadable(seed)
        return Invocation(argv, "--seed chmod 000", outs, obey_chmod=True)
    if kind == "unwritable":
        ro = read_only_dir(c.tmp / "ro")
        argv[argv.index("--output") + 1] = str(ro / "model")
        return Invocation(argv, "--output in a read-only folder", [ro / "model"], obey_chmod=True)
    if kind == "disk-full":
        return Invocation(argv, "writing the model's humpback_train.json", outs,
                          env=fault("write:humpback_train.json"))
    argv[argv.index("--base") + 1] = "no-such-model"
    return Invocation(argv, "--base no-such-model", outs)


def _train_yaml(c: Ctx) -> Path:
    path = c.tmp / "train.yaml"
    path.write_text(yaml.safe_dump({"batch_size": 2, "micro_batch_size": 2, "max_length": 128, "save_steps": 1,
                                    "threads": 1}))
    return path


def _segments(folder: Path) -> Path:
    rows = [{"segment_id": f"s{i}", "text": p["output"], "heading": "H", "doc_id": f"d{i}", "url": None,
             "source": "t", "char_start": 0, "char_end": len(p["output"]), "lang": "en", "lang_score": 1.0}
            for i, p in enumerate(PAIRS)]
    records.write_parquet(rows, folder / "segments" / "00000.parquet", "segment")
    return folder


AUGMENT_CFG = {"generation": {"max_tokens": 4}, "engine": {"dtype": "float32", "progress": False},
               "executor": {"workers": 1, "tasks": 1},
               "filters": {"request_patterns": [], "reject_patterns": [], "min_chars": 0, "max_copy_overlap": 1.0}}


def augment_cell(c: Ctx, kind: str) -> Invocation | str:
    out = c.tmp / "aug"
    segs = _segments(c.tmp / "prepared")
    shard = segs / "segments" / "00000.parquet"
    cfg = c.tmp / "augment.yaml"
    cfg.write_text(yaml.safe_dump(AUGMENT_CFG))
    argv = ["augment", str(segs), "--model", c.tiny, "-o", str(out), "--config", str(cfg)]
    outs = [out / "stats.json", out / "pairs" / "00000.parquet"]
    if kind == "truncated":
        cut_parquet(shard)
        return Invocation(argv, "INPUT: segment shard cut in half", outs)
    if kind in ("non-utf8", "invalid"):
        bad_yaml(kind, cfg, AUGMENT_CFG)
        return Invocation(argv, "--config YAML", outs)
    if kind == "missing":
        drop_column(shard, "text")
        return Invocation(argv, "INPUT: segment shard without `text`", outs)
    if kind == "unreadable":
        unreadable(shard)
        return Invocation(argv, "INPUT: segment shard chmod 000", outs, obey_chmod=True)
    if kind == "unwritable":
        ro = read_only_dir(c.tmp / "ro")
        argv[argv.index("-o") + 1] = str(ro / "aug")
        return Invocation(argv, "-o in a read-only folder", [ro / "aug"], obey_chmod=True)
    if kind == "disk-full":
        return Invocation(argv, "writing the pairs shard", outs, env=fault("shard.before_write"))
    argv[argv.index("--model") + 1] = "no-such-model"
    return Invocation(argv, "--model no-such-model", outs)


def curate_cell(c: Ctx, kind: str) -> Invocation | str:
    out = c.tmp / "cur"
    pairs = damaged_jsonl(kind, PAIRS, c.tmp / "pairs.jsonl", drop="output")
    argv = ["curate", str(pairs), "--model", c.tiny, "-o", str(out), "--scorer", "pmi", "--self-check", "0",
            "--workers", "1", "--tasks", "1", "--config", str(_engine_yaml(c))]
    outs = [out / "stats.json", out / "curated"]
    given = {"truncated": "PAIRS: .jsonl.gz cut short", "non-utf8": "PAIRS: .jsonl", "invalid": "PAIRS: .jsonl",
             "missing": "PAIRS: .jsonl without `output`"}
    if kind in given:
        return Invocation(argv, given[kind], outs)
    if kind == "unreadable":
        unreadable(pairs)
        return Invocation(argv, "PAIRS chmod 000", outs, obey_chmod=True)
    if kind == "unwritable":
        ro = read_only_dir(c.tmp / "ro")
        argv[argv.index("-o") + 1] = str(ro / "cur")
        return Invocation(argv, "-o in a read-only folder", [ro / "cur"], obey_chmod=True)
    if kind == "disk-full":
        return Invocation(argv, "writing the scores shard", outs, env=fault("shard.before_write"))
    argv[argv.index("--model") + 1] = "no-such-model"
    return Invocation(argv, "--model no-such-model", outs)


def _engine_yaml(c: Ctx) -> Path:
    path = c.tmp / "curate.yaml"
    path.write_text(yaml.safe_dump({"engine": {"dtype": "float32", "progress": False}, "chunk_size": 4}))
    return path


def run_cell(c: Ctx, kind: str) -> Invocation | str:
    root = c.tmp / "run"
    corpus = c.tmp / "corpus.jsonl"
    corpus.write_bytes(_jsonl(DOCS))
    seed = damaged_jsonl(kind, PAIRS, c.tmp / "seed.jsonl", drop="output")
    cfg = {"name": "t", "base_model": c.tiny, "rounds": 1, "corpus": {"inputs": [str(corpus)]},
           "prepare": {"progress": False, "workers": 1}, "seed": {"path": str(seed), "heldout_fraction": 0.0}}
    path = c.tmp / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = ["run", str(path), "--run-dir", str(root)]
    outs = [root / "seed.parquet", root / "models"]
    given = {"truncated": "seed.path: .jsonl.gz cut short", "non-utf8": "seed.path: .jsonl",
             "invalid": "CONFIG YAML", "missing": "seed.path: .jsonl without `output`"}
    if kind == "invalid":
        bad_yaml(kind, path, cfg)
    if kind in given:
        return Invocation(argv, given[kind], outs)
    if kind == "unreadable":
        unreadable(seed)
        return Invocation(argv, "seed.path chmod 000", outs, obey_chmod=True)
    if kind == "unwritable":
        ro = read_only_dir(c.tmp / "ro")
        return Invocation(argv[:2] + ["--run-dir", str(ro / "run")], "--run-dir in a read-only folder",
                          [ro / "run"], obey_chmod=True)
    if kind == "disk-full":
        return Invocation(argv, "writing seed.parquet", outs, env=fault("write:seed.parquet"))
    path.write_text(yaml.safe_dump({**cfg, "base_model": "no-such-model"}))
    return Invocation(argv, "base_model: no-such-model", [root])


def export_cell(c: Ctx, kind: str) -> Invocation | str:
    src = c.tmp / "cur"
    shutil.copytree(c.curated, src)
    shard = next((src / "scores").glob("*.parquet"))
    out = c.tmp / "export"
    argv = ["export", str(src), "--to-dir", str(out), "--min-score", "1"]
    outs = [out]
    if kind == "truncated":
        cut_parquet(shard)
        return Invocation(argv, "DIR: scores shard cut in half", outs)
    if kind == "non-utf8":
        exclude = damaged_jsonl(kind, [{"pair_id": "x"}, {"pair_id": "y is z"}], c.tmp / "flagged.jsonl", "")
        return Invocation(argv + ["--exclude", str(exclude)], "--exclude .jsonl", outs)
    if kind == "invalid":
        stats_file = src / "stats.json"
        stats_file.write_text(stats_file.read_text()[:50])
        return Invocation(argv, "DIR/stats.json", outs)
    if kind == "missing":
        drop_column(shard, "score")
        return Invocation(argv, "DIR: scores shard without `score`", outs)
    if kind == "unreadable":
        unreadable(shard)
        return Invocation(argv, "DIR: scores shard chmod 000", outs, obey_chmod=True)
    if kind == "unwritable":
        ro = read_only_dir(c.tmp / "ro")
        argv[argv.index("--to-dir") + 1] = str(ro / "export")
        return Invocation(argv, "--to-dir in a read-only folder", [ro / "export"], obey_chmod=True)
    if kind == "disk-full":
        return Invocation(argv, "writing humpback_export.json", outs, env=fault("write:humpback_export.json"))
    return "takes no model"


def stats_cell(c: Ctx, kind: str) -> Invocation | str:
    pairs = damaged_jsonl(kind, PAIRS, c.tmp / "pairs.jsonl", drop="output")
    if kind == "missing":  # pairs without outputs are no known data set; without `instruction` neither
        pairs.write_bytes(_jsonl([{"id": p["id"], "note": p["output"]} for p in PAIRS]))
    plot = c.tmp / "plot.png"
    argv = ["stats", str(pairs)]
    given = {"truncated": "PATH: .jsonl.gz cut short", "non-utf8": "PATH: .jsonl", "invalid": "PATH: .jsonl",
             "missing": "PATH: .jsonl with none of the known columns"}
    if kind in given:
        return Invocation(argv, given[kind])
    if kind == "unreadable":
        return Invocation(["stats", str(unreadable(pairs))], "PATH chmod 000", obey_chmod=True)
    if kind == "unwritable":
        ro = read_only_dir(c.tmp / "ro")
        return Invocation(argv + ["--plot", str(ro / "plot.png")], "--plot in a read-only folder",
                          [ro / "plot.png"], obey_chmod=True)
    if kind == "disk-full":
        return Invocation(argv + ["--plot", str(plot)], "writing the --plot PNG", [plot], env=fault("write:plot.png"))
    return "takes no model"


def eval_cell(c: Ctx, kind: str) -> Invocation | str:
    out = c.tmp / "eval"
    data = damaged_jsonl(kind, PAIRS, c.tmp / "heldout.jsonl", drop="output")
    argv = ["eval", "heldout", "--models", c.tiny, "--data", str(data), "-o", str(out), "--bootstrap", "0",
            "--dtype", "float32", "--system", "none"]
    outs = [out / "heldout.json"]
    given = {"truncated": "--data: .jsonl.gz cut short", "non-utf8": "--data: .jsonl", "invalid": "--data: .jsonl",
             "missing": "--data: .jsonl without `output`"}
    if kind in given:
        return Invocation(argv, given[kind], outs)
    if kind == "unreadable":
        unreadable(data)
        return Invocation(argv, "--data chmod 000", outs, obey_chmod=True)
    if kind == "unwritable":
        ro = read_only_dir(c.tmp / "ro")
        argv[argv.index("-o") + 1] = str(ro / "eval")
        return Invocation(argv, "-o in a read-only folder", [ro / "eval"], obey_chmod=True)
    if kind == "disk-full":
        return Invocation(argv, "writing per_example.jsonl", outs, env=fault("write:per_example.jsonl"))
    argv[argv.index("--models") + 1] = "no-such-model"
    return Invocation(argv, "--models no-such-model", outs)


def rest_cell(c: Ctx, kind: str) -> Invocation | str:
    root = c.tmp / "rest"
    problems = damaged_jsonl(kind, PROBLEMS, c.tmp / "problems.jsonl", drop="problem")
    cfg = {"run_dir": str(root), "model": c.tiny, "problems": {"path": str(problems)}, "iterations": 1,
           "engine": {"dtype": "float32", "progress": False}}
    path = c.tmp / "rest.yaml"
    path.write_text(yaml.safe_dump(cfg))
    argv = ["rest", str(path)]
    outs = [root / "problems"]
    given = {"truncated": "problems.path: .jsonl.gz cut short", "non-utf8": "problems.path: .jsonl",
             "invalid": "problems.path: .jsonl", "missing": "problems.path: .jsonl without `problem`"}
    if kind in given:
        return Invocation(argv, given[kind], outs)
    if kind == "unreadable":
        unreadable(problems)
        return Invocation(argv, "problems.path chmod 000", outs, obey_chmod=True)
    if kind == "unwritable":
        ro = read_only_dir(c.tmp / "ro")
        path.write_text(yaml.safe_dump({**cfg, "run_dir": str(ro / "rest")}))
        return Invocation(argv, "run_dir in a read-only folder", [ro / "rest"], obey_chmod=True)
    if kind == "disk-full":
        return Invocation(argv, "writing problems/train.jsonl", outs, env=fault("write:train.jsonl"))
    path.write_text(yaml.safe_dump({**cfg, "model": "no-such-model"}))
    return Invocation(argv, "model: no-such-model", [root])


CELLS: dict[str, Callable[[Ctx, str], Invocation | str]] = {
    "seed": seed_cell, "prepare": prepare_cell, "train": train_cell, "augment": augment_cell,
    "curate": curate_cell, "run": run_cell, "export": export_cell, "stats": stats_cell, "eval": eval_cell,
    "rest": rest_cell,
}


# ---------------------------------------------------------------------------------------------- running
def _obey_chmod() -> None:  # preexec_fn: drop the capabilities that let root ignore file modes
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def invoke(inv: Invocation, cwd: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the real CLI."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV} | inv.env
    if inv.obey_chmod:
        proc = subprocess.run([sys.executable, "-m", "humpback", *inv.argv], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=600, preexec_fn=_obey_chmod if os.geteuid() == 0 else None)
        return proc.returncode, proc.stdout, proc.stderr
    faults._hits.clear()  # fault points count their hits per process; each invocation is a process of its own
    # main() calls logging.basicConfig, which binds the first invocation's captured stderr for good otherwise
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    old_cwd = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, inv.argv, env=inv.env | {FAULT_ENV: inv.env.get(FAULT_ENV)})
    finally:
        os.chdir(old_cwd)
        root.handlers[:] = saved
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        return 1, result.stdout, result.stderr + "".join(traceback.format_exception(result.exception))
    return result.exit_code, result.stdout, result.stderr


def normalise(line: str, tmp: Path) -> str:
    from huggingface_hub import constants

    line = line.replace(str(tmp.resolve()), "TMP").replace(str(tmp), "TMP")
    line = re.sub(r"-[0-9a-f]{16}\b", "-HASH", line)  # work folders keyed by a hash of paths and settings
    return line.replace(str(constants.HF_HUB_CACHE), "HF_CACHE")


# ---------------------------------------------------------------------------------------------- the doc
def doc_rows() -> dict[tuple[str, str], tuple[str, str]]:
    """(bad input, command) -> (given, printed) from the table in docs/errors.md."""
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    rows = {}
    if START in text:
        for line in text.split(START, 1)[1].split(END, 1)[0].splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            if len(cells) == 4 and cells[0] in DAMAGES.values():
                rows[(cells[0], cells[1])] = (cells[2], cells[3].strip("`"))
    return rows


def write_doc_row(damage: str, command: str, given: str, printed: str) -> None:
    rows = doc_rows()
    rows[(DAMAGES[damage], command)] = (given, printed)
    lines = ["| bad input | command | what was given | what it prints (exit 2) |", "|---|---|---|---|"]
    for d in DAMAGES.values():
        for cmd in COMMANDS:
            g, p = rows.get((d, cmd), ("", ""))
            shown = p if p.startswith("—") else f"`{p}`"
            lines.append(f"| {d} | {cmd} | {g} | {shown} |")
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    DOC.write_text(head + START + "\n" + "\n".join(lines) + "\n" + END + rest.split(END, 1)[1], encoding="utf-8")


# ---------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def curated(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished `humpback curate` output (scored by the tiny model), for export's cells."""
    from humpback.core.config import EngineConfig
    from humpback.stages.curate import CurateConfig, run_curate
    from humpback.stages.scorers import ScorerConfig

    tmp = tmp_path_factory.mktemp("curated")
    records.write_jsonl(PAIRS, tmp / "pairs.jsonl")
    run_curate(str(tmp / "pairs.jsonl"), tiny_model_dir, str(tmp / "cur"), CurateConfig(
        scorer=ScorerConfig(kind="pmi"), self_check_sample=0, min_score=1, chunk_size=4,
        engine=EngineConfig(dtype="float32", progress=False), executor={"workers": 1, "tasks": 1}))
    return tmp / "cur"


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_input_gives_one_line_and_exit_2(command, damage, tmp_path, tiny_model_dir, request):
    curated_dir = request.getfixturevalue("curated") if command == "export" else Path("/nonexistent")
    tmp = tmp_path / "t"
    tmp.mkdir()
    cell = CELLS[command](Ctx(tmp, tiny_model_dir, curated_dir), damage)
    expected = doc_rows().get((DAMAGES[damage], command))
    if isinstance(cell, str):
        if os.environ.get(UPDATE_ENV):
            write_doc_row(damage, command, "", f"— ({cell})")
        else:
            assert expected == ("", f"— ({cell})"), f"docs/errors.md: row {DAMAGES[damage]} | {command}"
        return
    try:
        code, out, err = invoke(cell, tmp)
    finally:
        for p in tmp.rglob("*"):  # let pytest clean up what the cell locked away
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | stat.S_IRWXU)
    both = out + err
    assert "Traceback" not in both, both[-4000:]
    assert code == cell.expect_exit, both[-4000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-4000:]
    assert err.rstrip().splitlines()[-1] == errors[0]  # the last thing said, after any progress
    printed = normalise(errors[0], tmp)
    assert "TMP/" in printed or "HF_CACHE" in printed, f"the line names no file: {printed}"
    left = [p for p in cell.must_not_exist if p.exists() and (p.is_file() or any(p.rglob("*.parquet")) or
                                                               any(p.rglob("*.json")))]
    assert not left, f"{printed}: left behind as if complete: {left}"
    temp = [p for p in tmp.rglob(".*.tmp")]
    assert not temp, f"temporary files left: {temp}"
    if os.environ.get(UPDATE_ENV):
        write_doc_row(damage, command, cell.given, printed)
        return
    assert expected == (cell.given, printed), (
        f"docs/errors.md row '{DAMAGES[damage]} | {command}' says {expected}, the command printed {printed!r} "
        f"(rerun with {UPDATE_ENV}=1 to update the table)")


def test_errors_doc_has_one_row_per_cell():
    rows = doc_rows()
    assert sorted(rows) == sorted((d, c) for d in DAMAGES.values() for c in COMMANDS)
    assert all(p for _, p in rows.values()), "a row without what the command prints"


def test_prepare_quarantines_a_few_bad_records_and_says_so(tmp_path):
    """A corpus with some good records is not refused: its bad records are set aside (docs/prepare.md) and one
    warning line names the first of them."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(_jsonl(DOCS) + b'{"id": "d1", "text": "caf\xe9"}\n')
    result = CliRunner().invoke(main, ["prepare", str(corpus), "-o", str(tmp_path / "p"), "--no-progress",
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"warning: 1 of 2 record(s) quarantined, e.g. {corpus}:2: invalid_utf8")
    assert (tmp_path / "p" / "stats.json").is_file()


def test_the_truncated_gzip_of_the_table_is_cut_at_a_line_boundary(tmp_path):
    path = cut_gzip(PAIRS, tmp_path / "x.jsonl.gz", keep=2)
    with gzip.open(path, "rb") as f:
        assert f.readline() and f.readline()
        with pytest.raises(EOFError):
            f.readline()
