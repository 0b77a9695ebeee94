"""`humpback run --status`, the manifest shared by the jobs of one run, and the Slurm chain's scripts (dry run):
everything of `humpback run` on Slurm that needs no cluster (tests/test_slurm.py runs it on a real one)."""

from __future__ import annotations

import json
import os
import shlex

import yaml

from click.testing import CliRunner

from humpback.cli import main
from humpback.core.locks import locked, run_lock_path
from humpback.core.runs import Run, Stage, StageContext
from humpback.core.slurm import RunSlurmConfig
from humpback.loop import RunConfig, run_loop, run_status
from humpback.loop_status import stage_states
from runconfig import REPO, rows, tiny_run_config


def test_runs_of_one_folder_record_their_own_stages_side_by_side(tmp_path):
    a = Run(tmp_path, {}, kind="humpback", order=["one", "two"])
    b = Run(tmp_path, {}, kind="humpback", order=["one", "two"])  # a second job, loaded before a wrote anything
    a.stage(Stage("one", lambda ctx: {"n": 1}, params={}), StageContext(a))
    b.stage(Stage("two", lambda ctx: {"n": 2}, params={}), StageContext(b))
    stages = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    assert stages["one"]["result"] == {"n": 1} and stages["two"]["result"] == {"n": 2}
    assert [s.state for s in stage_states(tmp_path, ["one", "two", "three"])] == ["done", "done", "pending"]


def test_status_of_a_local_run_names_an_interrupted_stage_and_its_last_log_line(tmp_path):
    run = Run(tmp_path, {}, kind="humpback", order=["one", "two"])
    run.stage(Stage("one", lambda ctx: {}, params={}), StageContext(run))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["stages"]["two"] = manifest["stages"]["one"] | {"name": "two", "status": "running", "seconds": None}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))  # as a kill -9 in stage two leaves it
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "logs" / "two.log").write_text("loading\nchunk 3 of 9\n\n")
    got = {s.stage: (s.state, s.detail) for s in stage_states(tmp_path, ["one", "two"])}
    assert got == {"one": ("done", ""), "two": ("failed", "chunk 3 of 9")}
    with locked(run_lock_path(tmp_path), "humpback run"):  # while a run holds the folder, it is running
        two = stage_states(tmp_path, ["one", "two"])[1]
    assert two.state == "running" and two.detail.startswith(f"by humpback run (pid {os.getpid()} on ")


def test_stage_jobs_take_the_defaults_then_train_then_their_own_settings():
    cfg = RunSlurmConfig(partition="cpu", cpus=4, sbatch_args={"account": "a"},
                         train={"partition": "gpu", "gpus": 2}, stages={"m1": {"time": "1:00:00",
                                                                              "sbatch_args": {"constraint": "h100"}}})
    m1 = cfg.for_stage("m1", training=True)
    assert (m1.partition, m1.gpus, m1.cpus, m1.time) == ("gpu", 2, 4, "1:00:00")
    assert m1.sbatch_args == {"account": "a", "constraint": "h100"}
    prepare = cfg.for_stage("prepare", training=False)
    assert (prepare.partition, prepare.gpus, prepare.time) == ("cpu", None, None)


def test_a_dry_run_writes_one_job_per_stage_waiting_for_what_it_reads(tmp_path, tiny_model_dir):
    cfg = tiny_run_config(tmp_path, tiny_model_dir, rounds=1, **{
        "executor": {"kind": "slurm", "slurm": {"dry_run": True, "train": {"gpus": 1}}},
        "curate.executor": {"tasks": 3, "workers": 2}})
    root = tmp_path / "run"
    out = CliRunner().invoke(main, ["run", str(cfg), "--run-dir", str(root)])
    assert out.exit_code == 0, out.output
    args = {p.stem: shlex.split(p.read_text()) for p in (root / "slurm").glob("*.args")}
    assert set(args) == {"prepare", "seed", "backward", "eval-backward", "augment", "m0", "eval-m0", "curate-r1.array",
                         "curate-r1", "m1", "eval-m1", "export"}
    # curate's 3 datatrove tasks are a job array (2 at once) after augment and m0; its job finishes after them
    array = (root / "slurm" / "curate-r1.array.sbatch").read_text()
    assert "#SBATCH --array=0-2%2" in array and '--only curate-r1 --array-task "$SLURM_ARRAY_TASK_ID"' in array
    assert "--dependency=afterok:dry-augment:dry-m0" in args["curate-r1.array"]
    assert "--dependency=afterok:dry-curate-r1.array" in args["curate-r1"]
    assert "--array" not in (root / "slurm" / "curate-r1.sbatch").read_text()
    # the collapse guard's check of m1 waits for both models it compares
    dep = next(a for a in args["eval-m1"] if a.startswith("--dependency="))
    assert "dry-m1" in dep.split(":") and "dry-m0" in dep.split(":"), dep
    # export reads every eval-mN's result (the run's result round): its job waits for them
    dep = next(a for a in args["export"] if a.startswith("--dependency="))
    assert {"dry-eval-m0", "dry-eval-m1", "dry-m1"} <= set(dep.split("=", 1)[1].split(":")), dep
    assert "--dependency=afterok:dry-prepare:dry-backward" in args["augment"]
    assert not any(a.startswith("--dependency") for a in args["prepare"])
    assert "#SBATCH --gres=gpu:1" in (root / "slurm" / "m0.sbatch").read_text()
    assert "--gres" not in (root / "slurm" / "augment.sbatch").read_text()
    assert "--only augment" in (root / "slurm" / "augment.sbatch").read_text()
    stages = [a for a in args if not a.endswith(".array")]
    assert all(s.state == "pending" for s in stage_states(root, stages))  # a dry run queues nothing
    assert "pending 11" in run_status(cfg, run_dir=str(root))


