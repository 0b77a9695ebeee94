"""Run directories: a manifest and resumable stages, shared by `humpback run` and `humpback rest`.

RUN/manifest.json records the config (and its hash), package versions, each stage's input fingerprints and
status/timing/result. A stage is skipped when it finished before with the same fingerprint, which covers its
own parameters, its external inputs and the fingerprints of the stages it reads from, so a changed config or
input re-runs that stage and every stage after it. A stage interrupted by a kill is re-entered with the same
fingerprint and resumes inside (training checkpoints, datatrove completion markers, chunk checkpoints); one
whose fingerprint changed has its outputs removed first, because the stage functions refuse or misread
leftovers of a different configuration.

A loop is a table of `Stage` values (what each reads, writes and runs) that `Run.walk` goes through in order;
that walk is the one place a stage is skipped, timed, shown and recorded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict

from . import console
from .faults import fault_point
from .locks import locked, output_lock_path, waiting
from .records import write_json

log = logging.getLogger("humpback.runs")

MANIFEST = "manifest.json"
PACKAGES = ("humpback", "torch", "transformers", "trl", "peft", "datatrove", "datasets", "pyarrow", "vllm")
# Files up to this size are fingerprinted by content; bigger ones (and every file of a big folder) by size and
# mtime, which is what a rewrite changes and costs nothing on a 100 GB corpus.
CONTENT_HASH_LIMIT = 64 * 1024 * 1024
_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # inputs shipped inside it are named humpback:<path> (Run._key)


class RunError(RuntimeError):
    """A run cannot proceed as asked (unknown stage name, a failed stage); the message says which."""


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def _file_digest(path: Path, by_content: bool) -> str:
    st = path.stat()
    if not by_content:
        return f"{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def fingerprint_path(path: str | os.PathLike) -> str:
    """A short fingerprint of a file or folder (dot-files and work folders inside are ignored)."""
    p = Path(path)
    if not p.exists():
        if "://" in str(path):  # a remote input: its address is all we can cheaply know
            return "url:" + canonical_hash(str(path))
        raise FileNotFoundError(f"{p}: input not found")
    if p.is_file():
        return _file_digest(p, p.stat().st_size <= CONTENT_HASH_LIMIT)
    files = sorted(f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in
                                                                        f.relative_to(p).parts))
    by_content = sum(f.stat().st_size for f in files) <= CONTENT_HASH_LIMIT
    return canonical_hash([(str(f.relative_to(p)), _file_digest(f, by_content)) for f in files])


@dataclass
class StageRecord:
    name: str
    # pending | queued (a Slurm job waits to run it) | running | done | failed (early-stopped stages: Run.stopped)
    status: str = "pending"
    fingerprint: Optional[str] = None
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    started: Optional[float] = None
    seconds: Optional[float] = None  # wall time of the run that finished it
    finished: Optional[float] = None
    result: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    job: Optional[str] = None  # the Slurm job that runs (or ran) it
    array_job: Optional[str] = None  # on Slurm, the job array running its sharded step before `job` finishes it


class StageResult(BaseModel):
    """What a stage returns and the manifest keeps (its ``result``); subclasses name their fields and say how
    they read. Keys it does not name are kept as they are."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    @classmethod
    def line(cls, stored: Optional[dict[str, Any]]) -> str:
        """The terminal's line for a result as the manifest stores it ('' for none)."""
        return cls.model_validate(stored).summary() if stored else ""

    def summary(self) -> str:
        """The stage's line in the terminal and the run summary."""
        return ""

    def card(self) -> Optional[str]:
        """The stage's row text in the dataset card; None: the card does not list it."""
        return None


@dataclass
class StageContext:
    """What the stages of one walk see: the run and the stored results of the stages walked so far."""

    run: Run
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # a loop's own bookkeeping between its stages


Params = Union[dict[str, Any], Callable[[StageContext], dict[str, Any]]]


@dataclass
class Stage:
    """One stage of a run: up to date when it finished before with the same ``params``, the same fingerprints
    of its ``inputs`` (paths outside the run) and the same finished stages in ``depends_on``, and its
    ``outputs`` still exist. Values that are only known once earlier stages ran (the model a stage reads)
    are functions of the context."""

    name: str
    run: Callable[[StageContext], Union[StageResult, dict[str, Any], None]]
    params: Params
    inputs: Sequence[str | os.PathLike] = ()
    depends_on: Union[Sequence[str], Callable[[StageContext], Sequence[str]]] = ()
    outputs: Sequence[str | os.PathLike] = ()
    result: type[StageResult] = StageResult  # how its stored result reads back
    skip: Optional[Callable[[StageContext], bool]] = None  # True: not walked at all (e.g. after an early stop)
    # the datatrove tasks of its sharded model step; on Slurm more than one run as a job array (at most
    # ``workers`` at once), then the stage's own job finishes it (shards.array_task)
    tasks: int = 1
    workers: Optional[int] = None


