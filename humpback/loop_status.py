"""`humpback run CONFIG --status`: where each stage of a run stands, read from the manifest and the scheduler.

Read-only: it writes nothing into the run folder, so it is safe while a run (local or on Slurm) is going on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .core.locks import describe as describe_holder
from .core.locks import holder, run_lock_path
from .core.results import describe
from .core.runs import MANIFEST, StageRecord


@dataclass
class StageState:
    stage: str
    state: str  # pending | queued | running | done | failed | stopped
    detail: str  # "job 12", the reason, the log's last line
    seconds: Optional[float]
    result: str


def _last_line(*paths: Path) -> str:
    for p in paths:
        if p.is_file():
            lines = [line.strip() for line in p.read_text(encoding="utf-8", errors="replace").splitlines()
                     if line.strip()]
            if lines:
                return lines[-1][:160]
    return ""


def stage_states(root: Path, order: list[str]) -> list[StageState]:
    path = root / MANIFEST
    manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    stored, stopped = manifest.get("stages", {}), set(manifest.get("stopped") or [])
    lock_note = holder(run_lock_path(root))
    out = []
    for name in order:
        rec = StageRecord(**stored[name]) if name in stored else None
        logs = (root / "logs" / f"{name}.slurm.out", root / "logs" / f"{name}.log")
        result = describe(name, rec.result) if rec is not None and rec.result else ""
        seconds = rec.seconds if rec is not None else None
        if name in stopped and (rec is None or rec.status != "done"):
            out.append(StageState(name, "stopped", "the run stopped early (collapse guard)", None, ""))
        elif rec is None or rec.status == "pending":
            out.append(StageState(name, "pending", "", None, ""))
        elif rec.status == "done":
            job = f"job {rec.job}" + (f" after array {rec.array_job}" if rec.array_job else "") if rec.job else ""
            out.append(StageState(name, "done", job, seconds, result))
        elif rec.job:
            from .core.slurm import array_states, job_state

            js = job_state(rec.job)
            tasks = array_states(rec.array_job) if rec.array_job and js.state == "PENDING" else {}
            if tasks.get("RUNNING") or tasks.get("COMPLETED"):  # its job waits for its job array, which runs
                out.append(StageState(name, "running", f"array {rec.array_job}: {tasks.get('COMPLETED', 0)} "
                                                       f"tasks done, {tasks.get('RUNNING', 0)} running", None, ""))
            elif js.state == "PENDING":
                reason = f" ({js.reason})" if js.reason not in ("", "None") else ""
                out.append(StageState(name, "queued", f"job {rec.job}{reason}", None, ""))
            elif js.active:
                out.append(StageState(name, "running", f"job {rec.job}", None, ""))
            else:
                why = rec.error or _last_line(*logs)
                out.append(StageState(name, "failed", f"job {rec.job} {js.state.lower()}: {why}", seconds, ""))
        elif rec.status == "running" and lock_note is not None:
            out.append(StageState(name, "running", f"by {describe_holder(lock_note)}", None, ""))
        else:  # failed, or running with nobody holding the run: killed
            why = rec.error or _last_line(*logs) or "interrupted"
            out.append(StageState(name, "failed", why, seconds, ""))
    return out


def format_status(root: Path, order: list[str]) -> str:
    rows = stage_states(root, order)
    lines = [f"run {root}", f"{'stage':<14} {'state':<8} {'seconds':>8}  {'detail':<28} result"]
    for r in rows:
        secs = "-" if r.seconds is None else f"{r.seconds:.1f}"
        lines.append(f"{r.stage:<14} {r.state:<8} {secs:>8}  {r.detail:<28} {r.result}".rstrip())
    counts = {s: sum(r.state == s for r in rows)
              for s in ("done", "running", "queued", "failed", "pending", "stopped")}
    lines.append("  ".join(f"{k} {v}" for k, v in counts.items() if v))
    return "\n".join(lines)


__all__ = ["StageState", "format_status", "stage_states"]
