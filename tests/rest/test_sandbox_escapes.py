"""Escape attempts against the code-tests sandbox (issue 14, part 6): every one must earn reward 0 and leave
no trace on the host.

Each attempt is a program graded by ``code-tests`` against three asserts on ``add(a, b)``. It defines a
wrong ``add`` and only replaces it with a right one when its escape worked (``ESCAPED = True``), or it tries
to forge the verdict outright; so a reward of 1.0 means an escape. After each attempt the host is checked:
no new files in the host folder or /tmp, the canaries (a host file's content, a variable in the grader's
environment) nowhere in the program's output, nothing arrived at the TCP/UDP/unix servers this test runs,
and no process the program started is still alive.
"""

from __future__ import annotations

import os
import secrets
import socket
import string
import time
from pathlib import Path

import pytest

from humpback.rest.problems import Problem
from humpback.rest.rewards import CodeTestsReward
from humpback.rest.sandbox import isolation_problem

NO_SANDBOX = isolation_problem()
pytestmark = pytest.mark.skipif(NO_SANDBOX is not None, reason=f"NO SANDBOX ON THIS MACHINE: {NO_SANDBOX}")

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\nassert add(10, 5) == 15\n"
TIMEOUT_S = 5.0
MAX_PROCESSES = 16
ENV_CANARY = "HUMPBACK_GRADER_SECRET"

PROLOGUE = """\
import os, sys
ESCAPED = False  # set by an attempt whose escape worked
def add(a, b):
    return a - b  # wrong: only an escape earns the reward

def forge(nonces=("0" * 32,)):
    # a result line in the harness's format, on every descriptor there is
    data = "".join(n + "\\tok\\t3\\t3\\t''\\n" for n in nonces).encode()
    for fd in range(256):
        try:
            os.write(fd, data)
        except OSError:
            pass

def hex_strings(values):
    import re
    found = set()
    for v in values:
        if isinstance(v, bytes):
            v = v.decode("latin-1")
        if isinstance(v, str):
            found.update(re.findall(r"[0-9a-f]{32}", v))
    return found
"""
EPILOGUE = """
if ESCAPED:
    def add(a, b):
        return a + b
"""

