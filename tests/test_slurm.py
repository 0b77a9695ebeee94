"""`humpback run` on a real single-node Slurm (tests/slurm_cluster.py): the tiny loop as one job per stage makes
the same pairs and scores as the local executor; `--status` shows queued/running/done; a job cancelled in the
middle of augment and a re-run lose and duplicate nothing. `make test-slurm` (9.5 minutes on a busy 2-core box)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from humpback.core.faults import ENV as FAULT_ENV
from humpback.core.faults import RELEASE_ENV
from humpback.core.slurm import cancel, job_state
from humpback.loop import run_loop
from runconfig import REPO, rows, tiny_run_config
from slurm_cluster import slurm_cluster  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.slurm

# what a stage's records are identified by: the same ids locally and on Slurm, none twice
IDS = {"augment/pairs": ["pair_id", "segment_id"], "augment/rejected": ["segment_id"],
       "curate/r1/scores": ["pair_id", "score"], "curate/r1/curated": ["pair_id"], "export": ["pair_id"]}


def _cli(cfg: Path, root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # the jobs inherit this environment (sbatch --export=ALL): PYTHONPATH makes them import this checkout
    env = (env or {k: v for k, v in os.environ.items() if k != FAULT_ENV}) | {"PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "humpback", "run", str(cfg), "--run-dir", str(root), *args],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def _stages(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())["stages"]


def _wait(what: str, check, deadline_s: float = 420):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _watch_until_done(cfg: Path, root: Path) -> set[str]:
    """Poll `--status` until every stage is done and the last job has ended (it writes the report after its stage
    is recorded); returns every state the table showed on the way."""
    seen: set[str] = set()

    def finished():
        table = _cli(cfg, root, "--status").stdout
        states = {line.split()[1] for line in table.splitlines()[2:-1]}
        seen.update(states)
        assert "failed" not in states, table + "".join(p.read_text()[-1500:] for p in (root / "logs").glob("*.out"))
        return states == {"done"}

    _wait("every stage to finish", finished)
    last = _stages(root)["export"]["job"]
    _wait("the last job to end", lambda: not job_state(last).active)
    return seen


def _ids(root: Path) -> dict[str, list]:
    out = {}
    for folder, columns in IDS.items():
        got = [tuple(r[c] for c in columns) for r in rows(root / folder, columns)]
        assert len(set(got)) == len(got) and (got or folder.endswith("rejected")), f"{folder}: duplicated or missing"
        out[folder] = got
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, slurm_cluster):  # noqa: F811
    """The tiny loop (1 round) run locally, then the same config on Slurm in the same folder (ids name it)."""
    tmp = tmp_path_factory.mktemp("slurm-loop")
    # curate's two datatrove tasks: on Slurm a job array of two, then the stage's job
    local_cfg = tiny_run_config(tmp, tiny_model_dir, rounds=1, **{"evaluate.backward": False,
                                                                   "curate.executor": {"tasks": 2}})
    cfg = yaml.safe_load(local_cfg.read_text())
    cfg["executor"] = {"kind": "slurm", "slurm": {"cpus": 1, "mem_gb": 3, "job_name": "hb-test"}}
    slurm_cfg = tmp / "slurm.yaml"
    slurm_cfg.write_text(yaml.safe_dump(cfg))
    root = tmp / "run"
    run_loop(local_cfg, run_dir=str(root))
    local = _ids(root)
    shutil.move(root, tmp / "run-local")
    return tmp, slurm_cfg, root, local


def test_the_loop_on_slurm_makes_the_local_ids_and_status_follows_it(runs):
    tmp, cfg, root, local = runs
    if root.exists():  # the other test ran first (random order): start afresh in the same folder (ids name it)
        shutil.move(root, tmp / "run-before")
    submitted = _cli(cfg, root)
    assert "queued" in submitted.stdout and "watch: humpback run" in submitted.stdout
    stages = _stages(root)
    assert all(rec["status"] != "pending" and rec["job"] for rec in stages.values())  # the first may have started
    script = (root / "slurm" / "augment.sbatch").read_text()
    assert "--only augment" in script and "#SBATCH --cpus-per-task=1" in script and "#SBATCH --mem=3G" in script
    assert "#SBATCH --array=0-1" in (root / "slurm" / "curate-r1.array.sbatch").read_text()
    assert stages["curate-r1"]["array_job"] and stages["augment"]["array_job"] is None
    seen = _watch_until_done(cfg, root)
    assert {"queued", "running", "done"} <= seen
    assert _ids(root) == local
    assert all((root / "logs" / f"curate-r1.task{i}.slurm.out").is_file() for i in (0, 1))
    assert (root / "report.html").is_file() and "outputs:" in (root / "logs" / "export.slurm.out").read_text()
    again = _cli(cfg, root)  # everything is done: nothing is submitted
    assert "submitted" not in again.stderr and _stages(root)["export"]["status"] == "done"
    print(_cli(cfg, root, "--status").stdout)


def test_a_job_cancelled_in_augment_then_a_rerun_loses_and_duplicates_nothing(runs):
    tmp, cfg, root, local = runs  # a finished Slurm run, or none yet (random order): --from works on both
    env = {k: v for k, v in os.environ.items()} | {FAULT_ENV: "augment.chunk_saved=pause",
                                                     RELEASE_ENV: str(tmp / "never")}
    _cli(cfg, root, "--from", "augment", env=env)
    job = _stages(root)["augment"]["job"]
    logs = [root / "logs" / "augment.log", root / "logs" / "augment.slurm.out"]
    _wait("augment to pause after its first chunk",
          lambda: any(p.is_file() and "paused at augment.chunk_saved" in p.read_text() for p in logs))
    cancel(job)
    _wait("the cancelled job to end", lambda: not job_state(job).active)
    status = _cli(cfg, root, "--status").stdout
    assert any(line.split()[:2] == ["augment", "failed"] and "cancelled" in line for line in status.splitlines()), \
        status
    chunks = list((root / "augment" / ".work" / "augment").rglob("*.parquet"))
    assert len(chunks) == 1  # the first of two chunks was checkpointed before the cancel

    _cli(cfg, root)  # the same command again: only what is not done is submitted
    assert _stages(root)["augment"]["job"] != job
    _watch_until_done(cfg, root)
    assert "[augment] resuming an interrupted run" in (root / "logs" / "augment.slurm.out").read_text()
    assert _ids(root) == local
