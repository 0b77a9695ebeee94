"""What a user sees while humpback works: one live line per stage, and a finished line when it ends.

In a quiet run (the CLI's default; ``-v`` turns it off) everything a stage writes goes to its log file:
file descriptors 1 and 2 are pointed at ``<logs>/<stage>.log`` for as long as the stage runs, so datatrove's
loguru banners and stats blocks, tqdm bars, transformers warnings and the output of child processes land
there whoever wrote them, at the file-descriptor level. The live line is drawn on a duplicate of the
original terminal. The library is only quiet inside :func:`quiet` (the CLI enters it per command), so a
test or notebook calling ``run_loop`` keeps its output.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Optional

_quiet = False
_live: Optional["_LiveLine"] = None


def is_quiet() -> bool:
    return _quiet


def in_stage() -> bool:
    """Inside a quiet stage: output goes to its log file."""
    return _live is not None


class _TerminalFilter(logging.Filter):
    """Outside a stage, a quiet run shows humpback's warnings and errors only; inside one, the handler's stream
    is the stage log, which keeps everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _live is not None or record.levelno >= logging.WARNING


class _Formatter(logging.Formatter):
    """Timestamps and logger names in a stage's log file; the bare message on the terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record) if _live is not None else record.getMessage()


@contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    global _quiet
    if not enabled:
        yield
        return
    flt = _TerminalFilter()
    handlers = list(logging.getLogger().handlers)
    formats = [h.formatter for h in handlers]
    short = _Formatter()
    for h in handlers:
        h.addFilter(flt)
        h.setFormatter(short)
    before, _quiet = _quiet, True
    try:
        yield
    finally:
        _quiet = before
        for h, f in zip(handlers, formats):
            h.removeFilter(flt)
            h.setFormatter(f)


def _fd(stream) -> Optional[int]:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # click's CliRunner and pytest's capsys have no descriptor
        return None


def _dup_stream(fd: int) -> IO[str]:
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")


class _LiveLine:
    """One terminal line: the stage, its elapsed time and the newest meter's figures (a rich Live on a TTY)."""

    def __init__(self, name: str, stream: Optional[IO[str]]) -> None:
        self.name, self.t0, self.text = name, time.perf_counter(), ""
        self.live = None
        from rich.spinner import Spinner

        self.spinner = Spinner("dots")  # one instance, so that its frames advance between refreshes
        if stream is not None:
            from rich.console import Console
            from rich.live import Live

            # rich would otherwise take over sys.stdout/stderr and print the stage's output above the line
            self.live = Live(console=Console(file=stream, highlight=False), transient=True, refresh_per_second=4,
                             get_renderable=self.render, redirect_stdout=False, redirect_stderr=False)
            self.live.start()

    def render(self):
        from rich.text import Text

        elapsed = time.perf_counter() - self.t0
        self.spinner.update(text=Text(f"{self.name:<14} {elapsed:6.0f}s  {self.text}", overflow="ellipsis",
                                      no_wrap=True))
        return self.spinner

    def update(self, text: str) -> None:
        self.text = text

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()


def command(name: str, log_path: Path):
    """The library call of a stage command: a quiet stage whose finished line names its log."""
    return stage(name, Path(log_path), result=f"(log: {log_path})")


def _place_log(tmp: Path, log_path: Path, keep: bool) -> None:
    """Append a staged log to its place (a failed command without an output folder keeps it in the temp dir)."""
    if not keep:
        return
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as dst:
            dst.write(tmp.read_text(encoding="utf-8", errors="replace"))
        tmp.unlink()
    except OSError:  # the log stays in the temp folder; the command's own result is what matters
        pass