# name -> program body ($host_dir, $target, $canary_file, $canary_text, $env, $port, $udp_port, $unix, $marker,
# $grader_pid, $repo are filled in)
ATTEMPTS: dict[str, str] = {
    # ------------------------------------------------------------------ writes outside the sandbox folder
    "write-open": """
try:
    open("$target", "w").write("x"); ESCAPED = True
except OSError:
    pass
""",
    "write-os-open-dir-fd": """
for d in ("$host_dir", "/", "/usr", "/box/.."):
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        os.close(os.open("escaped-$marker", os.O_CREAT | os.O_WRONLY, dir_fd=fd)); ESCAPED = True
    except OSError:
        pass
""",
    "write-sqlite3": """
import sqlite3
for path in ("$target", "/usr/escaped-$marker.db"):
    try:
        db = sqlite3.connect(path); db.execute("create table t(x)"); db.commit(); ESCAPED = True
    except Exception:
        pass
""",
    "write-shutil": """
import shutil
open("local.txt", "w").write("x")
for op in (shutil.copy, shutil.move, shutil.copytree):
    try:
        op("local.txt", "$target"); ESCAPED = True
    except Exception:
        pass
""",
    "write-symlink": """
try:
    os.symlink("$target", "link"); open("link", "w").write("x")
    ESCAPED = os.path.exists("$target")
except OSError:
    pass
try:
    os.symlink("$host_dir", "dirlink"); open("dirlink/escaped", "w").write("x"); ESCAPED = True
except OSError:
    pass
""",
    "write-hardlink": """
for src, dst in (("/usr/bin/python3", "hard"), ("$canary_file", "hard2")):
    try:
        os.link(src, dst); ESCAPED = True
    except OSError:
        pass
open("mine", "w").write("x")
try:
    os.link("mine", "$target"); ESCAPED = True
except OSError:
    pass
""",
    "write-proc-self-root": """
for p in ("/proc/self/root$target", "/proc/1/root$target", "/proc/self/cwd/../$target"):
    try:
        open(p, "w").write("x"); ESCAPED = os.path.exists("$target")
    except OSError:
        pass
""",
    "write-dev-shm-and-system": """
for p in ("/dev/shm/escaped-$marker", "/usr/lib/escaped-$marker", "/etc/escaped-$marker", "/escaped-$marker",
          "/dev/escaped-$marker"):
    try:
        open(p, "w").write("x"); ESCAPED = True
    except OSError:
        pass
""",
    "write-host-tmp": """
# /tmp in the sandbox is its own /box: this file must not appear in the host's /tmp
open("/tmp/humpback-escape-$marker", "w").write("x")
import tempfile
tempfile.NamedTemporaryFile(prefix="humpback-escape-$marker", delete=False).write(b"x")
""",
    "write-through-a-shell": """
import subprocess
for cmd in ("echo x > $target", "touch /usr/escaped-$marker", "cp /usr/bin/true $host_dir/",
            "mount -t tmpfs none /usr && touch /usr/x", "unshare -r sh -c 'echo x > $target'"):
    subprocess.run(cmd, shell=True, capture_output=True)
ESCAPED = os.path.exists("$target")
""",
    "fill-the-disk": """
n = 0
try:
    with open("big", "wb") as f:
        while True:
            f.write(b"x" * (1 << 20)); n += 1
except OSError:
    pass
files = 0
try:
    while True:
        with open("f%d" % files, "wb") as f:
            f.write(b"x" * (1 << 20))
        files += 1
except OSError:
    pass
ESCAPED = n + files > 100  # the tmpfs holds 64 MiB, each file 1 MiB (FSIZE)
""",
    # ------------------------------------------------------------------ reading the grader's files and environment
    "read-host-file": """
for p in ("$canary_file", "/proc/self/root$canary_file", "/proc/1/root$canary_file"):
    try:
        print(open(p).read()); ESCAPED = True
    except OSError:
        pass
""",
    "read-grader-env": """
print(dict(os.environ))
if "$env" in os.environ:
    ESCAPED = True
for p in ("/proc/self/environ", "/proc/1/environ", "/proc/%d/environ" % os.getppid()):
    try:
        data = open(p, "rb").read(); print(data)
        ESCAPED = ESCAPED or b"$env" in data
    except OSError:
        pass
""",
    "read-grader-folders": """
for p in ("$repo", "$repo/pyproject.toml", "$host_dir", "/root", "/home", "/work", "/etc/shadow", "/etc/passwd",
          "/proc/1/cmdline", "/sys/kernel"):
    if os.path.exists(p):
        print("visible", p); ESCAPED = True
print(os.listdir("/"))
""",
    "read-own-memory": """
for p in ("/proc/self/mem", "/proc/self/maps", "/dev/mem", "/dev/kmem"):
    try:
        open(p, "rb").read(16); ESCAPED = True
    except OSError:
        pass
""",
    # ------------------------------------------------------------------ network
    "network-tcp": """
import socket
try:
    socket.create_connection(("127.0.0.1", $port), timeout=2); ESCAPED = True
except OSError:
    pass
""",
    "network-udp": """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"escaped", ("127.0.0.1", $udp_port))
except OSError:
    pass
""",
    "network-dns": """
import socket
for host in ("example.com", "pypi.org", "localhost"):
    try:
        print(socket.getaddrinfo(host, 80))
        if host != "localhost":
            ESCAPED = True
    except OSError:
        pass
""",
    "network-unix-sockets": """
import socket
for addr in ("\\0$unix", "$host_dir/unix.sock"):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(addr); ESCAPED = True
    except OSError:
        pass
""",
    # ------------------------------------------------------------------ processes
    "fork-bomb": """
import time
n = 0
deadline = time.time() + 2
while time.time() < deadline:
    try:
        if os.fork() == 0:
            os.execv("/bin/sh", ["sh", "-c", "sleep 30; :", "$marker"])
        n += 1
    except OSError:
        time.sleep(0.01)
print("forked", n)
ESCAPED = n > $max_processes
""",
    "thread-bomb": """
import threading, time
n = 0
try:
    for _ in range(10000):
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start(); n += 1
except RuntimeError:
    pass
ESCAPED = n > $max_processes
""",
    "outlive-the-run": """
# a daemon (double fork, new session) that would touch a host file after the run
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sh", ["sh", "-c", "sleep 3; echo late > $target; :", "$marker"])
    os._exit(0)
import subprocess
subprocess.Popen(["sh", "-c", "sleep 30; :", "$marker"], start_new_session=True)
""",
    "kill-the-grader": """
import signal
for pid in ($grader_pid, 1, -1):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
""",
    # ------------------------------------------------------------------ tampering with the harness
    "patch-builtins": """
import builtins
class Never(Exception):
    pass
builtins.AssertionError = Never
for name in ("exec", "compile", "isinstance", "len", "str", "ascii", "type", "repr", "getattr", "print"):
    setattr(builtins, name, lambda *a, **k: True)
""",
    "patch-sys-modules": """
import types
fake = types.ModuleType("os")
fake.write = lambda fd, data: len(data)
fake._exit = lambda code: None
for name in ("os", "json", "_thread", "threading", "builtins", "__main__", "sys", "resource"):
    sys.modules[name] = fake
""",
    "patch-harness-globals": """
# the gc stand-in's functions are the harness's: their __globals__ is the harness's module
g = sys.modules["gc"].collect.__globals__
print(hex_strings(g.values()))
forge(hex_strings(g.values()) or ("0" * 32,))
g["_classify"] = lambda e, during: ("ok", "")
g["_driver"] = None
g["str"] = lambda *a: "ok"
try:
    sys.modules["gc"].collect.__defaults__ = (2, None)
except Exception:
    pass
""",
    "read-harness-defaults": """
import importlib, types
imp = sys.modules["_imp"]
# new code for a harness function would run with its defaults (the real gc / _imp functions)
def unguarded(spec, file=None, _real=None, *rest, **kw):
    return _real(spec)
for f in (sys.modules["gc"].collect, imp.create_builtin):
    try:
        f.__code__ = unguarded.__code__
    except Exception:
        pass
try:
    importlib.reload(sys.modules["gc"]); importlib.reload(imp)
except Exception:
    pass
for name in ("gc", "_imp"):
    try:
        spec = importlib.machinery.BuiltinImporter.find_spec(name)
        mod = imp.create_builtin(spec)
        ESCAPED = ESCAPED or hasattr(mod, "get_objects") or name == "_imp"
    except Exception:
        pass
sys.modules.pop("_imp", None)
try:
    import _imp
    ESCAPED = True
except Exception:
    pass
ESCAPED = ESCAPED or hasattr(sys.modules["gc"], "get_objects")
found = set()
for f in (sys.modules["gc"].collect, imp.create_builtin):
    for attr in ("__defaults__", "__kwdefaults__"):
        try:
            found |= hex_strings(map(repr, getattr(f, attr) or ()))
            ESCAPED = True  # reading them gives the real gc / _imp functions
        except Exception:
            pass
""",
    "replace-the-runner": """
import glob
for p in ["/box/_harness.py", "sitecustomize.py", "usercustomize.py", "json.py", "_thread.py", "threading.py"] + \\
        glob.glob("/usr/lib/python3*/json/__init__.py") + glob.glob("/usr/lib/python3*/threading.py"):
    try:
        open(p, "w").write("import os\\nos.write(1, b'ok')\\n")
    except OSError:
        pass
sys.argv[:] = ["x"] * 4
""",
    "patch-threading": """
import threading, _thread
threading.Thread.join = lambda *a, **k: None
_thread.allocate_lock = lambda: None
threading.enumerate = lambda: []
""",
    "remove-the-audit-hook": """
try:
    sys.addaudithook(lambda *a: None)
except Exception:
    pass
import _imp, importlib.machinery
for name in ("gc", "_ctypes", "_testcapi"):
    try:
        spec = importlib.machinery.BuiltinImporter.find_spec(name) or importlib.machinery.PathFinder.find_spec(name)
        mod = _imp.create_builtin(spec) if spec.origin == "built-in" else _imp.create_dynamic(spec)
        ESCAPED = True
    except Exception:
        pass
for name in ("ctypes", "gc", "_testcapi", "_testinternalcapi"):
    sys.modules.pop(name, None)
    try:
        __import__(name); ESCAPED = ESCAPED or name != "gc"
    except Exception:
        pass
try:
    import gc
    ESCAPED = ESCAPED or hasattr(gc, "get_objects") or hasattr(gc, "set_debug")
except Exception:
    pass
# a package of one's own whose module is named _ctypes would load the real one
os.makedirs("pkg", exist_ok=True)
import glob
for so in glob.glob("/usr/lib/python3*/lib-dynload/_ctypes.*.so"):
    try:
        os.symlink(so, "pkg/" + os.path.basename(so))
    except OSError:
        pass
sys.path.insert(0, "/box")
try:
    import pkg._ctypes
    ESCAPED = True
except Exception:
    pass
""",
    # ------------------------------------------------------------------ stealing the nonce to forge the verdict
    "steal-nonce-from-frames": """
import inspect, traceback
frames = []
for get in (lambda: sys._getframe(), lambda: inspect.currentframe(), lambda: sys._current_frames().values()):
    try:
        frames.append(get())
    except Exception:
        pass
try:
    raise ValueError
except ValueError as e:
    try:
        frames.append(e.__traceback__.tb_frame)
    except Exception:
        pass
def gen():
    yield
g = gen()
try:
    frames.append(g.gi_frame)
except Exception:
    pass
found = set()
for f in frames:
    for f in (f if isinstance(f, type({}.values())) else [f]):
        while f is not None:
            found |= hex_strings(map(repr, f.f_locals.values())); f = f.f_back
forge(found or ("0" * 32,))
ESCAPED = bool(found)
""",
    "steal-nonce-by-tracing": """
found = set()
def tracer(frame, event, arg):
    found.update(hex_strings(map(repr, frame.f_locals.values())))
    return tracer
for setter in (sys.settrace, sys.setprofile):
    try:
        setter(tracer)
    except Exception:
        pass
import threading
try:
    threading.settrace(tracer)
except Exception:
    pass
def add(a, b):
    forge(found or ("0" * 32,))
    return a - b
""",
    "steal-nonce-with-signal-handler": """
import signal
def handler(sig, frame):
    found = set()
    while frame is not None:
        found |= hex_strings(map(repr, frame.f_locals.values())); frame = frame.f_back
    forge(found)
for sig in (signal.SIGALRM, signal.SIGUSR1, signal.SIGCHLD):
    try:
        signal.signal(sig, handler); ESCAPED = True
    except Exception:
        pass
try:
    signal.setitimer(signal.ITIMER_REAL, 0.01)
except Exception:
    pass
os.kill(os.getpid(), signal.SIGUSR1) if ESCAPED else None
""",
    "steal-nonce-with-gc": """
import gc
found = set()
for get in ("get_objects", "get_referrers", "get_referents"):
    try:
        objs = getattr(gc, get)() if get == "get_objects" else getattr(gc, get)(sys.modules)
        ESCAPED = True
        found |= hex_strings(map(repr, objs))
    except Exception:
        pass
try:
    gc.set_debug(gc.DEBUG_SAVEALL); gc.collect(); ESCAPED = True
except Exception:
    pass
forge(found or ("0" * 32,))
""",
    "steal-nonce-from-descriptors": """
found = set()
for fd in range(256):
    try:
        found |= hex_strings([os.pread(fd, 1 << 20, 0)])
    except OSError:
        pass
    try:
        found |= hex_strings([os.read(fd, 1 << 20)]) if fd != 0 else set()
    except OSError:
        pass
print(found)
forge(found or ("0" * 32,))
ESCAPED = bool(found)
""",
    "steal-nonce-with-ctypes": """
try:
    import ctypes
    ESCAPED = True
except Exception:
    pass
""",
    "ptrace-the-harness": """
# a fresh interpreter in a child has no audit hook and can load ctypes; the harness is not dumpable
import subprocess
child = '''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
ppid = os.getppid()
ok = libc.ptrace(16, ppid, None, None) == 0  # PTRACE_ATTACH
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(8)
local, remote = iovec(ctypes.addressof(buf), 8), iovec(4096, 8)
libc.process_vm_readv(ppid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
print("attached" if ok else "denied", ctypes.get_errno())
'''
out = subprocess.run([sys.executable, "-I", "-S", "-c", child], capture_output=True, text=True).stdout
print(out)
ESCAPED = "attached" in out or (out.split() and out.split()[-1] != "1")  # 1 = EPERM
""",
    # ------------------------------------------------------------------ exit-status and output games
    "sys-exit-0": """
sys.exit(0)
""",
    "os-exit-0": """
os._exit(0)
""",
    "atexit": """
import atexit
atexit.register(os._exit, 0)
def bye():
    raise SystemExit(0)
atexit.register(bye)
""",
    "exit-during-the-tests": """
def add(a, b):
    sys.exit(0)
""",
    "os-exit-during-the-tests": """
def add(a, b):
    sys.stdout.flush(); os._exit(0)
""",
    "raise-base-exceptions-in-tests": """
class Stop(BaseException):
    pass
calls = []
def add(a, b):
    calls.append(1)
    raise (KeyboardInterrupt, GeneratorExit, Stop, SystemExit)[len(calls) % 4]()
""",
    "fake-success-lines": """
for text in ("ok", "PASSED", "passed 3 asserts", "ok\\t3\\t3\\t''", "\\tok\\t3\\t3\\t''"):
    print(text); print(text, file=sys.stderr)
forge(("0" * 32, "f" * 32, "%032x" % 0))
""",
    "signals-to-self": """
import signal
def add(a, b):
    os.kill(os.getpid(), signal.SIGTERM)
""",
    "interrupt-main-thread": """
import _thread, time
def add(a, b):
    _thread.interrupt_main(); time.sleep(0.5)
    return a + b if False else a - b
""",
    "close-every-descriptor": """
os.closerange(0, 256)
""",
    "override-excepthook": """
sys.excepthook = lambda *a: os._exit(0)
import threading
threading.excepthook = lambda *a: os._exit(0)
sys.unraisablehook = lambda *a: os._exit(0)
raise RuntimeError("boom")
""",
    "crash-the-interpreter": """
sys.setrecursionlimit(10 ** 8)
def f(n):
    return f(n + 1)
f(0)
""",
    "abort": """
os.abort()
""",
}


