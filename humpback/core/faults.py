"""Named fault points, so that tests can kill a run (or fill its disk) at a known moment instead of after a sleep.

Code calls ``fault_point("augment.chunk_saved")`` right after it made something durable. Nothing happens unless
the environment variable ``HUMPBACK_FAULT`` names that point::

    HUMPBACK_FAULT="augment.chunk_saved"           SIGKILL the process group at the first hit
    HUMPBACK_FAULT="train.checkpoint_saved@2"      ... at the second hit (counted per process)
    HUMPBACK_FAULT="shard.before_write=enospc"     raise OSError(ENOSPC) there instead (a full disk)
    HUMPBACK_FAULT="run.stage_done=pause"          stop there until the file $HUMPBACK_FAULT_RELEASE exists
    HUMPBACK_FAULT="train.saved:m2=perturb"        an action the point itself offers (here: noise in m2's weights)
    HUMPBACK_FAULT="a@1,b=enospc"                  several points, comma-separated

``pause`` prints one line ``HUMPBACK_FAULT: paused at NAME`` to stderr first, so a test that reads the
process's stderr knows it is there (holding its locks) without sleeping.

The whole process group is killed, as ``kill -9`` of a run would be: datatrove workers and servers die with it.
Tests start the run in a session of its own (``start_new_session=True``). The point names in use are listed in
``POINTS``; docs/reliability.md has the matrix of what each one interrupts.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from collections import Counter
from typing import Callable, Optional

ENV = "HUMPBACK_FAULT"
RELEASE_ENV = "HUMPBACK_FAULT_RELEASE"

POINTS = {
    "prepare.shard_written": "prepare: a segment shard of one task is complete on disk",
    "augment.chunk_saved": "augment: a chunk of generated instructions is checkpointed",
    "curate.chunk_saved": "curate: a chunk of scores is checkpointed",
    "shard.before_write": "augment/curate: about to write an output shard (enospc here = a full disk)",
    "shard.written": "augment/curate: an output shard is complete on disk",
    "train.checkpoint_saved": "train: a Trainer checkpoint (trainer_state.json last) is complete",
    "train.saved:NAME": "train: the model of output folder NAME (e.g. m2) is saved in NAME.partial/final, before "
                        "its marker; `=perturb` adds noise to its weights there, a real degradation (the collapse "
                        "guard's tests)",
    "train.before_publish": "train: the final model is assembled in OUTPUT.partial/final, not yet renamed",
    "export.before_publish": "export: the new export is complete in OUT.partial, not yet renamed into place",
    "run.stage_done": "run: a stage's result is in the manifest",
    "rest.chunk_saved": "rest: a chunk of sampled solutions is checkpointed",
    "write:NAME": "a file named NAME written through records.atomic_path (seed files, stats.json, manifests, "
                  "markers, ...), complete in its temporary file, not yet renamed into place (enospc here = the "
                  "disk filled up while writing that file)",
}

_hits: Counter = Counter()


def _parse(spec: str) -> dict[str, tuple[int, str]]:
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, action = item.partition("=")
        name, _, nth = name.partition("@")
        out[name.strip()] = (int(nth) if nth else 1, (action or "kill").strip())
    return out


def fault_point(name: str, path: str | os.PathLike | None = None,
                actions: Optional[dict[str, Callable[[], None]]] = None) -> None:
    """Kill the process group (or raise ENOSPC, or pause) here when HUMPBACK_FAULT names this point; else
    nothing. ``path`` is the file being written, which the ENOSPC error names as a real one would; ``actions``
    are what this point can do besides (e.g. ``perturb``), run when named."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted = _parse(spec).get(name)
    if wanted is None:
        return
    _hits[name] += 1
    nth, action = wanted
    if _hits[name] != nth:
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})",
                      None if path is None else str(path))
    if action == "pause":
        _pause(name)
        return
    if actions and action in actions:
        actions[action]()
        return
    if action != "kill":
        extra = "".join(f", {a}" for a in actions or ())
        raise ValueError(f"{ENV}: {name}: unknown action {action!r} (kill, enospc, pause{extra})")
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:  # not reached; a process that somehow survives the group kill goes alone
        os.kill(os.getpid(), signal.SIGKILL)


def _pause(name: str) -> None:
    release = os.environ.get(RELEASE_ENV)
    if not release:
        raise ValueError(f"{ENV}: {name}=pause needs {RELEASE_ENV}, the file whose creation ends the pause")
    print(f"{ENV}: paused at {name}", file=sys.stderr, flush=True)
    while not os.path.exists(release):
        time.sleep(0.05)


def armed(name: str) -> bool:
    """True when HUMPBACK_FAULT names this point (pipelines add their fault steps only then)."""
    return name in _parse(os.environ.get(ENV, ""))


def fault_step(name: str):
    """A datatrove step that passes documents through and hits ``name`` once its input is exhausted, i.e.
    after the steps before it (writers included) have finished and closed their files for this task."""
    from datatrove.pipeline.base import PipelineStep

    class FaultStep(PipelineStep):
        type = "🧪 - TEST"

        def __init__(self) -> None:
            super().__init__()
            self.name = f"fault point {name}"

        def run(self, data=None, rank: int = 0, world_size: int = 1):
            yield from data or []
            fault_point(name)

    return FaultStep()


__all__ = ["ENV", "POINTS", "RELEASE_ENV", "armed", "fault_point", "fault_step"]
