"""The fault matrix (docs/reliability.md): every stage command killed with SIGKILL at an injected point, or hit by a
full disk (ENOSPC) while writing its output, then run again: nothing lost, nothing duplicated, and the same ids
and contents as an uninterrupted run of the same command.

Each cell runs the real CLI in a process group of its own with HUMPBACK_FAULT set (humpback/core/faults.py), so the
interruption lands at a known point, never after a sleep. Inputs come from one finished tiny-model run built
once for the module and never written to; every cell works in its own folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from humpback.core.faults import ENV as FAULT_ENV
from humpback.core.faults import POINTS
from humpback.loop import run_loop
from runconfig import OPEN_FILTERS, rows, tiny_run_config

# every stage killed and rerun: ~5 minutes, run by `make test-e2e` (and .ci/run), not by the default suite
pytestmark = pytest.mark.e2e


ENGINE = {"dtype": "float32", "progress": False}


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model_dir):
    """A finished tiny run (read-only here) and stage configs for the commands under test."""
    tmp = tmp_path_factory.mktemp("matrix")
    cfg = tiny_run_config(tmp, tiny_model_dir, rounds=1)
    run_loop(cfg, run_dir=str(tmp / "run"))
    (tmp / "augment.yaml").write_text(yaml.safe_dump({"chunk_size": 2, "generation": {"max_tokens": 8},
                                                      "engine": ENGINE, "filters": OPEN_FILTERS}))
    (tmp / "curate.yaml").write_text(yaml.safe_dump({"chunk_size": 2, "self_check_sample": 0, "min_score": 2,
                                                     "scorer": {"kind": "humpback"}, "engine": ENGINE}))
    (tmp / "train.yaml").write_text("dropout: 0.0\nsave_steps: 1\nbatch_size: 2\nmicro_batch_size: 2\n"
                                    "max_length: 384\nthreads: 1\n")
    return {"tmp": tmp, "run": tmp / "run", "cfg": cfg, "model": tiny_model_dir}


def _cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    # one thread: results must not depend on how a process splits its matmuls
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV} | {"OMP_NUM_THREADS": "1",
                                                                      "PYTHONUNBUFFERED": "1"}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "humpback", *args], env=env, capture_output=True, text=True,
                          timeout=600, start_new_session=True)


@dataclass(frozen=True)
class Cell:
    stage: str
    fault: str  # HUMPBACK_FAULT spec
    command: tuple  # CLI arguments; {in}, {out}, {model}, {tmp}, {run} are filled in
    outputs: tuple  # folders under OUT compared with the uninterrupted run: (folder, id column)

    @property
    def enospc(self) -> bool:
        return self.fault.endswith("=enospc")


def _args(cell: Cell, base: dict, out: Path) -> list[str]:
    fill = {"out": str(out), "model": base["model"], "tmp": str(base["tmp"]), "run": str(base["run"])}
    return [a.format(**fill) for a in cell.command]


AUGMENT = ("augment", "{run}/prepared", "--model", "{model}", "--output", "{out}", "--config", "{tmp}/augment.yaml",
           "--max-segments", "8")
CURATE = ("curate", "{run}/augment", "--model", "{model}", "--output", "{out}", "--config", "{tmp}/curate.yaml")
PREPARE = ("prepare", "{tmp}/corpus.jsonl", "--output", "{out}", "--tasks", "3", "--workers", "1", "--no-progress")
TRAIN = ("train", "backward", "--seed", "{run}/seed.parquet", "--base", "{model}", "--output", "{out}",
         "--config", "{tmp}/train.yaml", "--max-steps", "4")

CELLS = [
    Cell("prepare", "prepare.shard_written@2", PREPARE, (("segments", "segment_id"),)),
    Cell("prepare", "prepare.shard_written@2=enospc", PREPARE, (("segments", "segment_id"),)),
    Cell("augment", "augment.chunk_saved@2", AUGMENT, (("pairs", "pair_id"), ("rejected", "pair_id"))),
    Cell("augment", "shard.before_write=enospc", AUGMENT, (("pairs", "pair_id"), ("rejected", "pair_id"))),
    Cell("curate", "curate.chunk_saved@2", CURATE, (("scores", "pair_id"), ("curated", "pair_id"))),
    Cell("curate", "shard.before_write=enospc", CURATE, (("scores", "pair_id"), ("curated", "pair_id"))),
    Cell("train", "train.checkpoint_saved@2", TRAIN, ()),
    Cell("train", "train.checkpoint_saved@4", TRAIN, ()),  # the last step's checkpoint: nothing left to train
    Cell("train", "train.before_publish", TRAIN, ()),
]


@pytest.fixture(scope="module")
def references(base):
    """The uninterrupted result of each stage command, made once and shared by that stage's cells."""
    made: dict[str, Path] = {}

    def get(cell: Cell) -> Path:
        if cell.stage not in made:
            ref = base["tmp"] / f"reference-{cell.stage}"
            done = _cli(*_args(cell, base, ref))
            assert done.returncode == 0, done.stderr[-3000:]
            made[cell.stage] = ref
        return made[cell.stage]

    return get


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c.stage}-{c.fault}")
def test_interrupted_stage_reruns_to_the_uninterrupted_result(cell, base, references, tmp_path):
    assert cell.fault.split("@")[0].split("=")[0] in POINTS
    ref, out = references(cell), tmp_path / "out"

    hit = _cli(*_args(cell, base, out), fault=cell.fault)
    if cell.enospc:
        assert hit.returncode == 2, hit.stderr[-3000:]
        lines = [ln for ln in hit.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "no space left on device" in lines[0] and "Traceback" not in hit.stderr
    else:
        assert hit.returncode == -signal.SIGKILL, hit.stderr[-3000:]
    _nothing_looks_finished(cell, out)

    again = _cli(*_args(cell, base, out))
    assert again.returncode == 0, again.stderr[-3000:]
    for folder, key in cell.outputs:
        got, want = rows(out / folder), rows(ref / folder)
        ids = [r[key] for r in got]
        assert len(ids) == len(set(ids)), f"{folder}: duplicated ids"
        assert got == want, f"{folder}: rows differ from the uninterrupted run"
    if cell.stage == "train":
        _same_training(ref, out)


def _nothing_looks_finished(cell: Cell, out: Path) -> None:
    if cell.stage == "prepare":
        assert not (out / "segments").exists() and not (out / "stats.json").exists()
    elif cell.stage in ("augment", "curate"):
        for folder, _ in cell.outputs:
            assert not list((out / folder).glob("*.parquet")) if (out / folder).exists() else True
        assert not (out / "stats.json").exists()
    elif cell.stage == "train":
        assert not out.exists()  # published only by the final rename


def _same_training(ref: Path, out: Path) -> None:
    from safetensors.torch import load_file

    a, b = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(bool((a[k] == b[k]).all()) for k in a), "the resumed training ended with other weights"
    sa = json.loads((ref / "humpback_train.json").read_text())
    sb = json.loads((out / "humpback_train.json").read_text())
    assert sa["results"]["global_step"] == sb["results"]["global_step"]
    assert [e["loss"] for e in sa["log_history"] if "loss" in e] == [e["loss"] for e in sb["log_history"]
                                                                      if "loss" in e]


def test_export_killed_before_publishing_keeps_the_previous_export(base, tmp_path):
    out = tmp_path / "export"
    first = _cli("export", str(base["run"]), "--to-dir", str(out), "--min-score", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p.name: p.read_bytes() for p in sorted((out / "data").iterdir())}
    killed = _cli("export", str(base["run"]), "--to-dir", str(out), "--min-score", "3",
                  fault="export.before_publish")
    assert killed.returncode == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in sorted((out / "data").iterdir())} == before  # the old one, whole
    again = _cli("export", str(base["run"]), "--to-dir", str(out), "--min-score", "3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "humpback_export.json").read_text())["min_score"] == 3
    assert not out.with_name("export.partial").exists() and not out.with_name("export.previous").exists()
    scores = [r["score"] for r in rows(out / "data", ["score"])]
    assert all(s >= 3 for s in scores)


def test_run_killed_after_a_stage_resumes_without_redoing_it(base, tmp_path):
    root = tmp_path / "run"
    cfg = base["cfg"]
    killed = _cli("run", str(cfg), "--run-dir", str(root), "--until", "augment", fault="run.stage_done@3")
    assert killed.returncode == -signal.SIGKILL
    manifest = json.loads((root / "manifest.json").read_text())["stages"]
    assert [n for n, r in manifest.items() if r["status"] == "done"] == ["prepare", "seed", "backward"]
    again = _cli("run", str(cfg), "--run-dir", str(root), "--until", "augment")
    assert again.returncode == 0, again.stderr[-3000:]
    for name in ("prepare", "seed", "backward"):
        assert f"[{name}] up to date" in again.stderr
    manifest = json.loads((root / "manifest.json").read_text())["stages"]
    assert all(r["status"] == "done" for r in manifest.values())
    # the same segments as the uninterrupted run, each augmented once
    want = sorted(r["segment_id"] for r in rows(base["run"] / "augment" / "pairs", ["segment_id"]) +
                  rows(base["run"] / "augment" / "rejected", ["segment_id"]))
    got = sorted(r["segment_id"] for r in rows(root / "augment" / "pairs", ["segment_id"]) +
                 rows(root / "augment" / "rejected", ["segment_id"]))
    assert got == want


def test_the_matrix_in_the_docs_lists_every_cell():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    for cell in CELLS:
        assert f"`{cell.fault}`" in doc, cell.fault
    for point in ("export.before_publish", "run.stage_done@3"):
        assert f"`{point}`" in doc