def _progress_bars(on: bool, only: Optional[set[str]] = None) -> set[str]:
    """Switch the progress bars of transformers, datasets and huggingface_hub (the libraries a stage loads
    weights and data with) on or off; returns the ones that were on. Libraries not imported yet are left alone."""
    switches = {
        "transformers": ("transformers.utils.logging", "enable_progress_bar", "disable_progress_bar",
                         "is_progress_bar_enabled"),
        "datasets": ("datasets.utils.logging", "enable_progress_bar", "disable_progress_bar",
                     "is_progress_bar_enabled"),
        "huggingface_hub": ("huggingface_hub.utils", "enable_progress_bars", "disable_progress_bars",
                            "are_progress_bars_disabled"),
    }
    was_on = set()
    for lib, (module, enable, disable, state) in switches.items():
        if lib not in sys.modules or (only is not None and lib not in only):
            continue
        try:
            import importlib

            mod = importlib.import_module(module)
            enabled = getattr(mod, state)()
            enabled = not enabled if state.startswith("are_") else enabled
            if enabled != on:
                getattr(mod, enable if on else disable)()
                if not on:
                    was_on.add(lib)
        except (ImportError, AttributeError):  # another version's names: its bars go to the log, no harm
            continue
    return was_on


def progress(meter) -> None:
    """A meter's new figures, for the live line (no-op outside a quiet stage)."""
    if _live is not None:
        _live.update(meter.line())


class StageHandle:
    """What the stage's owner may set for its finished line."""

    def __init__(self, name: str, log_path: Optional[Path]) -> None:
        self.name, self.log_path, self.result = name, log_path, ""


@contextmanager
def stage(name: str, log_path: Path, result: str = "") -> Iterator[StageHandle]:
    """Run the block with stdout/stderr going to ``log_path`` (quiet mode), showing a live line; prints
    ``name  seconds  handle.result`` when it ends, or where to look when it fails."""
    global _live
    handle = StageHandle(name, log_path if _quiet else None)
    handle.result = result
    if not _quiet or _live is not None:  # nested stages write into the outer one's log
        yield handle
        return
    # The log is written in place (and can be followed live) when the folder it belongs to exists; a command
    # whose output folder is not made yet logs to a temporary file, moved into place once the stage has
    # succeeded: a command refused on bad input must leave no output folder behind, not even for its log.
    staged = not log_path.parent.parent.is_dir()
    try:
        if staged:
            fd, tmp_name = tempfile.mkstemp(prefix=f"humpback-{log_path.stem}-", suffix=".log")
            logf = os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="replace")
        else:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            logf = open(log_path, "a", buffering=1, encoding="utf-8", errors="replace")
    except OSError:  # an output that cannot be written is the command's to report, in its own words
        yield handle
        return
    old_out, old_err = sys.stdout, sys.stderr
    for s in (old_out, old_err):
        s.flush()
    # the finished line goes where this process's stdout goes (a CliRunner's buffer has no descriptor)
    term = _dup_stream(1) if _fd(old_out) == 1 else old_out
    tty = _dup_stream(2) if _fd(old_err) == 2 and os.isatty(2) else None
    logf.write(f"\n=== [{name}] {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
    # descriptors 1 and 2 whatever Python's streams are: child processes and C code write there
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    for fd in saved:
        os.dup2(logf.fileno(), fd)
    sys.stdout = sys.stderr = logf
    bars_were_on = _progress_bars(False)  # a bar redrawn with carriage returns is noise in a log file
    _live = _LiveLine(name, tty)
    t0 = time.perf_counter()
    failed = False
    try:
        yield handle
    except BaseException:
        failed = True
        import traceback

        traceback.print_exc(file=logf)  # the terminal gets the command's own error line
        raise
    finally:
        secs = time.perf_counter() - t0
        live, _live = _live, None
        live.stop()
        for s in (logf, old_out, old_err):
            try:
                s.flush()
            except (OSError, ValueError):
                pass
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        sys.stdout, sys.stderr = old_out, old_err
        logf.close()
        if staged:
            _place_log(Path(tmp_name), log_path, keep=not failed or log_path.parent.parent.is_dir())
        _progress_bars(True, only=bars_were_on)
        if not failed:
            print(f"✓ {name:<14} {secs:7.1f}s  {handle.result}".rstrip(), file=term, flush=True)
        if tty is not None:
            tty.close()
        if term is not old_out:
            term.close()
