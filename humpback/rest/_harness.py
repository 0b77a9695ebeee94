"""The trusted harness that runs *inside* the sandbox, around the candidate's code. Never imported by humpback.

``sandbox.py`` runs this file's text as ``python -I -S -B -c BOOTSTRAP HARNESS JOB_FD RESULT_FD`` inside
bubblewrap (see its docstring for the whole design). Everything here happens before the first line of
candidate code, in this order:

1. ``RLIMIT_NPROC`` (it has to be set inside the sandbox's user namespace to count only the sandbox's
   processes) and ``PR_SET_DUMPABLE`` 0, so no process of the candidate's can ptrace this one or read its
   memory with process_vm_readv.
2. The job (mode, program, tests, nonce) is read from a memfd that is then truncated and closed: the nonce
   exists only in this process's memory, as a local of ``_main`` in the main thread.
3. Every function the main thread uses afterwards is bound to a local now, so a candidate that patches
   ``builtins``, ``os`` or ``sys.modules`` cannot change what the main thread runs.
4. An audit hook (an extra layer, not the isolation) refuses the routes from candidate code to the
   harness's frames and memory: ``sys._getframe``, traceback/generator frames, tracing and profiling,
   ``gc`` object walks, ctypes, building code objects, reading harness functions' defaults, and importing
   ``ctypes``/``gc``/the ``_test*`` modules. The hook keeps everything it needs in default arguments (no
   globals to patch), and reading or replacing a harness function's defaults or code is itself refused.
5. The candidate and then the tests run in a second thread. Signal handlers can only be installed from
   the main thread (which never runs candidate code), and the main thread's frames are not on the second
   thread's stack. When that thread is done, the main thread writes the one result line -- the nonce, the
   status, tests passed/total, a detail -- to the result descriptor and leaves with ``os._exit`` (no atexit
   hooks, no finalizers). The grader only believes that line; exit status and stdout prove nothing.
"""

import _thread
import builtins
import os
import resource
import sys
import threading  # imported in the main thread, so threading.main_thread() is the right thread for candidates
import types

_FILENAME = "<humpback-harness>"  # co_filename of these functions: what the audit hook protects
# _imp: a fresh _imp module would have the unguarded create_builtin (see _guard_imp)
_DENIED_IMPORTS = frozenset({
    "ctypes", "_ctypes", "_ctypes_test", "gc", "_imp", "_testcapi", "_testinternalcapi", "_testbuffer",
    "_testmultiphase", "_testimportmultiple", "_testclinic", "_testsinglephase", "_xxtestfuzz",
    "_xxsubinterpreters", "_xxinterpchannels", "_xxinterpqueues",
})
# Events that hand out frames (and through f_back / f_locals, the harness's), trace execution, walk the heap,
# or build code objects (crafted bytecode can read memory).
_DENIED_EVENTS = frozenset({
    "sys._getframe", "sys._getframemodulename", "sys._current_frames", "sys._current_exceptions",
    "sys.settrace", "sys.setprofile", "sys.addaudithook", "code.__new__", "sys.monitoring.register_callback",
})
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
_FUNC_ATTRS = frozenset({"__code__", "__defaults__", "__kwdefaults__"})


def _denied_name(name, _imports=_DENIED_IMPORTS, _join=str.join, _split=str.split):
    """Whether any component of a dotted module name is denied (``pkg._ctypes`` would load ``_ctypes``)."""
    for part in _split(_join("", (name,)), "."):  # an exact str copy: a str subclass cannot fake its hash
        if part in _imports:
            return True
    return False


def _hook(event, args, _denied=_DENIED_EVENTS, _frames=_FRAME_ATTRS, _fattrs=_FUNC_ATTRS,
          _denied_name=_denied_name, _harness=_FILENAME, _type=type, _func=types.FunctionType,
          _startswith=str.startswith, _len=len):
    if event in _denied:
        # stdlib callers of sys._getframe (namedtuple, enum, typing, logging) fall back on ValueError
        raise ValueError("sandbox: " + event + " is not allowed")
    if _startswith(event, "ctypes.") or _startswith(event, "gc."):
        raise PermissionError("sandbox: " + event + " is not allowed")
    if event == "import":
        if _denied_name(args[0]):
            raise PermissionError("sandbox: importing " + args[0] + " is not allowed")
    elif event == "object.__getattr__":
        if args[1] in _frames:
            raise AttributeError("sandbox: " + args[1] + " is not allowed")
        # the harness's functions keep what they use in their defaults: reading those is refused (their
        # code is public, so reading __code__ is fine; it is also what the check below does)
        if args[1] in _fattrs and args[1] != "__code__" and _type(args[0]) is _func \
                and args[0].__code__.co_filename == _harness:
            raise AttributeError("sandbox: reading the harness's " + args[1] + " is not allowed")
    elif event == "object.__setattr__" or event == "object.__delattr__":
        # new code or defaults for a harness function would switch its checks off
        if _len(args) > 1 and args[1] in _fattrs and _type(args[0]) is _func \
                and args[0].__code__.co_filename == _harness:
            raise PermissionError("sandbox: replacing the harness's " + args[1] + " is not allowed")