class Run:
    """A run directory with a manifest; ``walk`` runs a table of stages, each unless it is already up to date."""

    def __init__(self, run_dir: str | os.PathLike, config: dict[str, Any], kind: str,
                 config_source: Optional[str] = None, order: Sequence[str] = ()) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.order = list(order)  # the full stage list, so --from/--until can be checked and shown
        self.config = config
        self.config_hash = canonical_hash(config)
        self.stages: dict[str, StageRecord] = {}
        previous = self._load()
        if previous and previous.get("kind") not in (None, kind):
            raise RunError(f"{self.dir}: holds a '{previous.get('kind')}' run, not a '{kind}' run; "
                           "use another --run-dir")
        for name, rec in (previous or {}).get("stages", {}).items():
            self.stages[name] = StageRecord(**rec)
        self.created = (previous or {}).get("created", time.time())
        # what the loop says the run produced (humpback run: the round whose model and tier stand); the loop sets it
        self.result: Optional[dict[str, Any]] = (previous or {}).get("result")
        # stages not run because of an early stop: by this walk, or (Slurm) by the jobs of the chain submitted last
        self.stopped: list[str] = list((previous or {}).get("stopped") or [])
        self._stopped_afresh = False  # True: a new walk or chain decides them again; False: jobs add theirs
        self.config_source = config_source
        self.forced: set[str] = set()
        self._mine: set[str] = set()  # stages this process recorded; save() keeps the others as on disk
        self.until: Optional[str] = None
        self.timings: dict[str, float] = {}
        self.save()

    # ------------------------------------------------------------------------------------------ manifest
    @property
    def logs_dir(self) -> Path:
        """RUN/logs/<stage>.log: everything a stage printed, in a quiet run."""
        return self.dir / "logs"

    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def _load(self) -> Optional[dict[str, Any]]:
        if not self.manifest_path.is_file():
            return None
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RunError(f"{self.manifest_path}: not valid JSON ({e}); move it away to start the run afresh")

    def save(self) -> None:
        # The Slurm jobs of one run record their stages side by side: re-read under the lock and write back
        # only the stages this process recorded.
        with waiting(self.dir / ".manifest.lock"):
            on_disk = self._load() or {}
            for name, rec in (on_disk.get("stages") or {}).items():
                if name not in self._mine:
                    self.stages[name] = StageRecord(**rec)
            if not self._stopped_afresh:
                mine = [n for n in self.stopped if n in self._mine]
                self.stopped = [n for n in on_disk.get("stopped") or [] if n not in self._mine] + mine
            self._write()

    def _write(self) -> None:
        write_json({
            "kind": self.kind,
            "created": self.created,
            "updated": time.time(),
            "config_source": self.config_source,
            "config_hash": self.config_hash,
            "config": self.config,
            "versions": package_versions(),
            "stage_order": self.order,
            "stages": {name: vars(rec) for name, rec in self.stages.items()},
            "result": self.result,
            "stopped": self.stopped,
        }, self.manifest_path)

    # ------------------------------------------------------------------------------------------ selection
    def select(self, start: Optional[str] = None, until: Optional[str] = None) -> None:
        """--from START re-runs START and everything after it; --until UNTIL stops after UNTIL."""
        for name, what in ((start, "--from"), (until, "--until")):
            if name is not None and name not in self.order:
                raise RunError(f"{what} {name}: unknown stage; stages are: {', '.join(self.order)}")
        if start is not None:
            self.forced = set(self.order[self.order.index(start):])
        self.until = until

    def reached_end(self, name: str) -> bool:
        return self.until is not None and self.order.index(name) >= self.order.index(self.until)

    # ------------------------------------------------------------------------------------------ stages
    def fingerprint(self, params: dict[str, Any], inputs: dict[str, str], after: Sequence[str]) -> str:
        upstream = {}
        for dep in after:
            rec = self.stages.get(dep)
            if rec is None or rec.status != "done":
                raise RunError(f"stage needs '{dep}' to have finished first")
            # the finish time too: an upstream stage re-made (e.g. its output was deleted) invalidates readers
            upstream[dep] = [rec.fingerprint, rec.finished]
        return canonical_hash({"params": params, "inputs": inputs, "after": upstream})

    def _key(self, path: str | os.PathLike) -> str:
        """Inputs inside the run folder are named relative to it, so a moved or copied run stays current; files
        shipped inside the package (the builtin seed) relative to the package, so a reinstall elsewhere does too."""
        for prefix, root in (("RUN/", self.dir), ("humpback:", _PACKAGE_DIR)):
            try:
                return prefix + Path(path).resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                pass
        return str(path)

    def is_done(self, name: str) -> bool:
        rec = self.stages.get(name)
        return bool(rec and rec.status == "done")

    def walk(self, stages: Sequence[Stage]) -> StageContext:
        """Run the stages in order, each unless it is up to date, stopping after --until's stage; the context
        holds every walked stage's stored result."""
        ctx = StageContext(self)
        self.restart_stops()
        for st in stages:
            if st.skip is not None and st.skip(ctx):
                self.stop(st.name)
                continue
            ctx.results[st.name] = self.stage(st, ctx)
            if self.reached_end(st.name):
                break
        return ctx

    def restart_stops(self) -> None:
        """A new walk (or Slurm chain) decides the early stops again."""
        self.stopped = []
        self._stopped_afresh = True

    def stop(self, name: str) -> None:
        """Record that stage ``name`` is not run because of an early stop (its ``skip``)."""
        if name not in self.stopped:
            self.stopped.append(name)
        self._mine.add(name)
        self.save()

    def _plan(self, st: Stage, ctx: StageContext) -> tuple[str, dict[str, str], list[Path], bool]:
        """The stage's fingerprint, its input fingerprints, its outputs, and whether it is up to date."""
        params = st.params(ctx) if callable(st.params) else st.params
        after = st.depends_on(ctx) if callable(st.depends_on) else st.depends_on
        input_fps = {self._key(p): fingerprint_path(p) for p in st.inputs}
        fp = self.fingerprint(params, input_fps, after)
        rec = self.stages.get(st.name)
        outs = [Path(o) for o in st.outputs]
        fresh = (rec is not None and rec.status == "done" and rec.fingerprint == fp
                 and all(o.exists() for o in outs) and st.name not in self.forced)
        return fp, input_fps, outs, fresh

    def up_to_date(self, st: Stage, ctx: StageContext) -> bool:
        """Whether ``st`` would be skipped now (False while a stage it reads has not finished)."""
        try:
            return self._plan(st, ctx)[3]
        except RunError:
            return False

    def queue(self, name: str, job: str, array_job: Optional[str] = None) -> None:
        """Record that Slurm job ``job`` will run stage ``name`` (after job array ``array_job``, when it has one).
        A forced stage loses its fingerprint, so its first job removes the outputs and runs it afresh; otherwise
        the jobs resume what an earlier attempt left."""
        rec = self.stages.get(name) or StageRecord(name=name)
        self.stages[name] = StageRecord(**{**vars(rec), "status": "queued", "job": job, "array_job": array_job,
                                           "error": None,
                                           "fingerprint": None if name in self.forced else rec.fingerprint})
        self._mine.add(name)
        self.save()

    def array_task(self, st: Stage, ctx: StageContext, rank: int) -> None:
        """Run task ``rank`` of stage ``st``'s sharded step (one task of its Slurm job array), beside the others.
        The first task to start after the stage was queued afresh removes stale outputs and records the stage
        running with its fingerprint, so the tasks after it and the stage's own job resume rather than remove."""
        from .shards import ArrayTaskDone, array_task

        fp, input_fps, outs, fresh = self._plan(st, ctx)
        if fresh:
            return
        with waiting(self.dir / f".{st.name}.array.lock"):
            stored = ((self._load() or {}).get("stages") or {}).get(st.name)
            rec = StageRecord(**stored) if stored else None
            if rec is None or rec.fingerprint != fp:  # the first task of this chain (a task's job id is its own)
                self._start(st.name, rec, fp, input_fps, outs, job=rec.job if rec else None)
        with console.stage(f"{st.name} task {rank}", self.logs_dir / f"{st.name}.task{rank}.log"), array_task(rank):
            try:
                st.run(ctx)
            except ArrayTaskDone as done:
                log.warning("[%s] %s", st.name, done)
                return
        raise RunError(f"{st.name}: has no sharded step for array task {rank}")

    def stage(self, st: Stage, ctx: StageContext) -> dict[str, Any]:
        """Run stage ``st`` unless it is up to date; return its stored (JSON) result."""
        name = st.name
        fp, input_fps, outs, fresh = self._plan(st, ctx)
        rec = self.stages.get(name)
        if fresh:
            log.warning("[%s] up to date (finished in %.0fs earlier); skipped", name, rec.seconds or 0)
            self.timings[name] = 0.0
            return rec.result
        # the locks the stage commands take on the same outputs: `humpback augment -o RUN/augment` meanwhile is
        # refused (as a second `humpback run` is by RUN/.lock), and this stage waits for nobody's leftovers
        command = "run" if self.kind == "humpback" else self.kind
        with ExitStack() as held:
            for o in outs:
                held.enter_context(locked(output_lock_path(o), f"humpback {command} stage {name}"))
            return self._run_stage(st, ctx, rec, fp, input_fps, outs)

    def _start(self, name: str, rec: Optional[StageRecord], fp: str, input_fps: dict[str, str], outs: list[Path],
               job: Optional[str]) -> StageRecord:
        """Record stage ``name`` running with fingerprint ``fp``, first removing the outputs of another
        configuration (or of a forced re-run) so nothing stale is reused."""
        if rec is not None and (rec.fingerprint != fp or name in self.forced):
            for o in outs:
                _remove(o)
            if rec.fingerprint is not None or name in self.forced:  # None: queued afresh by a Slurm chain
                why = "forced by --from" if name in self.forced else "its inputs or settings changed"
                log.warning("[%s] re-running: %s", name, why)
        elif rec is not None and rec.status in ("running", "failed", "queued"):
            log.warning("[%s] resuming an interrupted run", name)
        self.forced.discard(name)
        rec = StageRecord(name=name, status="running", fingerprint=fp, inputs=input_fps,
                          outputs=[str(o) for o in outs], started=time.time(), job=job,
                          array_job=rec.array_job if rec is not None else None)
        self.stages[name] = rec
        self._mine.add(name)
        self.save()
        return rec

    def _run_stage(self, st: Stage, ctx: StageContext, rec: Optional[StageRecord], fp: str,
                   input_fps: dict[str, str], outs: list[Path]) -> dict[str, Any]:
        name = st.name
        rec = self._start(name, rec, fp, input_fps, outs, job=os.environ.get("SLURM_JOB_ID"))
        quiet = console.is_quiet()
        if not quiet:
            print(f"\n=== [{name}] ===", flush=True)
        t0 = time.perf_counter()
        try:
            with console.stage(name, self.logs_dir / f"{name}.log") as shown:
                result = st.run(ctx) or {}
                if isinstance(result, StageResult):
                    result = result.model_dump()
                try:
                    shown.result = st.result.line(json.loads(json.dumps(result, default=str)))
                except Exception as e:  # a summary line must never fail a finished stage
                    shown.result = f"({type(e).__name__} describing the result)"
        except BaseException as e:
            rec.status = "failed"
            rec.error = f"{type(e).__name__}: {e}"
            rec.seconds = round(time.perf_counter() - t0, 1)
            self.save()
            raise
        rec.seconds = round(time.perf_counter() - t0, 1)
        rec.status = "done"
        rec.finished = time.time()
        rec.result = json.loads(json.dumps(result, default=str))
        self.timings[name] = rec.seconds
        self.save()
        fault_point("run.stage_done")
        if not quiet:
            print(f"--- [{name}] done in {rec.seconds:.1f}s", flush=True)
        return rec.result

    def summary_rows(self) -> list[dict[str, Any]]:
        rows = []
        for name in self.order:
            rec = self.stages.get(name)
            status = "stopped" if name in self.stopped else rec.status if rec else "pending"
            rows.append({"stage": name, "status": status,
                         "seconds": rec.seconds if rec else None,
                         "this_run": self.timings.get(name)})
        return rows


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    # siblings that stage functions use as their temporary/partial locations
    for sibling in (path.with_name(path.name + ".partial"),):
        if sibling.exists():
            shutil.rmtree(sibling) if sibling.is_dir() else sibling.unlink()


__all__ = ["Run", "RunError", "Stage", "StageContext", "StageRecord", "StageResult", "canonical_hash",
           "fingerprint_path", "package_versions"]
