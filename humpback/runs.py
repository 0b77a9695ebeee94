"""Run directories: a manifest and resumable stages, shared by `humpback run` and `humpback rest`.

RUN/manifest.json records the config (and its hash), package versions, each stage's input fingerprints and
status/timing/result. A stage is skipped when it finished before with the same fingerprint, which covers its
own parameters, its external inputs and the fingerprints of the stages it reads from, so a changed config or
input re-runs that stage and every stage after it. A stage interrupted by a kill is re-entered with the same
fingerprint and resumes inside (training checkpoints, datatrove completion markers, chunk checkpoints); one
whose fingerprint changed has its outputs removed first, because the stage functions refuse or misread
leftovers of a different configuration.
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
from typing import Any, Callable, Optional, Sequence

from . import console
from .faults import fault_point
from .locks import locked, output_lock_path
from .records import write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PACKAGES = ("humpback", "torch", "transformers", "trl", "peft", "datatrove", "datasets", "pyarrow", "vllm")
# Files up to this size are fingerprinted by content; bigger ones (and every file of a big folder) by size and
# mtime, which is what a rewrite changes and costs nothing on a 100 GB corpus.
CONTENT_HASH_LIMIT = 64 * 1024 * 1024
_PACKAGE_DIR = Path(__file__).resolve().parent  # inputs shipped inside it are named humpback:<path> (Run._key)


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
    status: str = "pending"  # pending | running | done | failed
    fingerprint: Optional[str] = None
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    started: Optional[float] = None
    seconds: Optional[float] = None  # wall time of the run that finished it
    finished: Optional[float] = None
    result: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None


class Run:
    """A run directory with a manifest; ``stage`` runs a step unless it is already up to date."""

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
        self.config_source = config_source
        self.forced: set[str] = set()
        self.until: Optional[str] = None
        self.timings: dict[str, float] = {}
        # one line of a finished stage's result, for the terminal (humpback.loop sets its own)
        self.describe: Callable[[str, dict[str, Any]], str] = lambda name, result: ""
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

    def stage(self, name: str, fn: Callable[[], dict[str, Any]], *, params: dict[str, Any],
              inputs: Sequence[str | os.PathLike] = (), after: Sequence[str] = (),
              outputs: Sequence[str | os.PathLike] = ()) -> dict[str, Any]:
        """Run ``fn`` (returning a JSON-able result) unless stage ``name`` is up to date; return its result."""
        input_fps = {self._key(p): fingerprint_path(p) for p in inputs}
        fp = self.fingerprint(params, input_fps, after)
        rec = self.stages.get(name)
        outs = [Path(o) for o in outputs]
        fresh = (rec is not None and rec.status == "done" and rec.fingerprint == fp
                 and all(o.exists() for o in outs) and name not in self.forced)
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
            return self._run_stage(name, fn, rec, fp, input_fps, outs)

    def _run_stage(self, name: str, fn: Callable[[], dict[str, Any]], rec: Optional[StageRecord], fp: str,
                   input_fps: dict[str, str], outs: list[Path]) -> dict[str, Any]:
        if rec is not None and (rec.fingerprint != fp or name in self.forced):
            # outputs of another configuration (or a forced re-run): remove them so nothing stale is reused
            for o in outs:
                _remove(o)
            why = "forced by --from" if name in self.forced else "its inputs or settings changed"
            log.warning("[%s] re-running: %s", name, why)
        elif rec is not None and rec.status in ("running", "failed"):
            log.warning("[%s] resuming an interrupted run", name)
        self.forced.discard(name)
        rec = StageRecord(name=name, status="running", fingerprint=fp, inputs=input_fps,
                          outputs=[str(o) for o in outs], started=time.time())
        self.stages[name] = rec
        self.save()
        quiet = console.is_quiet()
        if not quiet:
            print(f"\n=== [{name}] ===", flush=True)
        t0 = time.perf_counter()
        try:
            with console.stage(name, self.logs_dir / f"{name}.log") as shown:
                result = fn() or {}
                try:
                    shown.result = self.describe(name, json.loads(json.dumps(result, default=str)))
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
            rows.append({"stage": name, "status": rec.status if rec else "pending",
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


__all__ = ["Run", "RunError", "StageRecord", "canonical_hash", "fingerprint_path", "package_versions"]
