"""Named fault points, so that tests can kill a run (or fill its disk) at a known moment instead of after a sleep.

Code calls ``fault_point("augment.chunk_saved")`` right after it made something durable. Nothing happens unless
the environment variable ``HUMPBACK_FAULT`` names that point::

    HUMPBACK_FAULT="augment.chunk_saved"           SIGKILL the process group at the first hit
    HUMPBACK_FAULT="train.checkpoint_saved@2"      ... at the second hit (counted per process)
    HUMPBACK_FAULT="shard.before_write=enospc"     raise OSError(ENOSPC) there instead (a full disk)
    HUMPBACK_FAULT="a@1,b=enospc"                  several points, comma-separated

The whole process group is killed, as ``kill -9`` of a run would be: datatrove workers and servers die with it.
Tests start the run in a session of its own (``start_new_session=True``). The point names in use are listed in
``POINTS``; docs/reliability.md has the matrix of what each one interrupts.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENV = "HUMPBACK_FAULT"

POINTS = {
    "prepare.shard_written": "prepare: a segment shard of one task is complete on disk",
    "augment.chunk_saved": "augment: a chunk of generated instructions is checkpointed",
    "curate.chunk_saved": "curate: a chunk of scores is checkpointed",
    "shard.before_write": "augment/curate: about to write an output shard (enospc here = a full disk)",
    "shard.written": "augment/curate: an output shard is complete on disk",
    "train.checkpoint_saved": "train: a Trainer checkpoint (trainer_state.json last) is complete",
    "train.before_publish": "train: the final model is assembled in OUTPUT.partial/final, not yet renamed",
    "export.before_publish": "export: the new export is complete in OUT.partial, not yet renamed into place",
    "run.stage_done": "run: a stage's result is in the manifest",
    "rest.chunk_saved": "rest: a chunk of sampled solutions is checkpointed",
}

_hits: Counter = Counter()


def _parse(spec: str) -> dict[str, tuple[int, str]]:
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, action = item.partition("=")
        name, _, nth = name.partition("@")
        out[name.strip()] = (int(nth) if nth else 1, (action or "kill").strip())
    return out


def fault_point(name: str) -> None:
    """Kill the process group (or raise ENOSPC) here when HUMPBACK_FAULT names this point; else nothing."""
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
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})")
    if action != "kill":
        raise ValueError(f"{ENV}: {name}: unknown action {action!r} (kill or enospc)")
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:  # not reached; a process that somehow survives the group kill goes alone
        os.kill(os.getpid(), signal.SIGKILL)


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


__all__ = ["ENV", "POINTS", "armed", "fault_point", "fault_step"]