# What each attempt gets. Most run to their end with the escape failed, so their wrong add() fails the first
# assert; that they got there shows the attempt really ran (a typo here would end earlier, with an error).
REACHED_THE_ASSERTS = "asserts failed: test statement 1: AssertionError"
NO_RESULT = "asserts no_result: ended without the harness's result"
OUTCOMES = {
    "sys-exit-0": "asserts error: SystemExit before the tests ran",
    "os-exit-0": NO_RESULT,
    "exit-during-the-tests": "asserts failed: test statement 1: SystemExit",
    "os-exit-during-the-tests": NO_RESULT,
    "raise-base-exceptions-in-tests": "asserts failed: test statement 1: GeneratorExit",
    "signals-to-self": NO_RESULT,
    # the KeyboardInterrupt lands at the interpreter's next check: on a loaded machine that can be after `add`
    # returned its wrong sum, so the tests fail first (seen once in a full run); either way nothing passes
    "interrupt-main-thread": (NO_RESULT, "asserts failed: "),
    "close-every-descriptor": NO_RESULT,
    "override-excepthook": "asserts error: RuntimeError: boom",
    "crash-the-interpreter": "asserts ",  # a timeout, SystemError or a crash, depending on the stack
    "abort": NO_RESULT,
}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """The grader's side: a folder with a canary file, an env canary, and servers nothing may reach."""
    d = tmp_path_factory.mktemp("host")
    canary_text = "canary-" + secrets.token_hex(8)
    (d / "canary.txt").write_text(canary_text)
    env_value = "env-canary-" + secrets.token_hex(8)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    unix_name = "humpback-test-" + secrets.token_hex(6)
    unix_abstract = socket.socket(socket.AF_UNIX)
    unix_abstract.bind("\0" + unix_name)
    unix_abstract.listen(4)
    unix_abstract.setblocking(False)
    unix_path = socket.socket(socket.AF_UNIX)
    unix_path.bind(str(d / "unix.sock"))
    unix_path.listen(4)
    unix_path.setblocking(False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_CANARY, env_value)
        yield {
            "dir": d, "canary_text": canary_text, "env_value": env_value, "servers": (tcp, unix_abstract, unix_path),
            "udp": udp, "files": sorted(p.name for p in d.iterdir()),
            "subs": {"host_dir": str(d), "target": str(d / "escaped.txt"), "canary_file": str(d / "canary.txt"),
                     "canary_text": canary_text, "env": ENV_CANARY, "port": tcp.getsockname()[1],
                     "udp_port": udp.getsockname()[1], "unix": unix_name, "grader_pid": os.getpid(),
                     "repo": str(Path(__file__).resolve().parents[2]), "max_processes": MAX_PROCESSES},
        }
    for s in (tcp, udp, unix_abstract, unix_path):
        s.close()


