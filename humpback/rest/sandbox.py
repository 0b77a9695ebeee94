"""Running untrusted candidate code: OS-level isolation with bubblewrap, and a verdict the candidate cannot forge.

Isolation (what the candidate can touch). Every run is a fresh ``bwrap`` sandbox:

- a read-only system: ``/usr`` (and the ``/bin``, ``/lib*`` links), ``/etc/ld.so.cache``, and the Python
  install when it lives outside ``/usr``; nothing else of the host exists in it -- no home folders, no
  ``/root``, ``/work``, host ``/tmp``, run directory, no ``/proc`` (so no ``/proc/self/mem`` either);
- one writable place: a private, size-capped tmpfs ``/box`` (the working directory; ``/tmp`` links to it),
  gone with the sandbox; ``/`` and ``/dev`` are remounted read-only;
- ``--unshare-all``: its own user, pid, network (loopback only), ipc, uts and cgroup namespaces; nested
  user namespaces disabled; all capabilities dropped; a new session; ``--die-with-parent``;
- ``--clearenv``: PATH, LANG, HOME and TMPDIR only -- none of the grader's environment passes in;
- rlimits set by ``prlimit`` before bwrap starts (address space, CPU seconds, file size, open files, no
  core dumps) and ``RLIMIT_NPROC`` set by the harness, which has to happen inside the sandbox's user
  namespace for the limit to count only the sandbox's own processes;
- when the grader runs as root, the sandbox runs as a fresh unprivileged uid (the kernel does not apply
  ``RLIMIT_NPROC`` to root, and root owns every root-owned file), so a fork bomb stops at the limit;
- a wall-clock timeout kills bwrap; the sandbox's pid namespace dies with it, and when the harness ends
  every process the candidate left behind is killed with the namespace.

Where bwrap is missing or cannot create its namespaces, ``code-tests`` is refused with ``SandboxUnavailable``
(a ``ConfigError``: the CLI prints one line and exits 2). There is no unsandboxed fallback.

Verdict (what the grader believes). The candidate runs under ``_harness.py``, which the grader hands in
with a job on a memfd (program, tests, a fresh 128-bit nonce) that the harness reads, truncates and closes
before any candidate code runs. The harness executes the program and then each test statement, and writes
one line -- nonce, status, tests passed, tests total, detail -- to a result file descriptor. Only a line with
the run's nonce counts, and a test run passes only when it says ``ok`` with every statement of the grader's
own count passed. Exit status is ignored: ``sys.exit(0)``, ``os._exit(0)``, atexit tricks and fake lines on
stdout or the result descriptor all end without a valid line, which is a failure. For stdin/stdout tests
the grader compares the output itself (the expected output never enters the sandbox). How the harness keeps
the nonce and its own code out of the candidate's reach is described in its docstring; that in-process
layer rests on CPython introspection rules, so a program that exploits an interpreter memory bug or
crafted ``marshal`` data could in principle forge a pass -- never escape the sandbox.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.config import ConfigError

log = logging.getLogger(__name__)

OUTPUT_LIMIT_BYTES = 4 * 1024 * 1024
_HARNESS = (Path(__file__).with_name("_harness.py")).read_text(encoding="utf-8")
_BOOTSTRAP = "import sys; exec(compile(sys.argv[1], '<humpback-harness>', 'exec', dont_inherit=True))"
_BOX = "/box"
_STATUSES = frozenset({"ok", "failed", "error", "memory_limit", "output_limit", "blocked"})
# A fresh uid per run when the grader is root; high enough that no host file belongs to it.
_UID_BASE, _UID_SPAN = 1_500_000_000, 1 << 24
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; or run `make sandbox-deps`)"


class SandboxUnavailable(ConfigError):
    """No OS-level isolation on this machine, so untrusted code is not run at all."""


@dataclass
class SandboxLimits:
    timeout_s: float = 5.0  # wall clock, bwrap start-up included
    cpu_s: int = 5
    memory_mb: int = 512  # address space, so it includes the interpreter (~30 MB virtual)
    output_bytes: int = OUTPUT_LIMIT_BYTES  # per file: stdout, stderr, anything written in /box
    max_processes: int = 32  # processes and threads in the sandbox (bwrap's init and the harness included)
    disk_mb: int = 64  # size of the /box tmpfs


@dataclass
class SandboxResult:
    # ok | failed (a test statement) | error | blocked | timeout | cpu_limit | memory_limit | output_limit |
    # no_result (ended without the harness's line: os._exit, a signal, a crash)
    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    passed: int = 0  # test statements passed (run_tests)
    total: int = 0  # test statements, as the grader counts them
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class _Setup:
    bwrap: str
    prlimit: str
    python: str  # the interpreter inside the sandbox
    extra_binds: tuple[str, ...]  # read-only binds besides /usr (the Python install when outside /usr)
    drop_to_uid: bool  # the grader is root: run the sandbox as a fresh unprivileged uid


def _traversable_by_others(path: str) -> bool:
    """Whether a user with no relation to the file's owner can reach and read ``path``."""
    p = Path(path)
    try:
        if not p.stat().st_mode & stat.S_IROTH:
            return False
        for parent in p.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
    except OSError:
        return False
    return True


