"""`humpback run CONFIG` with `executor: {kind: slurm}`: the stage table submitted at once as Slurm jobs.

Every stage that is not up to date becomes one job, `humpback run RUN/slurm/config.yaml --run-dir RUN --only
STAGE`, queued with `--dependency=afterok:` on the jobs of the stages it reads (`Stage.depends_on`). The job runs
that one stage through `Run.stage` (skip-if-done, output locks, the manifest) and records it itself, so this
submitting process exits at once and can be run again at any time:

- a stage that is done and up to date gets no job;
- a stage whose job is still queued or running is left alone, and the stages after it wait for that job;
- a stage whose job failed, was cancelled or is gone is submitted again; its job resumes what the killed one
  left (training checkpoints, datatrove completion markers, chunk checkpoints), as a local re-run does.

A stage of several datatrove tasks (augment's and curate's ``executor.tasks``) is a job array of that many
tasks (at most ``executor.workers`` at once), task i running ``--only STAGE --array-task i``: task i of the
stage's sharded model step, each on its own node and GPUs. The stage's job waits for the whole array and
finishes the stage: the later steps (they may read every task's output), the stats and the manifest record.
A failed task fails the array, Slurm cancels the stage's job, and a re-run resubmits both; the tasks that
finished are done in a second (completion markers).

The config is frozen into RUN/slurm/config.yaml at submission, so a job that starts hours later runs the
settings it was queued with, whatever happens to CONFIG meanwhile. Why one job per stage rather than a driver
job walking the table: the chain needs no allocation of its own while it waits, each stage asks for what it
needs (GPUs for training and model stages, CPUs for prepare), and the scheduler, not a process, holds the order.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import yaml

from .core.config import ConfigError
from .core.locks import locked, run_lock_path
from .core.records import atomic_path
from .core.results import TrainSummary
from .core.runs import Run, StageContext
from .core.slurm import cancel, job_script, job_state, submit

log = logging.getLogger(__name__)


def submit_loop(cfg, root: Path, config_path: str, start: str | None, until: str | None) -> Run:
    """Submit every stage of ``cfg``'s table that is neither up to date nor queued/running; returns the Run."""
    from .loop import Layout, build_stages

    settings = cfg.executor.slurm
    stages = build_stages(cfg, Layout(root))
    names = [st.name for st in stages]
    for name in settings.stages:
        if name not in names:
            raise ConfigError(f"{config_path}: executor.slurm.stages.{name}: no such stage; stages are: "
                              f"{', '.join(names)}")
    for which, stage in (("backward", "backward"), ("forward", "m0")):
        gpus = settings.for_stage(stage, training=True).gpus or 0
        if gpus > 1 and cfg.training(which).processes == 1:
            log.warning("%s training jobs ask for %d GPUs but train.processes is 1: one process drives them "
                        "(DataParallel); train.processes: %d runs one DDP process per GPU", which, gpus, gpus)
    root.mkdir(parents=True, exist_ok=True)
    with locked(run_lock_path(root), "humpback run (submitting to Slurm)"):
        jobdir = root / "slurm"
        jobdir.mkdir(exist_ok=True)
        frozen = jobdir / "config.yaml"
        with atomic_path(frozen) as tmp:
            Path(tmp).write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_unset=True), sort_keys=False))
        run = Run(root, cfg.model_dump(mode="json"), kind="humpback", config_source=config_path, order=names)
        run.select(start, until)
        ctx = StageContext(run)
        jobs: dict[str, str] = {}  # stage -> the job that the stages after it wait for
        submitted: set[str] = set()
        run.restart_stops()
        for st in stages:
            rec = run.stages.get(st.name)
            if st.skip is not None and st.skip(ctx):  # known now (the guard's eval is done): no job
                run.stop(st.name)
                continue
            if not run.up_to_date(st, ctx):
                state = job_state(rec.job) if rec is not None and rec.job and rec.status != "done" else None
                deps = st.depends_on(ctx) if callable(st.depends_on) else st.depends_on
                # a queued job waiting for a job that failed is cancelled by Slurm, maybe not yet: replace it
                stale = state is not None and state.state == "PENDING" and submitted.intersection(deps)
                if state is not None and state.active and st.name not in run.forced and not stale:
                    log.warning("[%s] %s as job %s; left alone", st.name, state.state.lower(), rec.job)
                    jobs[st.name] = rec.job
                else:
                    if state is not None and state.active:  # forced by --from, or stale: it is outdated
                        cancel(rec.job)
                        if rec.array_job:
                            cancel(rec.array_job)
                    jobs[st.name] = _submit_stage(st, deps, run, root, frozen, settings, jobs)
                    submitted.add(st.name)
            # what a walk hands on: a stored result, or (for a stage whose job is queued) a placeholder, so
            # that stages reading "every stage so far" (export waits for every eval-mN) wait for it too
            ctx.results[st.name] = run.stages[st.name].result if run.is_done(st.name) else {}
            if run.reached_end(st.name):
                break
        return run


def _submit_stage(st, deps, run: Run, root: Path, frozen: Path, settings, jobs: dict[str, str]) -> str:
    """Queue stage ``st``'s job after the jobs of ``deps``; a stage of several datatrove tasks first gets a job
    array (task i runs task i of its sharded step), and its job, after the whole array, finishes it."""
    after = [jobs[d] for d in deps if d in jobs]
    job_settings = settings.for_stage(st.name, training=st.result is TrainSummary)
    python = settings.python or sys.executable
    command = [python, "-m", "humpback", "run", str(frozen.resolve()), "--run-dir", str(root.resolve()),
               "--only", st.name]
    (root / "logs").mkdir(exist_ok=True)
    name = f"{settings.job_name}-{st.name}"
    array_job = None
    if st.tasks > 1:
        script = root / "slurm" / f"{st.name}.array.sbatch"
        script.write_text(job_script(name, job_settings, command,
                                     (root / "logs" / f"{st.name}.task%a.slurm.out").resolve(), Path.cwd().resolve(),
                                     settings.env_command, array=(st.tasks, st.workers)))
        array_job = submit(script, after, dry_run=settings.dry_run)
        log.warning("[%s] submitted %d tasks as job array %s%s", st.name, st.tasks, array_job,
                    f" after {', '.join(after)}" if after else "")
        after = [array_job]
    script = root / "slurm" / f"{st.name}.sbatch"
    script.write_text(job_script(name, job_settings, command, (root / "logs" / f"{st.name}.slurm.out").resolve(),
                                 Path.cwd().resolve(), settings.env_command))
    job = submit(script, after, dry_run=settings.dry_run)
    log.warning("[%s] submitted as job %s%s", st.name, job, f" after {', '.join(after)}" if after else "")
    if not settings.dry_run:
        run.queue(st.name, job, array_job)
    return job


__all__ = ["submit_loop"]
