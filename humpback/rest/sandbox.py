"""Running untrusted candidate code: a separate Python process with limits, never the grader's own process.

Each run gets a fresh temporary folder as its working directory and a minimal environment, and starts
``python -I -S -B`` (isolated: no user site, no PYTHON* variables, no site-packages, no bytecode writes) on
a small wrapper that, before the candidate's first line:

- sets resource limits: address space (memory), CPU seconds, written file size, open files, no core dumps;
- installs an audit hook (it cannot be removed from Python code) that refuses sockets, DNS, starting
  processes (subprocess, os.system, exec*, spawn*, fork), ctypes, and writing or deleting files outside the
  temporary folder.

When ``unshare`` can create a user + network namespace (``unshare -rn``; no root needed on most Linux
kernels) the process also runs in a network namespace with no interfaces up, so even a way around the
audit hook finds no network. A wall-clock timeout kills the whole process group. stdout and stderr go to
files in the temporary folder, capped by the file-size limit, so a candidate printing without end cannot
fill the grader's memory.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_WRAPPER = r'''
import os, resource, sys
mem, cpu, fsize = {mem}, {cpu}, {fsize}
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
ROOT = os.path.realpath(os.getcwd())
BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
           "os.forkpty", "pty.", "ctypes.", "os.kill", "os.killpg", "signal.pthread_kill", "webbrowser.",
           "urllib.Request", "http.client.", "ftplib.", "smtplib.", "imaplib.", "poplib.", "nntplib.", "telnetlib.")
PATH_EVENTS = {{"os.remove", "os.rmdir", "os.rename", "os.link", "os.symlink", "os.mkdir", "os.chmod",
               "os.chown", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def _inside(path):
    if isinstance(path, int):
        return True
    try:
        p = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return p == ROOT or p.startswith(ROOT + os.sep)

def _hook(event, args):
    if event.startswith(BLOCKED):
        raise PermissionError("sandbox: " + event + " is not allowed")
    if event == "open" and args:
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 else 0
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & WRITE_FLAGS)
        if writes and not _inside(args[0]):
            raise PermissionError("sandbox: writing outside the sandbox folder is not allowed")
    elif event in PATH_EVENTS:
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)) and not _inside(a):
                raise PermissionError("sandbox: " + event + " outside the sandbox folder is not allowed")

sys.addaudithook(_hook)
sys.argv = ["candidate.py"]
with open("candidate.py", encoding="utf-8") as f:
    source = f.read()
del f
exec(compile(source, "candidate.py", "exec"), {{"__name__": "__main__", "__builtins__": __builtins__}})
'''

OUTPUT_LIMIT_BYTES = 4 * 1024 * 1024


@dataclass
class SandboxLimits:
    timeout_s: float = 5.0  # wall clock
    cpu_s: int = 5
    memory_mb: int = 512  # address space, so it includes the interpreter (~30 MB virtual)
    output_bytes: int = OUTPUT_LIMIT_BYTES
    unshare_network: bool = True  # also a network namespace, when the kernel allows one


@dataclass
class SandboxResult:
    status: str  # ok | error | timeout | cpu_limit | memory_limit | output_limit | blocked
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@functools.lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """Whether ``unshare -rn`` works here (user namespaces enabled, unshare installed)."""
    exe = shutil.which("unshare")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _classify(returncode: int, stderr: str) -> str:
    if returncode == 0:
        return "ok"
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL) and "MemoryError" not in stderr:
        return "cpu_limit"
    # Python ignores SIGXFSZ, so an over-long output shows up as EFBIG ("File too large") on write
    if returncode == -signal.SIGXFSZ or "File too large" in stderr:
        return "output_limit"
    if "MemoryError" in stderr:
        return "memory_limit"
    if "PermissionError: sandbox:" in stderr:
        return "blocked"
    return "error"


def run_python(code: str, stdin: str = "", limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` as a script in a fresh sandbox; ``stdin`` is its standard input."""
    limits = limits or SandboxLimits()
    with tempfile.TemporaryDirectory(prefix="humpback-sandbox-") as tmp:
        root = Path(tmp)
        (root / "candidate.py").write_text(code, encoding="utf-8")
        (root / "wrapper.py").write_text(_WRAPPER.format(
            mem=limits.memory_mb * 1024 * 1024, cpu=max(1, int(limits.cpu_s)), fsize=limits.output_bytes),
            encoding="utf-8")
        (root / "stdin.txt").write_text(stdin, encoding="utf-8")
        cmd = [sys.executable, "-I", "-S", "-B", "wrapper.py"]
        if limits.unshare_network and network_namespace_available():
            cmd = [shutil.which("unshare") or "unshare", "-rn", "--", *cmd]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": tmp,
               "TMPDIR": tmp, "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8"}
        started = time.perf_counter()
        with open(root / "stdin.txt", "rb") as fin, open(root / "stdout.txt", "wb") as fout, \
                open(root / "stderr.txt", "wb") as ferr:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=fin, stdout=fout, stderr=ferr,
                                    start_new_session=True, close_fds=True)
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
        seconds = time.perf_counter() - started
        stdout = _read_capped(root / "stdout.txt", limits.output_bytes)
        stderr = _read_capped(root / "stderr.txt", 64 * 1024)
        if timed_out:
            status = "timeout"
        else:
            status = _classify(proc.returncode, stderr)
        return SandboxResult(status, None if timed_out else proc.returncode, stdout, stderr, round(seconds, 3))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
        log.warning("sandbox process %d did not exit after SIGKILL", proc.pid)


def _read_capped(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", errors="replace")


__all__ = ["SandboxLimits", "SandboxResult", "network_namespace_available", "run_python"]
