"""The scheduler calls of `humpback run` on Slurm: the job settings, one job script, sbatch, job states, scancel.

Nothing else in humpback runs a Slurm command for the run loop (datatrove's SlurmPipelineExecutor, used by the
standalone sharded commands, has its own). Job state comes from `scontrol show job`, which works without
accounting (sacct) and knows a finished job for MinJobAge seconds (300 by default); after that a job is gone
and the manifest alone says what happened.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field

from .config import StrictModel
from .runs import RunError

ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")


class SlurmError(RunError):
    """A Slurm command failed; the message carries its stderr (the CLI prints it as one line, exit 2)."""


class JobSettings(StrictModel):
    """What one stage's job asks of the scheduler; unset keys fall back (stage → train → the defaults)."""

    partition: Optional[str] = None  # None: the cluster's default partition
    account: Optional[str] = None
    qos: Optional[str] = None
    time: Optional[str] = None  # e.g. "24:00:00"; None: the partition's default
    cpus: Optional[int] = Field(None, ge=1)  # --cpus-per-task (datatrove stages run their local workers on them)
    mem_gb: Optional[int] = Field(None, ge=1)  # --mem
    gpus: Optional[int] = Field(None, ge=0)  # --gres=gpu:N
    sbatch_args: dict[str, Any] = Field(default_factory=dict)  # more #SBATCH directives, e.g. {constraint: a100}


class RunSlurmConfig(JobSettings):
    """`executor.slurm` of a run: the defaults of every stage's job, then the training jobs', then per stage."""

    job_name: str = "humpback"  # jobs are named <job_name>-<stage>
    env_command: Optional[str] = None  # shell line run first in every job, e.g. "source /shared/venv/bin/activate"
    python: Optional[str] = None  # the interpreter on the nodes; None: the one submitting
    train: JobSettings = Field(default_factory=JobSettings)  # backward, m0, m1, ...
    stages: dict[str, JobSettings] = Field(default_factory=dict)  # by stage name, e.g. {augment: {gpus: 1}}
    # write the job scripts (RUN/slurm/<stage>.sbatch) and the sbatch lines, queue nothing
    dry_run: bool = False

    def for_stage(self, name: str, training: bool) -> JobSettings:
        data = {key: getattr(self, key) for key in JobSettings.model_fields}
        for extra in ([self.train] if training else []) + ([self.stages[name]] if name in self.stages else []):
            for key, value in extra.model_dump(exclude_unset=True).items():
                data[key] = {**data[key], **value} if key == "sbatch_args" else value
        return JobSettings.model_validate(data)


class RunExecutorConfig(StrictModel):
    """`executor:` of a run: where `humpback run` runs its stages (docs/scale_out.md)."""

    kind: Literal["local", "slurm"] = "local"  # local: this process walks the table; slurm: one job per stage
    slurm: RunSlurmConfig = Field(default_factory=RunSlurmConfig)


def job_script(name: str, settings: JobSettings, command: list[str], log: Path, workdir: Path,
               env_command: Optional[str], array: Optional[tuple[int, Optional[int]]] = None) -> str:
    """An sbatch script running ``command``. ``array`` = (tasks, at most this many at once or None) makes it a
    job array whose task i runs ``command --array-task i``."""
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --output={log}", f"#SBATCH --chdir={workdir}"]
    if array is not None:
        tasks, limit = array
        lines.append(f"#SBATCH --array=0-{tasks - 1}" + (f"%{limit}" if limit else ""))
    for key, flag in (("partition", "partition"), ("account", "account"), ("qos", "qos"), ("time", "time"),
                      ("cpus", "cpus-per-task")):
        value = getattr(settings, key)
        if value is not None:
            lines.append(f"#SBATCH --{flag}={value}")
    if settings.mem_gb is not None:
        lines.append(f"#SBATCH --mem={settings.mem_gb}G")
    if settings.gpus:
        lines.append(f"#SBATCH --gres=gpu:{settings.gpus}")
    lines += [f"#SBATCH --{k.replace('_', '-')}={v}" for k, v in settings.sbatch_args.items()]
    if env_command:
        lines.append(env_command)
    lines.append("exec " + shlex.join(command) + (' --array-task "$SLURM_ARRAY_TASK_ID"' if array else ""))
    return "\n".join(lines) + "\n"


def submit(script: Path, after: list[str], dry_run: bool = False) -> str:
    """sbatch ``script`` once the jobs ``after`` have succeeded; a job they fail is cancelled by Slurm
    (--kill-on-invalid-dep), so a re-run sees it as cancelled and submits it again. Returns the job id."""
    args = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes"]
    if after:
        args.append("--dependency=afterok:" + ":".join(after))
    args.append(str(script))
    if dry_run:
        with open(script.with_suffix(".args"), "w", encoding="utf-8") as f:
            f.write(shlex.join(args) + "\n")
        return f"dry-{script.stem}"
    out = _call(args)
    return out.strip().split(";")[0]


@dataclass
class JobState:
    job: str
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ... ; GONE: the scheduler forgot it
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def _show_job(job: str) -> list[dict[str, str]]:
    """The fields of `scontrol show job` for ``job``, one dict per line (a job array has one per task); [] once
    the scheduler forgot it."""
    if job.startswith("dry-"):
        return []
    try:
        out = _call(["scontrol", "show", "job", "--oneliner", job])
    except SlurmError as e:
        if "Invalid job id" in str(e):
            return []
        raise
    lines = [dict(item.split("=", 1) for item in line.split() if "=" in item) for line in out.splitlines()]
    return [f for f in lines if "JobState" in f]


def job_state(job: str) -> JobState:
    lines = _show_job(job)
    if not lines:
        return JobState(job, "GONE")
    return JobState(job, lines[-1].get("JobState", "UNKNOWN"), lines[-1].get("Reason", ""))


def array_states(job: str) -> dict[str, int]:
    """How many tasks of job array ``job`` are in each state (PENDING counts the tasks not started yet);
    {} once the scheduler forgot it."""
    counts: dict[str, int] = {}
    for fields in _show_job(job):
        counts[fields["JobState"]] = counts.get(fields["JobState"], 0) + _task_count(fields.get("ArrayTaskId", ""))
    return counts


def _task_count(ids: str) -> int:
    """"3" -> 1; the tasks not started yet read "2-7", "2-7%2" or "2,4-5"."""
    n = 0
    for part in ids.split("%")[0].split(",") if ids else ["one"]:
        lo, _, hi = part.partition("-")
        n += int(hi) - int(lo) + 1 if hi else 1
    return n


def cancel(job: str) -> None:
    try:
        _call(["scancel", job])
    except SlurmError:  # it ended meanwhile: nothing left to cancel
        pass


def _call(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SlurmError(f"{args[0]}: not found; executor.kind slurm needs the Slurm client commands on PATH")
    if out.returncode != 0:
        raise SlurmError(f"{shlex.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


__all__ = ["JobSettings", "JobState", "RunExecutorConfig", "RunSlurmConfig", "SlurmError", "array_states", "cancel",
           "job_script", "job_state", "submit"]
