"""One writer per run folder or output: an flock on a lock file, plus a note of who holds it.

The kernel releases an flock when its holder dies, however it dies (kill -9 included), so a lock file left by
a dead process never blocks anyone: the next process simply gets the lock and takes the folder over. The lock
file's content (pid, host, command, start time) is only a note for the message a refused process prints.

A lock file is removed on release. Removing it while another process has it open is what makes naive lock
files racy; here a process that got the lock checks that the path still names the file it locked, and starts
over if not, so two processes can never both believe they hold one path.

Locks are re-entrant within a process: ``humpback run`` holds RUN/.lock and its stages take their outputs' locks
again through the same code the stage commands use.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("humpback.locks")

RUN_LOCK = ".lock"


class LockError(RuntimeError):
    """Another live process holds the lock; the message names it (pid, host, command, since when)."""


@dataclass
class _Held:
    fd: int
    depth: int


_held: dict[str, _Held] = {}  # lock path -> this process's hold on it


def run_lock_path(run_dir: str | os.PathLike) -> Path:
    """RUN/.lock: held by `humpback run` / `humpback rest` for the whole run."""
    return Path(run_dir) / RUN_LOCK


def output_lock_path(output: str | os.PathLike) -> Path:
    """The lock of a stage command's output: beside it, because stages publish a file or folder by renaming it
    into place (a lock file inside would be renamed away with the old version)."""
    p = Path(output).resolve()
    return p.parent / f".{p.name}.lock"


def _note(command: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[:1] + sys.argv[1:4]}


def _read_note(fd: int) -> dict[str, Any] | None:
    try:
        raw = os.pread(fd, 4096, 0)
        note = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) else None


def describe(note: dict[str, Any] | None) -> str:
    if not note:
        return "another process (it has not written its pid yet)"
    return (f"{note.get('command', 'humpback')} (pid {note.get('pid')} on {note.get('host')}, "
            f"since {note.get('since')})")


def _alive(note: dict[str, Any]) -> bool | None:
    """Whether the process a note names still runs; None when it ran on another host (cannot tell)."""
    if note.get("host") != socket.gethostname() or not isinstance(note.get("pid"), int):
        return None
    try:
        os.kill(note["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(path: Path, command: str) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, e.strerror, e.filename) from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # the folder it would be written in is not writable: name that folder
            raise OSError(e.errno, e.strerror, str(path.parent)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            note = _read_note(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockError(f"{path.parent}: in use by {describe(note)}; wait for it to finish or stop it "
                                f"(lock file {path})") from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder released (and removed) the file between our open and our flock
            os.close(fd)
            continue
        previous = _read_note(fd)
        if previous and previous.get("pid") != os.getpid():
            state = {False: "which is gone", None: "on another host, which no longer holds it"}.get(
                _alive(previous), "which no longer holds it")
            log.warning("%s: taking over the lock left by %s, %s", path.parent, describe(previous), state)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_note(command)) + "\n").encode("utf-8"), 0)
        return fd


@contextmanager
def locked(path: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold the lock file ``path`` for the block, or raise LockError naming its live holder at once."""
    p = Path(path).absolute()
    key = str(p)
    held = _held.get(key)
    if held is not None:
        held.depth += 1
        try:
            yield p
        finally:
            held.depth -= 1
        return
    fd = _acquire(p, command)
    _held[key] = _Held(fd, 1)
    try:
        yield p
    finally:
        del _held[key]
        try:
            os.unlink(p)  # while still locked: see the module docstring
        except OSError:
            pass
        os.close(fd)


@contextmanager
def waiting(path: str | os.PathLike) -> Iterator[None]:
    """Hold ``path`` for a short block, waiting for another holder: for read-modify-write of one shared file
    (the manifest that the Slurm jobs of one run update side by side). The file is kept, so no rename race."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def holder(path: str | os.PathLike) -> dict[str, Any] | None:
    """The note of the process holding ``path`` now, or None when nobody does."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_note(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


__all__ = ["LockError", "describe", "holder", "locked", "output_lock_path", "run_lock_path", "waiting"]


def writes_output(param: str = "output"):
    """Decorator of a click command: hold the lock of the path given in option ``param`` while it runs, so a
    second command writing there is refused at once (before it reads or writes anything)."""
    import functools

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            target = kwargs.get(param)
            if target is None:
                return fn(*args, **kwargs)
            with locked(output_lock_path(target), command_name()):
                return fn(*args, **kwargs)
        return wrapper
    return decorate


def command_name() -> str:
    """'humpback augment' for the running click command (the lock note's command)."""
    try:
        import click

        path = click.get_current_context().command_path.split(" ", 1)
    except (ImportError, RuntimeError):
        return "humpback"
    return "humpback" + (f" {path[1]}" if len(path) > 1 else "")