def _interpreter(drop_uid: bool) -> tuple[str, tuple[str, ...]] | None:
    """The grader's base interpreter, else the system python3, whichever the sandbox user can run."""
    base = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    choices = [(base, os.path.realpath(sys.base_prefix)), ("/usr/bin/python3", "/usr")]
    for exe, prefix in choices:
        exe = os.path.realpath(exe)
        if not os.access(exe, os.X_OK):
            continue
        if drop_uid and not (_traversable_by_others(exe) and _traversable_by_others(prefix)):
            continue
        inside_usr = prefix == "/usr" or prefix.startswith("/usr/")
        binds = () if inside_usr and exe.startswith("/usr/") else (prefix,)
        return exe, binds
    return None


@functools.lru_cache(maxsize=1)
def _setup() -> _Setup | str:
    """The tools and interpreter to use, or why there are none."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return f"bwrap (bubblewrap) was not found on PATH; {INSTALL_HINT}"
    prlimit = shutil.which("prlimit")
    if not prlimit:
        return "prlimit (util-linux) was not found on PATH"
    drop = os.geteuid() == 0
    found = _interpreter(drop)
    if found is None:
        return ("no Python interpreter the sandbox user can run: the grader's interpreter is not readable by "
                "other users and /usr/bin/python3 is missing")
    return _Setup(bwrap, prlimit, found[0], found[1], drop)


def _bwrap_command(s: _Setup, limits: SandboxLimits, job_fd: int, result_fd: int) -> list[str]:
    mem = limits.memory_mb * 1024 * 1024
    cpu = max(1, int(limits.cpu_s))
    cmd = [s.prlimit, f"--as={mem}", f"--cpu={cpu}:{cpu + 1}", f"--fsize={limits.output_bytes}",
           "--nofile=64", "--core=0", "--",
           s.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
           "--cap-drop", "ALL", "--uid", "1000", "--gid", "1000", "--hostname", "sandbox", "--clearenv",
           "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8", "--setenv", "LC_ALL", "C.UTF-8",
           "--setenv", "HOME", _BOX, "--setenv", "TMPDIR", _BOX,
           "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    cmd += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in s.extra_binds:
        cmd += ["--ro-bind", path, path]
    cmd += ["--dev", "/dev", "--remount-ro", "/dev",
            "--size", str(limits.disk_mb * 1024 * 1024), "--tmpfs", _BOX, "--symlink", _BOX, "/tmp",
            "--chdir", _BOX, "--remount-ro", "/",
            "--", s.python, "-I", "-S", "-B", "-c", _BOOTSTRAP, _HARNESS, str(job_fd), str(result_fd)]
    return cmd


def _run(mode: str, code: str, tests: str, stdin: str, limits: SandboxLimits, total: int) -> SandboxResult:
    s = _setup()
    if isinstance(s, str):
        raise SandboxUnavailable(f"code-tests needs OS-level isolation: {s}")
    nonce = secrets.token_hex(16)
    job = {"nonce": nonce, "mode": mode, "code": code, "tests": tests, "nproc": limits.max_processes,
           "stack_bytes": max(1 << 20, min(64 << 20, limits.memory_mb * 1024 * 1024 // 8))}
    with tempfile.TemporaryDirectory(prefix="humpback-sandbox-") as tmp:
        root = Path(tmp)
        (root / "stdin.txt").write_text(stdin, encoding="utf-8")
        job_fd = os.memfd_create("humpback-job")  # close-on-exec; pass_fds hands it to bwrap only
        try:
            os.write(job_fd, json.dumps(job).encode("utf-8"))
            os.lseek(job_fd, 0, os.SEEK_SET)
            del job
            with open(root / "stdin.txt", "rb") as fin, open(root / "stdout.txt", "wb") as fout, \
                    open(root / "stderr.txt", "wb") as ferr, open(root / "result.txt", "ab") as fres:
                cmd = _bwrap_command(s, limits, job_fd, fres.fileno())
                kwargs = {}
                if s.drop_to_uid:
                    uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
                    kwargs = {"user": uid, "group": uid, "extra_groups": []}
                started = time.perf_counter()
                proc = subprocess.Popen(cmd, stdin=fin, stdout=fout, stderr=ferr, env={"PATH": "/usr/bin:/bin"},
                                        cwd="/", start_new_session=True, close_fds=True,
                                        pass_fds=(job_fd, fres.fileno()), **kwargs)
                timed_out = False
                try:
                    proc.wait(timeout=limits.timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                finally:
                    _kill_group(proc)
                seconds = round(time.perf_counter() - started, 3)
        finally:
            os.close(job_fd)
        stdout = _read_capped(root / "stdout.txt", limits.output_bytes)
        stderr = _read_capped(root / "stderr.txt", 64 * 1024)
        record = _find_record(root / "result.txt", nonce)
    res = SandboxResult("no_result", None if timed_out else proc.returncode, stdout, stderr, seconds, total=total)
    if timed_out:
        res.status, res.detail = "timeout", f"killed after {limits.timeout_s:g} s wall clock"
    elif record is not None:
        res.status, res.passed, rec_total, res.detail = record
        if mode == "tests" and res.status == "ok" and not (rec_total == total and res.passed == total):
            res.status, res.detail = "error", f"harness ran {res.passed}/{rec_total} statements, expected {total}"
    elif proc.returncode in (128 + signal.SIGXCPU, 128 + signal.SIGKILL, -signal.SIGXCPU, -signal.SIGKILL):
        res.status, res.detail = "cpu_limit", f"killed by the CPU limit ({limits.cpu_s} s)"
    elif "MemoryError" in stderr:
        res.status, res.detail = "memory_limit", "MemoryError"
    else:
        res.detail = (f"ended without the harness's result (exit status {proc.returncode}): os._exit, a signal "
                      f"or a crash")
    return res


def _find_record(path: Path, nonce: str) -> tuple[str, int, int, str] | None:
    """The harness's line: the one starting with this run's nonce (anything else there is the candidate's)."""
    with open(path, "rb") as f:
        data = f.read(OUTPUT_LIMIT_BYTES).decode("utf-8", errors="replace")
    for line in data.splitlines():
        parts = line.split("\t")
        if len(parts) != 5 or not secrets.compare_digest(parts[0].encode(), nonce.encode()):
            continue
        status, passed, total, detail = parts[1:]
        try:
            text = ast.literal_eval(detail)
            rec = (status if status in _STATUSES else "error", int(passed), int(total), str(text))
        except (ValueError, SyntaxError):
            return None
        return rec
    return None


def _kill_group(proc: subprocess.Popen) -> None:
    # bwrap is the group leader; killing it kills the sandbox (--die-with-parent, and its pid namespace)
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


@functools.lru_cache(maxsize=1)
def isolation_problem() -> str | None:
    """Why untrusted code cannot be isolated here (one line), or None. Probes bwrap once per process."""
    s = _setup()
    if isinstance(s, str):
        return s
    res = _run("program", "print(6 * 7)", "", "", SandboxLimits(timeout_s=30, cpu_s=10), 0)
    if res.ok and res.stdout.strip() == "42":
        return None
    why = next((line.strip() for line in res.stderr.splitlines() if line.strip()), "") or res.detail
    return f"bwrap cannot run the sandbox here ({res.status}): {why[:300]}"


def require_isolation() -> None:
    """Raise ``SandboxUnavailable`` unless candidate code can run isolated on this machine."""
    problem = isolation_problem()
    if problem:
        raise SandboxUnavailable(f"code-tests needs OS-level isolation to run model-written code: {problem}")


def count_statements(tests: str) -> int:
    """Top-level statements of assert-style tests (the harness runs and reports them one by one)."""
    return len(ast.parse(tests).body)


def run_python(code: str, stdin: str = "", limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` as a script in a fresh sandbox with ``stdin``; ``ok`` when it finished without an error."""
    require_isolation()
    return _run("program", code, "", stdin, limits or SandboxLimits(), 0)


def run_tests(code: str, tests: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code``, then each top-level statement of ``tests`` in its namespace; ``ok`` only when all pass."""
    require_isolation()
    total = count_statements(tests)
    return _run("tests", code, tests, "", limits or SandboxLimits(), total)


__all__ = ["SandboxLimits", "SandboxResult", "SandboxUnavailable", "count_statements", "isolation_problem",
           "require_isolation", "run_python", "run_tests"]