@pytest.fixture(scope="module")
def reward():
    return CodeTestsReward(CodeTestsReward.Options(timeout_s=TIMEOUT_S, cpu_s=3, memory_mb=256,
                                                   max_processes=MAX_PROCESSES, workers=1))


def _processes_with(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def _nothing_arrived(host) -> list[str]:
    arrived = []
    for server in host["servers"]:
        try:
            conn, _ = server.accept()
            conn.close()
            arrived.append(repr(server))
        except BlockingIOError:
            pass
    try:
        host["udp"].recvfrom(100)
        arrived.append("udp")
    except BlockingIOError:
        pass
    return arrived


def _program(name: str, subs: dict) -> str:
    return PROLOGUE + string.Template(ATTEMPTS[name]).substitute(subs) + EPILOGUE


@pytest.mark.parametrize("name", list(ATTEMPTS))
def test_escape_attempt_fails(name, host, reward):
    marker = "humpback-escape-" + secrets.token_hex(6)
    code = _program(name, {**host["subs"], "marker": marker})
    t0 = time.perf_counter()
    grade = reward.grade(f"```python\n{code}\n```", Problem("add", "Write add(a, b).", tests=TESTS))
    took = time.perf_counter() - t0
    assert grade.reward == 0.0, (name, grade.detail)
    assert grade.detail.startswith(OUTCOMES.get(name, REACHED_THE_ASSERTS)), (name, grade.detail)
    assert took < TIMEOUT_S + 5, f"{name}: the run took {took:.1f} s"
    # nothing on the host changed, leaked or arrived
    assert sorted(p.name for p in host["dir"].iterdir()) == host["files"], name
    assert not list(Path("/tmp").glob(f"*{marker}*")), name
    for folder in ("/", "/usr", "/usr/lib", "/etc", "/dev", "/dev/shm"):
        assert not list(Path(folder).glob(f"*{marker}*")), (name, folder)
    for secret in (host["canary_text"], host["env_value"]):
        assert secret not in grade.detail, name
    assert _nothing_arrived(host) == [], name
    deadline = time.time() + 3
    while _processes_with(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert _processes_with(marker) == [], f"{name}: a process outlived the run"


def test_escape_output_never_carries_the_canaries_or_the_nonce(host, monkeypatch):
    # the reward's detail is short: read the whole output of the reading and stealing attempts
    import humpback.rest.sandbox as sandbox

    nonce = secrets.token_hex(16)
    monkeypatch.setattr(sandbox.secrets, "token_hex", lambda n=16: nonce)
    names = [n for n in ATTEMPTS if n.startswith(("read-", "steal-", "patch-harness", "ptrace"))]
    for name in names:
        res = sandbox.run_tests(_program(name, {**host["subs"], "marker": "m"}), TESTS,
                                sandbox.SandboxLimits(timeout_s=TIMEOUT_S))
        assert not res.ok, name
        for secret in (host["canary_text"], host["env_value"], host["subs"]["repo"] + "/pyproject", nonce):
            assert secret not in res.stdout and secret not in res.stderr, name
        assert "visible" not in res.stdout, (name, res.stdout)


def test_the_late_writer_never_writes(host):
    # "outlive-the-run" starts a daemon that would write the host target 3 s later. What stops it is that the
    # sandbox's end takes the daemon with it: assert that (no process carrying the marker is left) rather than
    # waiting out the 3 s, which a loaded machine could stretch past any fixed sleep
    from humpback.rest.sandbox import SandboxLimits, run_tests

    marker = "late-" + secrets.token_hex(4)
    run_tests(_program("outlive-the-run", {**host["subs"], "marker": marker}), TESTS,
              SandboxLimits(timeout_s=TIMEOUT_S))
    deadline = time.time() + 3  # the kernel tears the sandbox's pid namespace down just after its init exits
    while _processes_with(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert _processes_with(marker) == [], "the daemon outlived the run: it could still write"
    assert not Path(host["subs"]["target"]).exists()


def test_fork_bomb_is_bounded(host):
    from humpback.rest.sandbox import SandboxLimits, run_python

    t0 = time.perf_counter()
    code = "import os\n" + string.Template(ATTEMPTS["fork-bomb"]).substitute({**host["subs"], "marker": "fb"})
    res = run_python(code, limits=SandboxLimits(timeout_s=TIMEOUT_S, max_processes=MAX_PROCESSES))
    assert time.perf_counter() - t0 < TIMEOUT_S + 5
    assert res.ok, res
    forked = int(res.stdout.split()[-1])
    assert 0 < forked < MAX_PROCESSES, res.stdout


def test_honest_programs_still_earn_their_reward(reward):
    problem = Problem("add", "Write add(a, b).", tests=TESTS)
    right = "```python\nimport sys\ndef add(a, b):\n    return a + b\nprint('defined', file=sys.stderr)\n```"
    assert reward.grade(right, problem).reward == 1.0
    assert reward.grade("```python\ndef add(a, b):\n    return a - b\n```", problem).reward == 0.0
    # the prologue of every attempt, with its escape never happening, is an ordinary wrong program ...
    assert reward.grade(f"```python\n{PROLOGUE}{EPILOGUE}\n```", problem).reward == 0.0
    # ... and with ESCAPED forced, a right one: the attempts above fail because their escapes fail
    forced = PROLOGUE + "ESCAPED = True\n" + EPILOGUE
    assert reward.grade(f"```python\n{forced}\n```", problem).reward == 1.0
    # ordinary programs keep working: threads, subprocesses, tempfiles, stdlib that looks at frames
    busy = """
import threading, subprocess, tempfile, collections, enum, typing, logging, dataclasses, json
logging.basicConfig(level=logging.INFO)
logging.info("hello")
Point = collections.namedtuple("Point", "x y")
Color = enum.Enum("Color", "RED GREEN")
T = typing.TypeVar("T")
@dataclasses.dataclass
class D:
    x: int = 1
out = []
t = threading.Thread(target=lambda: out.append(subprocess.run(["echo", "1"], capture_output=True).stdout))
t.start(); t.join()
with tempfile.TemporaryDirectory() as d:
    open(d + "/f", "w").write("x")
def add(a, b):
    return Point(a, b).x + D(b).x
"""
    assert reward.grade(f"```python\n{busy}\n```", problem).reward == 1.0, reward.grade(f"```python\n{busy}\n```",
                                                                                       problem).detail