def test_a_misspelt_stage_under_executor_slurm_stages_is_named(tmp_path, tiny_model_dir):
    cfg = tiny_run_config(tmp_path, tiny_model_dir, **{"executor": {"kind": "slurm", "slurm": {
        "dry_run": True, "stages": {"agument": {"gpus": 1}}}}})
    out = CliRunner().invoke(main, ["run", str(cfg), "--run-dir", str(tmp_path / "run")])
    assert out.exit_code == 2
    assert f"error: {cfg}: executor.slurm.stages.agument: no such stage; stages are: prepare, seed," in out.output


def test_status_of_a_run_not_started_is_all_pending_and_only_names_an_unknown_stage(tmp_path, tiny_model_dir):
    cfg = tiny_run_config(tmp_path, tiny_model_dir, rounds=1)
    status = CliRunner().invoke(main, ["run", str(cfg), "--run-dir", str(tmp_path / "run"), "--status"])
    assert status.exit_code == 0 and status.output.rstrip().endswith("pending 11"), status.output
    assert not (tmp_path / "run").exists()  # --status writes nothing
    out = CliRunner().invoke(main, ["run", str(cfg), "--run-dir", str(tmp_path / "run"), "--only", "m7"])
    assert out.exit_code == 2 and "error: --only m7: unknown stage; stages are: prepare, seed," in out.output
    assert not (tmp_path / "run").exists()


def test_the_cluster_config_in_the_docs_is_valid():
    text = (REPO / "docs" / "scale_out.md").read_text()
    start = text.index("# humpback.yaml of a GPU cluster run")
    cfg = RunConfig.model_validate(yaml.safe_load(text[start:text.index("```", start)]))
    augment, m1 = cfg.executor.slurm.for_stage("augment", False), cfg.executor.slurm.for_stage("m1", True)
    assert (augment.partition, augment.gpus, augment.cpus) == ("gpu", 1, 16)  # per task of its job array
    assert augment.sbatch_args == {"constraint": "h100"} and cfg.augment.executor.tasks == 64
    assert (m1.partition, m1.gpus, m1.time, m1.account) == ("gpu", 4, "24:00:00", "my-project")
    assert cfg.training("forward").processes == 4 == cfg.training("backward").processes  # one DDP process per GPU


def test_the_tasks_of_a_job_array_then_the_stage_job_make_what_one_local_run_makes(tmp_path, tiny_model_dir):
    """What the jobs of a Slurm stage of several tasks do, run here one after another: task 1 first, then
    task 0 (the order Slurm may pick), then the stage's job."""
    import shutil

    cfg = tiny_run_config(tmp_path, tiny_model_dir, rounds=1, **{"curate.executor": {"tasks": 2},
                                                                "evaluate.backward": False, "evaluate.forward": False})
    local, jobs = tmp_path / "local", tmp_path / "jobs"
    run_loop(cfg, run_dir=str(local), until="m0")
    shutil.copytree(local, jobs)
    run_loop(cfg, run_dir=str(local), until="curate-r1")
    for rank in (1, 0):
        run_loop(cfg, run_dir=str(jobs), only="curate-r1", array_task=rank)
        assert json.loads((jobs / "manifest.json").read_text())["stages"]["curate-r1"]["status"] == "running"
    assert not (jobs / "curate" / "r1" / "stats.json").exists()  # the stage's job finishes it
    run_loop(cfg, run_dir=str(jobs), only="curate-r1")
    for folder, columns in (("scores", ["pair_id", "score"]), ("curated", ["pair_id"])):
        assert rows(jobs / "curate" / "r1" / folder, columns) == rows(local / "curate" / "r1" / folder, columns) != []
    stored = json.loads((jobs / "manifest.json").read_text())["stages"]["curate-r1"]
    assert stored["status"] == "done"
    out = CliRunner().invoke(main, ["run", str(cfg), "--run-dir", str(jobs), "--array-task", "0"])
    assert out.exit_code == 2 and "--array-task needs --only STAGE" in out.output