def _guard_imp(imp):
    """``_imp.create_builtin`` / ``create_dynamic`` load modules without an "import" event: guard them too.

    The real functions get a fresh spec holding exact strs, so a spec whose ``name`` changes between the
    check and the load cannot slip a denied module through.
    """
    def create_builtin(spec, _real=imp.create_builtin, _denied_name=_denied_name, _ns=types.SimpleNamespace,
                       _join=str.join):
        name = _join("", (spec.name,))
        if _denied_name(name):
            raise PermissionError("sandbox: loading " + name + " is not allowed")
        return _real(_ns(name=name))

    def create_dynamic(spec, file=None, _real=imp.create_dynamic, _denied_name=_denied_name,
                       _ns=types.SimpleNamespace, _join=str.join):
        name, origin = _join("", (spec.name,)), _join("", (spec.origin,))
        if _denied_name(name):
            raise PermissionError("sandbox: loading " + name + " is not allowed")
        return _real(_ns(name=name, origin=origin)) if file is None else _real(_ns(name=name, origin=origin), file)

    imp.create_builtin = create_builtin
    imp.create_dynamic = create_dynamic


def _safe_gc():
    """A ``gc`` module without the calls that hand out objects (get_objects, get_referrers, garbage, ...)."""
    import gc as real

    safe = types.ModuleType("gc", "garbage collector (sandbox: no object walks)")
    safe.garbage = []
    safe.callbacks = []
    for name in ("DEBUG_STATS", "DEBUG_COLLECTABLE", "DEBUG_UNCOLLECTABLE", "DEBUG_SAVEALL", "DEBUG_LEAK"):
        setattr(safe, name, getattr(real, name))

    def collect(generation=2, _f=real.collect):
        return _f(generation)

    def get_debug():
        return 0

    def passthrough(f):
        def call(*args, _f=f):
            return _f(*args)

        call.__name__ = call.__qualname__ = f.__name__
        return call

    for f in (collect, get_debug):
        setattr(safe, f.__name__, f)
    for f in (real.enable, real.disable, real.isenabled, real.get_count, real.get_threshold, real.set_threshold,
              real.is_tracked, real.freeze, real.unfreeze, real.get_freeze_count):
        setattr(safe, f.__name__, passthrough(f))
    return safe


def _make_non_dumpable():
    # PR_SET_DUMPABLE 0: same-uid processes (the candidate's children) may not ptrace us or read our memory
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]


def _classify(e, during_tests, _type=type, _isinstance=isinstance, _str=str, _join=str.join, _getattr=getattr,
              _BaseException=BaseException, _MemoryError=MemoryError, _OSError=OSError):
    """(status, detail) for an exception that ended the program or a test statement."""
    try:
        cls = _type(e)
        name = _join("", (cls.__name__,)) if _isinstance(cls.__name__, _str) else "?"
        text = _str(e)
        text = _join("", (text,)) if _isinstance(text, _str) else "?"
    except _BaseException:
        return ("failed" if during_tests else "error"), "?"
    if _isinstance(e, _MemoryError):
        return "memory_limit", "MemoryError"
    if _isinstance(e, _OSError) and _getattr(e, "errno", None) == 27:  # EFBIG: RLIMIT_FSIZE on an output file
        return "output_limit", "output larger than the limit"
    detail = name + (": " + text[:300] if text else "")
    if text.startswith("sandbox:"):
        return "blocked", detail
    return ("failed" if during_tests else "error"), detail


def _driver(mode, program, statements, g, pristine, out, done, _exec=exec, _dict=dict, _enumerate=enumerate,
            _classify=_classify, _threads=threading.enumerate, _current=threading.current_thread,
            _main_thread=threading.main_thread(), _sys=sys, _out_flush=sys.stdout.flush,
            _err_flush=sys.stderr.flush, _hook_exc=sys.__excepthook__, _type=type, _str=str, _repr=repr,
            _getattr=getattr, _SystemExit=SystemExit, _BaseException=BaseException, _OSError=OSError):
    """Runs in the second thread: the program, its non-daemon threads, then each test statement."""
    status, passed, detail = "ok", 0, ""
    try:
        try:
            _exec(program, g)
        except _SystemExit as e:
            if mode == "tests":  # a program that exits before the asserts has not passed them
                status, detail = "error", "SystemExit before the tests ran"
            elif e.code is not None and e.code != 0:
                status, detail = "error", "SystemExit(" + _repr(e.code)[:50] + ")"
        except _BaseException as e:
            status, detail = _classify(e, False)
            try:
                _hook_exc(_type(e), e, e.__traceback__)  # C-level traceback on stderr, for the grader's log
            except _BaseException:
                pass
        try:  # like interpreter shutdown: wait for the program's non-daemon threads
            me = _current()
            for t in _threads():
                if t is not me and t is not _main_thread and not t.daemon:
                    t.join()
        except _BaseException:
            pass
        if status == "ok" and mode == "tests":
            scope = _dict(g)  # tests see the program's names, but through their own dict ...
            scope["__builtins__"] = pristine  # ... and the builtins as they were before the program ran
            for i, stmt in _enumerate(statements):
                try:
                    _exec(stmt, scope)
                except _BaseException as e:
                    status, detail = _classify(e, True)
                    detail = "test statement " + _str(i + 1) + ": " + detail
                    break
                passed += 1
        for flush in (_getattr(_sys.stdout, "flush", None), _out_flush, _err_flush):
            try:
                if flush is not None:
                    flush()
            except _OSError as e:
                if e.errno == 27 and status == "ok":
                    status, detail = "output_limit", "output larger than the limit"
            except _BaseException:
                pass
        out[0] = (status, passed, detail)
    except _BaseException:  # e.g. MemoryError while recording: a pre-built tuple needs no allocation
        out[0] = ("memory_limit", 0, "MemoryError")
    finally:
        done.release()


def _exit_builtin(code=None):
    raise SystemExit(code)


def _main():
    # Locals for everything used after the candidate starts (see 3. in the module docstring).
    _str, _int, _type, _tuple, _ascii, _len = str, int, type, tuple, ascii, len
    _write, _exit = os.write, os._exit
    hook, driver, start_thread, allocate_lock = _hook, _driver, _thread.start_new_thread, _thread.allocate_lock
    _BaseException = BaseException
    try:
        job_fd, result_fd = int(sys.argv[2]), int(sys.argv[3])
        data = b""
        while True:
            chunk = os.read(job_fd, 1 << 20)
            if not chunk:
                break
            data += chunk
        os.ftruncate(job_fd, 0)  # the memfd is shared with bwrap's init: leave nothing in it
        os.close(job_fd)
        import json

        job = json.loads(data.decode("utf-8"))
        del data
        nonce = job.pop("nonce")
        mode, code, tests = job["mode"], job["code"], job.get("tests") or ""
        resource.setrlimit(resource.RLIMIT_NPROC, (job["nproc"], job["nproc"]))
        _make_non_dumpable()
        _thread.stack_size(job["stack_bytes"])
        del job
    except BaseException as e:  # the grader treats a missing result line as failure
        sys.stderr.write("harness: set-up failed: %r\n" % (e,))
        sys.stderr.flush()
        _exit(4)

    def emit(status, passed, total, detail):
        line = nonce + "\t" + status + "\t" + _str(passed) + "\t" + _str(total) + "\t" + _ascii(detail) + "\n"
        data = line.encode("ascii")
        while data:
            data = data[_write(result_fd, data):]

    try:
        try:
            with open("candidate.py", "w", encoding="utf-8") as f:  # for tracebacks and inspect.getsource
                f.write(code)
        except OSError:
            pass
        program = compile(code, "candidate.py", "exec", dont_inherit=True)
        statements = []
        if mode == "tests":
            import _ast

            tree = compile(tests, "tests", "exec", _ast.PyCF_ONLY_AST, dont_inherit=True)
            statements = [compile(_ast.Module(body=[s], type_ignores=[]), "tests", "exec", dont_inherit=True)
                          for s in tree.body]
    except SyntaxError as e:
        emit("error", 0, 0, "SyntaxError: " + _str(e)[:300])
        sys.stdout.flush()
        _exit(0)
    total = _len(statements)

    module = types.ModuleType("__main__")  # the candidate is __main__; the harness's own module is not reachable
    module.__file__ = "candidate.py"
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = ["candidate.py"]
    builtins.exit = builtins.quit = _exit_builtin  # what site would add; python -S has no exit()
    pristine = dict(builtins.__dict__)
    sys.modules["gc"] = _safe_gc()
    import _imp

    _guard_imp(_imp)
    sys.addaudithook(hook)
    harness_globals = globals()  # reachable through the gc stand-in's __globals__: leave nothing in it
    kept = harness_globals["__builtins__"]
    harness_globals.clear()
    harness_globals["__builtins__"] = kept

    out = [None]
    done = allocate_lock()
    done.acquire()
    acquire = done.acquire
    start_thread(driver, (mode, program, statements, module.__dict__, pristine, out, done))
    del program, statements, pristine, module, harness_globals, kept
    try:
        acquire()
        entry = out[0]
        if _type(entry) is not _tuple or _len(entry) != 3:
            _exit(5)
        status, passed, detail = entry
        if _type(status) is not _str or _type(passed) is not _int or _type(detail) is not _str:
            _exit(5)
        emit(status, passed, total, detail)
    except _BaseException:
        _exit(5)
    _exit(0)


_main()
