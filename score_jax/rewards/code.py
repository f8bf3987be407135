"""Code rewards: run a candidate program against MBPP- or HumanEval-shaped tests, unfoolably.

    result = check_mbpp("def f(x):\n    return 2 * x", ["assert f(2) == 4"])
    result = check_humaneval(problem, completion)            # problem: prompt, test, entry_point
    results = run_jobs([CodeJob.mbpp(p, tests) for p in programs])   # a worker pool, results in order

RL optimises exactly what the reward says, so the verdict must not depend on anything the
candidate can reach. The usual harness (exec the program, then the asserts, in one process, and
trust the exit code or a printed marker) is fooled by an object whose ``__eq__`` is always true,
by ``sys.exit(0)``, by patching ``builtins`` or ``json``, by walking frames or the garbage
collector to the harness's result, or by printing the success marker.

Mechanism: record in the sandbox, judge outside it
--------------------------------------------------
The tests of every job run twice, in two different processes:

1. Record (phase A, the sandbox). A sandboxed process runs the program, then the tests, but every
   object the tests get from the program is a stand-in (``_Handle``). Calling it, or reading an
   attribute, calls the real object and appends one event to the trace: the arguments and the
   result, both turned into plain data (``None``/bool/int/float/str/bytes/complex/range and
   lists, tuples, dicts, sets of those). Subclasses of builtins are reduced to the builtin value
   they hold (an overridden ``__eq__`` is dropped); anything else becomes an opaque handle that
   supports only calls and attribute reads. The test code receives the *plain copy*, never the
   program's object, so the tests in phase A see what phase B will see. Asserts are rewritten
   (``ast``) to evaluate only the parts that feed the program, so literal expected values (the
   ``4`` in ``assert f(2) == 4``, the ``3.5`` in ``abs(f(x) - 3.5) < 1e-6``) are never in the
   sandbox's memory for the program to read.
2. Judge (phase B, outside). A fork of the trusted worker, which never loads the program, runs the
   *original* tests. The stand-ins now answer from the trace: a call is matched to the next
   recorded call with the same arguments (computed here, by the trusted test) and returns the
   recorded result, rebuilt from plain data; an exception is re-raised as the builtin type of
   that name (never ``StopIteration``, which would silently end a ``map`` in the test). A call
   with no matching record fails the test. Comparisons, ``math.isclose``, loops over random
   inputs: all of it runs in the judge on plain builtins. Both phases give the tests their own
   seeded ``random`` module and the same hash seed, so they draw the same inputs whatever the
   program does with ``random``; HumanEval helpers the prompt defines (``poly``) come from the
   prompt, not from the program, which cannot redefine them for the tests.

So the trace is untrusted data, and the verdict is what the dataset's tests conclude when the
program's answers are the recorded ones. Forging the trace (the program can find the trace pipe
and write to it) buys nothing an honest function could not do: it must still produce the right
values without knowing them. Exiting early leaves calls unrecorded; patching asserts, ``json``,
``unittest`` or builtins changes a process the verdict is not computed in; an always-equal
object is not plain data and becomes a handle that equals only itself; printing markers is
ignored (stdout is only logged). A passing verdict also requires the sandbox to exit 0 within
the time and output limits.

Isolation of phase A (what ``ExecutionResult.isolation`` and ``.network`` report)
------------------------------------------------------------------------------------
Each pool worker probes once which tier the kernel allows, using the real launch path:

- ``user-ns`` tier: ``unshare`` of user, mount, PID, network, IPC and UTS namespaces. The
  candidate is PID 1 of its own PID namespace, so killing it kills every process it started,
  including ``setsid`` daemons (the kernel does it; none can leave the namespace); ``/proc`` is
  remounted so no outside process is visible. The whole filesystem is remounted read-only
  (``mount_setattr`` recursive); the working directory is a fresh, size-capped tmpfs. The
  network namespace has only a down loopback. Capabilities are dropped (bounding set, no new
  privileges). When the worker is root, the candidate runs as ``nobody`` (with only
  ``CAP_DAC_READ_SEARCH``, so it can read an interpreter under ``/root``).
- ``root`` tier (root but no user namespaces): the same namespaces without the user one.
- ``none`` tier: no namespaces. Network via a seccomp filter (``socket`` only for ``AF_UNIX``, no
  ``io_uring``) or, failing that, an audit hook that also refuses ctypes and exec (``network`` =
  ``seccomp`` / ``audit-hook``). Survivors are found by walking the worker's process tree (the
  worker is a child subreaper, so orphaned daemons reparent to it) and killed until none is
  left. Root is dropped to ``nobody``; a non-root worker's candidate runs as the same user and can
  write wherever that user can (``isolation`` says ``same-uid``).

Every tier: a fresh temporary working directory, a new session and process group, rlimits
(CPU, address space, processes, file size, open files, no core), a scrubbed environment
(``PATH``, ``HOME`` and ``TMPDIR`` = the work dir, fixed hash seed), stdout and stderr capped, a
wall-clock timeout.

Residual limits
---------------
- The program can read any file its uid can read (dataset files with answers included).
- Expected values not written as literals in an assert (a table of (input, output) pairs looped
  over, helper results) are present in the sandbox and could be read by a program that goes
  looking; MBPP and HumanEval show some expected values in the prompt anyway.
- A test that inspects an object of a program-defined class beyond calls and attribute reads, a
  generator returned by the program, arguments the program mutates in place, or the fields of a
  namedtuple (it arrives as a tuple), fails (conservatively: a false negative, never a false
  positive). Names in the tests that are builtins always mean the builtins, even if the program
  redefines them.
- The ``none`` tier is best effort: the work dir is on disk (files capped at 16 MiB each, not in
  number), and a same-uid program can write what its user can; see ``isolation`` on each result.
- Needs Linux >= 5.12 for ``mount_setattr`` (else ``root-writable`` in ``isolation``).

Processes and speed
-------------------
``SandboxPool`` runs worker processes (``python -S`` running this file, stdlib only; never a fork
of the caller, which may be a threaded JAX process). Each worker forks a zygote before any job
arrives; per job the zygote forks a launcher (namespaces, mounts), which forks the sandbox: no
interpreter start-up, and no test data in the sandbox's memory but its own job, read from its
stdin. The worker forks the judge from itself. Worker and zygote are non-dumpable, and so is the
launcher wherever no PID namespace hides it, so a same-uid program cannot ptrace them. A
HumanEval-shaped job costs about 12-15 ms of CPU over all these processes (about 140 programs/s
on 2 idle cores) and 15-50 ms of wall time (``benchmarks/rewards.py``).
"""

from __future__ import annotations

import ast
import atexit
import builtins
import ctypes
import dataclasses
import json
import marshal
import math
import os
import platform
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import symtable
import sysconfig
import tempfile
import threading
import time
from _json import encode_basestring_ascii as _encode_str
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 1024
STATUSES = ("passed", "failed", "timeout", "crashed", "memory", "output_limit", "syntax_error", "test_error")

_OUTPUT_LIMIT = 1 << 20  # stdout + stderr bytes before the run is stopped (output_limit)
_TRACE_LIMIT = 32 << 20  # bytes of recorded calls before the run is stopped (output_limit)
_KEPT_OUTPUT = 4000  # characters of stdout / stderr / error kept in a result
_WORKDIR_MB = 64  # size of the tmpfs working directory
_NOBODY = 65534


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
    """The verdict on one program, and why."""

    passed: bool
    status: str  # one of STATUSES
    tests_passed: int  # test units that passed (MBPP: asserts; HumanEval: 1 for check(candidate))
    tests_total: int
    error: str = ""  # first failure, capped
    stdout: str = ""  # the program's output, capped; never used for the verdict
    stderr: str = ""
    duration_s: float = 0.0  # wall time of the sandboxed run plus the judge
    network: str = ""  # how the network was cut: net-ns, seccomp or audit-hook
    isolation: str = ""  # the rest: user-ns / uid-nobody / same-uid, pid-ns / process-tree, ...


@dataclasses.dataclass(frozen=True)
class CodeJob:
    """A program and its test units; build one with `CodeJob.mbpp` or `CodeJob.humaneval`."""

    program: str
    tests: tuple[str, ...]  # each a unit that passes or fails on its own; share one namespace
    setup: str = ""  # trusted code run first in the tests' and the program's namespaces (MBPP test_setup_code)
    timeout_s: float = DEFAULT_TIMEOUT_S  # wall clock for the whole program run
    memory_mb: int = DEFAULT_MEMORY_MB  # address-space limit of the program's process

    def __post_init__(self):
        if not self.tests:
            raise ValueError("a CodeJob needs at least one test; with none, any program would pass.")
        if isinstance(self.tests, str):
            raise ValueError("tests must be a sequence of test sources, not one string.")

    @classmethod
    def mbpp(cls, program: str, tests: Iterable[str], setup: str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
             memory_mb: int = DEFAULT_MEMORY_MB) -> CodeJob:
        """MBPP shape: `tests` are assert statements such as ``assert f(2) == 4``."""
        if isinstance(tests, str):
            raise ValueError(f"tests must be a list of assert statements, got one string {tests[:80]!r}.")
        return cls(program, tuple(tests), setup, timeout_s, memory_mb)

    @classmethod
    def humaneval(cls, problem: Mapping[str, Any], completion: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                  memory_mb: int = DEFAULT_MEMORY_MB) -> CodeJob:
        """HumanEval shape: the program is ``prompt + completion``; the test defines ``check(candidate)``.

        Helper functions the prompt defines besides the entry point (``poly``, ``encode_cyclic``)
        are trusted: the tests use the prompt's own, which the completion cannot redefine.
        """
        missing = [k for k in ("prompt", "test", "entry_point") if k not in problem]
        if missing:
            raise ValueError(f"HumanEval problem lacks {missing}; it needs prompt, test and entry_point.")
        entry = problem["entry_point"]
        unit = f"{problem['test']}\n\ncheck({entry})\n"
        return cls(problem["prompt"] + completion, (unit,), _prompt_helpers(problem["prompt"], entry), timeout_s,
                   memory_mb)


def _prompt_helpers(prompt: str, entry_point: str) -> str:
    """The prompt without the entry point's definition: its imports and helper functions."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return ""
    tree.body = [n for n in tree.body if not (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                                                and n.name == entry_point)]
    return ast.unparse(tree)


def check_mbpp(program: str, tests: Sequence[str], setup: str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
               memory_mb: int = DEFAULT_MEMORY_MB) -> ExecutionResult:
    """Run `program` against MBPP asserts; passed only if every assert holds."""
    return run_jobs([CodeJob.mbpp(program, tests, setup, timeout_s, memory_mb)], max_workers=1)[0]


def check_humaneval(problem: Mapping[str, Any], completion: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                    memory_mb: int = DEFAULT_MEMORY_MB) -> ExecutionResult:
    """Run ``problem['prompt'] + completion`` against ``check(entry_point)``."""
    return run_jobs([CodeJob.humaneval(problem, completion, timeout_s, memory_mb)], max_workers=1)[0]


def run_jobs(jobs: Iterable[CodeJob | tuple[str, Mapping[str, Any], str]], max_workers: int | None = None,
             pool: SandboxPool | None = None) -> list[ExecutionResult]:
    """Results in the order of `jobs`, run on `pool` (default: a shared pool, one worker per CPU).

    A job is a `CodeJob` or ``(kind, example, program)`` with kind ``"mbpp"`` (example has
    ``test_list`` and ``test_setup_code``) or ``"humaneval"`` (example has ``prompt``, ``test``,
    ``entry_point``; `program` is the completion).
    """
    return (pool or _shared_pool()).run([_as_job(j) for j in jobs], max_workers)


def _as_job(job) -> CodeJob:
    if isinstance(job, CodeJob):
        return job
    kind, example, program = job
    if kind == "mbpp":
        return CodeJob.mbpp(program, example["test_list"], example.get("test_setup_code", ""))
    if kind == "humaneval":
        return CodeJob.humaneval(example, program)
    raise ValueError(f"unknown job kind {kind!r}; use 'mbpp' or 'humaneval', or pass a CodeJob.")


class SandboxPool:
    """Worker processes that run jobs; thread-safe; workers start on demand and are reused.

    Args:
      max_workers: most workers at once (default: the CPU count).
      use_namespaces: False forces the no-namespace tier (for tests of the fallback).
    """

    def __init__(self, max_workers: int | None = None, *, use_namespaces: bool = True):
        self.max_workers = max_workers or os.cpu_count() or 1
        self.use_namespaces = use_namespaces
        self._idle: list[_WorkerProcess] = []
        self._started = 0
        self._closed = False
        self._cond = threading.Condition()

    def run(self, jobs: Sequence[CodeJob], max_workers: int | None = None) -> list[ExecutionResult]:
        """Results in the order of `jobs`, at most `max_workers` (default: all) run at once."""
        jobs = list(jobs)
        results: list[ExecutionResult | None] = [None] * len(jobs)
        pending = iter(range(len(jobs)))
        take = threading.Lock()
        errors: list[BaseException] = []

        def drive():
            try:
                worker = self._acquire()
            except BaseException as e:
                errors.append(e)
                return
            try:
                while True:
                    with take:
                        i = next(pending, None)
                    if i is None:
                        return
                    results[i] = worker.run(jobs[i])
            except BaseException as e:
                errors.append(e)
            finally:
                self._release(worker)

        threads = [threading.Thread(target=drive, daemon=True)
                   for _ in range(min(len(jobs), max_workers or self.max_workers, self.max_workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors or None in results:
            raise RuntimeError("the sandbox pool could not run every job") from (errors[0] if errors else None)
        return results  # type: ignore[return-value]

    def _acquire(self) -> _WorkerProcess:
        with self._cond:
            while not self._idle and self._started >= self.max_workers:
                self._cond.wait()
            if self._closed:
                raise RuntimeError("SandboxPool is closed")
            if self._idle:
                return self._idle.pop()
            self._started += 1
        try:
            return _WorkerProcess(self.use_namespaces)
        except BaseException:
            with self._cond:
                self._started -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _WorkerProcess) -> None:
        with self._cond:
            if self._closed:
                worker.close()
            else:
                self._idle.append(worker)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_SHARED: list[SandboxPool] = []
_SHARED_LOCK = threading.Lock()


def _shared_pool() -> SandboxPool:
    with _SHARED_LOCK:
        if not _SHARED:
            _SHARED.append(SandboxPool())
            atexit.register(_SHARED[0].close)
        return _SHARED[0]


# Runs code.py itself as a stdlib-only worker. -S skips site (fast, no .pth side effects); not -E
# or -I, because the worker needs PYTHONHASHSEED from its environment (built from scratch here).
_WORKER_BOOT = ("import sys;del sys.path[0];p=sys.argv[1];m=type(sys)('_score_sandbox_worker');m.__file__=p;"
                "sys.modules[m.__name__]=m;exec(compile(open(p).read(),p,'exec'),m.__dict__);m._worker_main(sys.argv[2])")


class _WorkerProcess:
    """The main process's end of one worker: length-prefixed JSON both ways."""

    def __init__(self, use_namespaces: bool):
        self._use_namespaces = use_namespaces
        self._start()

    def _start(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": tempfile.gettempdir(),
               "PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8"}
        paths = sysconfig.get_paths()  # this interpreter's (a venv's) packages, for the programs
        site = list(dict.fromkeys(p for p in (paths.get("purelib"), paths.get("platlib")) if p))
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-B", "-c", _WORKER_BOOT, os.path.abspath(__file__),
             json.dumps({"use_namespaces": self._use_namespaces, "site": site})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/", close_fds=True)
        if _read_frame(self._proc.stdout) is None:  # the worker's hello: its tier is probed
            raise RuntimeError(f"sandbox worker failed to start (exit {self._proc.wait()}); see its stderr above")

    def run(self, job: CodeJob) -> ExecutionResult:
        try:
            _write_frame(self._proc.stdin, dataclasses.asdict(job))
            reply = _read_frame(self._proc.stdout)
        except (BrokenPipeError, OSError):
            reply = None
        if reply is None:
            code = self._proc.poll()
            self.close()
            self._start()
            return ExecutionResult(False, "crashed", 0, len(job.tests), f"sandbox worker died (exit {code})")
        return ExecutionResult(**reply)

    def close(self) -> None:
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _write_frame(stream, obj) -> None:
    data = json.dumps(obj).encode()
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _read_frame(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    data = stream.read(struct.unpack("<Q", head)[0])
    return json.loads(data)


# ------------------------------------------------------------------------------------------------
# Values across the boundary: shared by the sandbox (phase A) and the judge (phase B).

_MAX_DEPTH = 100  # nesting of one value
_MAX_NODES = 1_000_000  # items in one value
_MAX_MESSAGE = 300  # characters of a recorded exception message
_SMALL_INT = 1 << 63  # larger ints travel as hex (no 4300-digit str limit)


class _Unserialisable(Exception):
    """A value with no plain-data form: too large, too deep or cyclic."""


class _TraceViolation(BaseException):
    """The judge found no recorded answer for a call; BaseException so test code can't catch it."""


class ProgramError(Exception):
    """Re-raised in tests for a program exception whose type is not a builtin exception."""


class _Handle:
    """What test code holds for a program object with no plain-data form: calls and attributes only."""

    __slots__ = ("_hid", "_trace")

    def __init__(self, hid, trace):
        self._hid = hid
        self._trace = trace

    def __call__(self, *args, **kwargs):
        return self._trace.call(self._hid, args, kwargs)

    def __getattr__(self, name):
        if name in ("_hid", "_trace"):
            raise AttributeError(name)
        return self._trace.getattr(self._hid, name)

    def __bool__(self):
        raise TypeError("the truth value of an opaque program object is not trusted; return plain data")

    def __repr__(self):
        return f"<program object #{self._hid}>"


class _Trace:
    """What both phases share: values to plain data (canon) and back (materialise)."""

    def __init__(self):
        self.handles = {}  # hid -> _Handle, so one program object is one stand-in
        self.test_objects = []  # k -> object from the test side with no plain form (a lambda)
        self._test_ids = {}

    def canon(self, value, role):
        """`value` as JSON-able plain data; role "arg" (test to program) or "result" (back)."""
        return self._canon(value, role, 0, [_MAX_NODES])

    def _canon(self, x, role, depth, budget):
        budget[0] -= 1
        if budget[0] < 0 or depth > _MAX_DEPTH:
            raise _Unserialisable("value too large or too deeply nested to compare")
        t = type(x)
        if x is None or t is bool or t is str or t is float:
            return x
        if t is int:
            return x if -_SMALL_INT < x < _SMALL_INT else ["I", format(x, "x")]
        tag = _TAGS.get(t)
        if tag is not None:
            d = depth + 1
            if t is dict:
                out = ["d"]
                for k, v in x.items():
                    out.append(self._canon(k, role, d, budget))
                    out.append(self._canon(v, role, d, budget))
                return out
            return [tag] + [self._canon(v, role, d, budget) for v in x]
        if t is bytes or t is bytearray:
            return ["b" if t is bytes else "y", x.decode("latin-1")]
        if t is complex:
            return ["c", x.real, x.imag]
        if t is range:
            return ["r", x.start, x.stop, x.step]
        for base, plain in _PLAIN_OF_SUBCLASS:
            if issubclass(t, base):  # the builtin value it holds; its own __eq__ is dropped
                return self._canon(plain(x), role, depth, budget)
        if t.__module__ == "numpy" and hasattr(t, "tolist"):
            return self._canon(x.tolist(), role, depth, budget)
        return self._opaque(x, role)

    def _opaque(self, x, role):
        if type(x) is _Handle:
            return ["h", x._hid]
        k = self._test_ids.get(id(x))
        if k is None:
            if role == "result":
                return self.new_program_object(x)
            k = self._test_ids[id(x)] = len(self.test_objects)
            self.test_objects.append(x)
        return ["o", k]

    def new_program_object(self, x):
        raise _TraceViolation("only the sandbox records program objects")

    def handle(self, hid):
        if hid not in self.handles:
            self.handles[hid] = _Handle(hid, self)
        return self.handles[hid]

    def materialise(self, c, for_program=False):
        """Plain data back to fresh builtins; handles to stand-ins (or, for the program, the real object)."""
        t = type(c)
        if c is None or t is bool or t is int or t is float or t is str:
            return c
        if t is not list or not c:
            raise ValueError(f"malformed value {c!r:.80}")
        tag, items = c[0], c[1:]
        if tag in _BUILD:
            return _BUILD[tag](self.materialise(v, for_program) for v in items)
        if tag == "d":
            if len(items) % 2:
                raise ValueError("malformed dict")
            values = [self.materialise(v, for_program) for v in items]
            return dict(zip(values[::2], values[1::2]))
        (arg,) = items[:1] if len(items) == 1 else (None,)
        if tag == "I" and type(arg) is str and len(arg) < 1 << 20:
            return int(arg, 16)
        if tag == "b" and type(arg) is str:
            return arg.encode("latin-1")
        if tag == "y" and type(arg) is str:
            return bytearray(arg.encode("latin-1"))
        if tag == "h" and type(arg) is int:
            return self.program_object(arg) if for_program else self.handle(arg)
        if tag == "o" and type(arg) is int and 0 <= arg < len(self.test_objects):
            return self.test_objects[arg]
        if tag == "c" and len(items) == 2 and all(type(v) is float for v in items):
            return complex(items[0], items[1])
        if tag == "r" and len(items) == 3 and all(type(v) is int for v in items):
            return range(*items)
        raise ValueError(f"malformed value {c!r:.80}")

    def program_object(self, hid):
        raise _TraceViolation("the judge never holds program objects")

    def deliver(self, result):
        """A recorded result to the test: the value rebuilt, or the exception raised."""
        if type(result) is list and len(result) == 2 and result[0] == "v":
            return self.materialise(result[1])
        if type(result) is list and len(result) == 3 and result[0] == "x":
            raise _program_exception(result[1], result[2])
        raise ValueError(f"malformed result {result!r:.80}")


_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "f", dict: "d"}
_BUILD = {"l": list, "t": tuple, "s": set, "f": frozenset}
# Base-class methods, so a subclass's overrides (of __iter__, __str__, ...) are not consulted.
_PLAIN_OF_SUBCLASS = (
    (int, int.__int__), (float, float.__float__), (str, str.__str__),
    (bytes, bytes.__bytes__), (complex, complex.__complex__),
    (list, lambda x: list(list.__iter__(x))), (tuple, lambda x: tuple(tuple.__iter__(x))),
    (dict, lambda x: dict(dict.items(x))), (frozenset, lambda x: frozenset(frozenset.__iter__(x))),
    (set, lambda x: set(set.__iter__(x))),
)


def _program_exception(name, message):
    """The exception a test sees for a recorded one: the builtin type of that name, except
    StopIteration (which would silently end a `map` or a generator in the test), else ProgramError."""
    cls = getattr(builtins, name, None) if type(name) is str else None
    if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, (StopIteration,
                                                                                   StopAsyncIteration)):
        try:
            return cls(message)
        except Exception:
            pass
    return ProgramError(f"{name}: {message}")


def _dump(x):
    """Canonical JSON text of plain data; both phases key calls by it."""
    t = type(x)
    if t is str:
        return _encode_str(x)
    if t is list:
        return "[" + ",".join([_dump(v) for v in x]) + "]"
    if t is int:
        return int.__repr__(x)
    if t is float:
        if x != x:
            return "NaN"
        if x in (float("inf"), float("-inf")):
            return "Infinity" if x > 0 else "-Infinity"
        return float.__repr__(x)
    if x is None:
        return "null"
    if t is bool:
        return "true" if x else "false"
    raise _Unserialisable(f"not plain data: {t.__name__}")


def _describe(e):
    """(type name, message) of an exception, defensively: both may run program code."""
    try:
        name = type(e).__name__
        name = name if type(name) is str else "Exception"
    except BaseException:
        name = "Exception"
    try:
        message = str(e)
        message = message[:_MAX_MESSAGE] if type(message) is str else ""
    except BaseException:
        message = ""
    return name, message


def _test_builtins():
    """Builtins for test code, with an `import random` of its own (seeded), so the program's use
    of random cannot shift the test's draws between the two phases."""
    table = dict(builtins.__dict__)
    real_import = builtins.__import__
    private = []

    def test_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "random" and level == 0:
            if not private:
                import random
                rng = random.Random(0)
                module = type(random)("random")
                for key, value in vars(random).items():
                    bound_to_default = getattr(value, "__self__", None) is random._inst
                    module.__dict__[key] = getattr(rng, key) if bound_to_default else value
                private.append(module)
            return private[0]
        return real_import(name, globals, locals, fromlist, level)

    table["__import__"] = test_import
    return table




class _Recorder(_Trace):
    """Phase A: runs the program for real and records every crossing."""

    def __init__(self, emit, program_globals):
        super().__init__()
        self._emit = emit
        self._program = program_globals
        self._objects = []
        self._object_ids = {}

    def new_program_object(self, x):
        hid = self._object_ids.get(id(x))
        if hid is None:
            hid = self._object_ids[id(x)] = len(self._objects)
            self._objects.append(x)
        return ["h", hid]

    def program_object(self, hid):
        return self._objects[hid]

    def bind_global(self, namespace, name):
        if name not in self._program:
            result = ["n"]
        elif name in sys.stdlib_module_names:
            # Tests may use a module the program imported (MBPP's `math.isclose`). Both phases
            # import the real module of that name, whatever the program bound to it.
            result = ["m"]
            namespace[name] = __import__(name)
        else:
            value = self._program[name]
            result = self._run(lambda: value)
            if result[0] == "v":
                namespace[name] = self.deliver(result)
        self._emit(["g", name, result])

    def call(self, hid, args, kwargs):
        a, k = self.canon(args, "arg"), self.canon(kwargs, "arg")
        result = self._run(lambda: self._objects[hid](*self.materialise(a, True), **self.materialise(k, True)))
        self._emit(["c", hid, a, k, result])
        return self.deliver(result)

    def getattr(self, hid, name):
        result = self._run(lambda: getattr(self._objects[hid], name))
        self._emit(["a", hid, name, result])
        return self.deliver(result)

    def _run(self, compute):
        try:
            value = compute()
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: they are answers
            return ["x", *_describe(e)]
        try:
            return ["v", self.canon(value, "result")]
        except BaseException as e:
            return ["x", "TypeError", "result has no plain-data form: " + _describe(e)[1]]


def _deny_network(event, args):
    """Audit hook of the last-resort tier: no inet sockets, DNS, ctypes or exec."""
    if event == "socket.__new__" and len(args) > 1 and args[1] == 1:  # AF_UNIX
        return
    if event.startswith(("socket.", "ctypes.", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                         "subprocess.")):
        raise PermissionError(f"{event} is not allowed in the sandbox")


def _sandbox_main(job):
    """Phase A, in the sandboxed interpreter: program, then stripped tests; events to fd 3."""
    program, setup, names, units, site_paths, audit_hook = job
    sys.path.extend(site_paths)

    def emit(event):
        data = (_dump(event) + "\n").encode()
        while data:
            data = data[os.write(3, data):]

    if audit_hook:
        sys.addaudithook(_deny_network)
    tests = {"__builtins__": _test_builtins(), "__name__": "__test__"}
    try:
        code = compile(program, "<program>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as e:
        emit(["S", "%s: %s" % _describe(e)])
        os._exit(0)
    exec(setup, tests)
    module = type(sys)("__candidate__")  # not __main__: `if __name__ == "__main__"` blocks don't run
    module.__dict__["__builtins__"] = builtins
    sys.modules[module.__name__] = module
    recorder = _Recorder(emit, module.__dict__)
    try:
        exec(setup, module.__dict__)  # MBPP programs may rely on the setup's imports
        exec(code, module.__dict__)
    except BaseException as e:
        emit(["P", *_describe(e)])
    else:
        for name in names:
            recorder.bind_global(tests, name)
        for i, unit in enumerate(units):
            emit(["U", i])
            try:
                exec(unit, tests)
            except BaseException as e:
                emit(["E", i, *_describe(e)])
        emit(["D"])
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(0)


class _Replayer(_Trace):
    """Phase B: answers the tests' calls from the recorded trace."""

    def __init__(self, trace: _ParsedTrace):
        super().__init__()
        self._trace = trace
        self._queue: list[tuple[str, Any]] = []
        self._pos = 0
        self.violation = ""

    def begin(self, unit: int) -> None:
        self._queue, self._pos, self.violation = self._trace.units.get(unit, []), 0, ""

    def bind_global(self, namespace: dict, name: str) -> None:
        result = self._trace.globals.get(name)
        if result is None or result == ["n"]:
            return
        if result == ["m"]:
            if name in sys.stdlib_module_names:
                namespace[name] = __import__(name)
            return
        try:
            namespace[name] = self.deliver(result)
        except Exception:
            pass  # a malformed binding leaves the name unbound: the test fails with NameError

    def call(self, hid, args, kwargs):
        return self._answer(["c", hid, self.canon(args, "arg"), self.canon(kwargs, "arg")])

    def getattr(self, hid, name):
        return self._answer(["a", hid, name])

    def _answer(self, event: list):
        key = _dump(event)
        for j in range(self._pos, len(self._queue)):
            if self._queue[j][0] == key:
                self._pos = j + 1
                try:
                    return self.deliver(self._queue[j][1])
                except ValueError as e:
                    self.violation = f"malformed recorded result: {e}"
                    raise _TraceViolation(self.violation) from None
        self.violation = f"the program's run has no recorded answer for {key[:200]}"
        raise _TraceViolation(self.violation)


@dataclasses.dataclass
class _ParsedTrace:
    syntax_error: str | None = None
    program_error: str | None = None
    globals: dict = dataclasses.field(default_factory=dict)
    units: dict = dataclasses.field(default_factory=dict)  # unit -> [(call key, result)]
    unit_errors: dict = dataclasses.field(default_factory=dict)
    done: bool = False
    memory_error: bool = False


def _parse_trace(raw: bytes) -> _ParsedTrace:
    """Events from the sandbox: untrusted, so malformed lines are dropped, never trusted."""
    trace = _ParsedTrace()
    unit = None
    for number, line in enumerate(raw.split(b"\n")):
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if type(event) is not list or not event or type(event[0]) is not str:
            continue
        kind, rest = event[0], event[1:]
        if kind == "S" and number == 0 and rest and type(rest[0]) is str:
            trace.syntax_error = rest[0]  # the first line is written before the program runs
        elif kind == "P" and len(rest) == 2:
            trace.program_error = f"{rest[0]}: {rest[1]}"
            trace.memory_error |= rest[0] == "MemoryError"
        elif kind == "g" and len(rest) == 2 and type(rest[0]) is str:
            trace.globals.setdefault(rest[0], rest[1])
        elif kind == "U" and len(rest) == 1 and type(rest[0]) is int:
            unit = rest[0]
        elif kind in ("c", "a") and unit is not None:
            try:
                key = _dump(event[:-1])
            except (_Unserialisable, RecursionError):
                continue
            trace.units.setdefault(unit, []).append((key, event[-1]))
            result = event[-1]
            trace.memory_error |= type(result) is list and result[:2] == ["x", "MemoryError"]
        elif kind == "E" and len(rest) == 3:
            trace.unit_errors.setdefault(rest[0], f"{rest[1]}: {rest[2]}")
            trace.memory_error |= rest[1] == "MemoryError"
        elif kind == "D":
            trace.done = True
    return trace


# ------------------------------------------------------------------------------------------------
# Test preparation (worker side): full tests for the judge, stripped ones for the sandbox.

# Calls whose arguments phase A must evaluate but whose own result only the judge needs. None of
# them iterates its argument: one that did (all, sorted, ...) could be what drives a lazy `map`
# or generator calling the program, so those are evaluated whole.
_PURE_BUILTINS = frozenset({"abs", "bool", "float", "int", "isinstance", "len", "repr", "round", "str", "type"})
_PURE_MATH = frozenset({"isclose", "fabs", "floor", "ceil", "sqrt"})


def _is_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k) for k in node.keys) and all(map(_is_literal, node.values))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _is_literal(node.operand)
    return False


def _evaluated_parts(node: ast.expr) -> list[ast.expr]:
    """The parts of an assert condition phase A evaluates, in evaluation order: all but literals
    and the comparisons, arithmetic and pure builtins wrapped around the program's calls."""
    if _is_literal(node) or isinstance(node, ast.Name):
        return []
    if isinstance(node, ast.Compare):
        parts = [node.left, *node.comparators]
    elif isinstance(node, ast.BoolOp):
        parts = node.values
    elif isinstance(node, ast.UnaryOp):
        parts = [node.operand]
    elif isinstance(node, ast.BinOp):
        parts = [node.left, node.right]
    elif (isinstance(node, ast.Call) and not any(isinstance(a, ast.Starred) for a in node.args)
          and all(k.arg is not None for k in node.keywords)
          and ((isinstance(node.func, ast.Name) and node.func.id in _PURE_BUILTINS)
               or (isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                   and node.func.value.id == "math" and node.func.attr in _PURE_MATH))):
        parts = [*node.args, *(k.value for k in node.keywords)]
    else:
        return [node]
    return [p for part in parts for p in _evaluated_parts(part)]


class _HideExpected(ast.NodeTransformer):
    """Phase A's asserts: evaluate what feeds the program, drop the expected side and message."""

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        parts = _evaluated_parts(node.test)
        replacement = ast.Expr(ast.Tuple(parts, ast.Load())) if parts else ast.Pass()
        return ast.copy_location(replacement, node)


def _top_level_bindings(table: symtable.SymbolTable) -> set[str]:
    return {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}


def _program_names(units: Sequence[str], setup: str) -> tuple[str, ...]:
    """Global names the tests read that neither they, the setup nor builtins define: the program's."""
    defined = _top_level_bindings(symtable.symtable(setup, "<setup>", "exec")) | set(dir(builtins))
    wanted: set[str] = set()
    for source in units:
        top = symtable.symtable(source, "<test>", "exec")
        defined |= _top_level_bindings(top)
        stack = [top]
        while stack:
            table = stack.pop()
            stack.extend(table.get_children())
            wanted |= {s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global()}
    return tuple(sorted(wanted - defined))


@dataclasses.dataclass(frozen=True)
class _PreparedTests:
    setup: Any  # code object
    full: tuple  # code objects the judge runs
    stripped: tuple  # code objects the sandbox runs
    names: tuple[str, ...]
    sources: tuple[str, ...]


def _prepare_tests(units: Sequence[str], setup: str) -> _PreparedTests:
    full, stripped = [], []
    for i, source in enumerate(units):
        tree = ast.parse(source)
        full.append(compile(tree, f"<test {i}>", "exec", dont_inherit=True))
        hidden = ast.fix_missing_locations(_HideExpected().visit(ast.parse(source)))
        stripped.append(compile(hidden, "<test>", "exec", dont_inherit=True))
    return _PreparedTests(compile(setup, "<setup>", "exec", dont_inherit=True), tuple(full), tuple(stripped),
                          _program_names(units, setup), tuple(units))


# ------------------------------------------------------------------------------------------------
# Worker process: launches sandboxes, judges traces.

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x20000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 1, 2, 4, 8, 0x4000, 1 << 18
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _AT_RECURSIVE, _SYS_MOUNT_SETATTR = 1, 2, 0x8000, 442
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_KEEPCAPS, _PR_SET_SECCOMP = 1, 4, 8, 22
_PR_CAPBSET_DROP, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT = 24, 36, 38, 47
_CAP_DAC_READ_SEARCH = 2
_SETUP_FAILED = 125  # exit code of the launcher when isolation could not be set up

# seccomp: (AUDIT_ARCH, socket syscall number) for the none tier's network filter.
_SECCOMP_ARCH = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}

def _c_call(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _close_all_except(*keep: int) -> None:
    low = 0
    for fd in sorted(keep):
        if low < fd:  # closerange(n, n) would become close_range(n, UINT_MAX): everything
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def _reap_children(block: bool = False) -> None:
    while True:
        try:
            if os.waitpid(-1, 0 if block else os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def _prctl(option: int, arg: int = 0, arg3: int = 0) -> None:
    _c_call(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0)),
            f"prctl({option})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s):
        return None if s is None else s.encode()
    _c_call(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _read_only_root() -> None:
    """Every mount read-only (and nosuid), recursively, in this mount namespace."""
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID, 0, 0, 0), 32)
    _c_call(_libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(-100), b"/", ctypes.c_uint(_AT_RECURSIVE),
                          attr, ctypes.c_size_t(32)), "mount_setattr /")


def _set_capabilities(caps: int) -> None:
    """Effective, permitted and inheritable sets all = `caps` (a bit mask of capabilities 0-31)."""
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = struct.pack("IIIIII", caps, caps, caps, 0, 0, 0)
    _c_call(_libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(data)), "capset")


def _drop_bounding_set(keep: int) -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if not keep >> cap & 1:
            _prctl(_PR_CAPBSET_DROP, cap)


def _seccomp_no_inet() -> None:
    """socket() only for AF_UNIX; no io_uring (it can open sockets); other ABIs killed."""
    arch, socket_nr = _SECCOMP_ARCH[platform.machine()]
    deny, allow, kill = 0x00050000 | 13, 0x7FFF0000, 0x80000000  # ERRNO(EACCES), ALLOW, KILL_PROCESS
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    program = [  # (code, jump if true, jump if false, k); jumps count from the next instruction
        (ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, kill),  # 0-2: foreign ABI (i386 on x86_64): kill
        (ld, 0, 0, 0), (jge, 6, 0, 0x40000000),  # 3-4: x32 syscall numbers: deny
        (jeq, 0, 2, socket_nr), (ld, 0, 0, 16), (jeq, 4, 3, 1),  # 5-7: socket(AF_UNIX) only
        (jeq, 2, 0, 425), (jeq, 1, 0, 426),  # 8-9: io_uring_setup, io_uring_enter: deny
        (ret, 0, 0, allow), (ret, 0, 0, deny), (ret, 0, 0, allow)]  # 10-12
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HxxxxxxQ", len(program), ctypes.addressof(buf))
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    _c_call(_libc.prctl(_PR_SET_SECCOMP, ctypes.c_ulong(2), ctypes.c_char_p(fprog), ctypes.c_ulong(0),
                        ctypes.c_ulong(0)), "seccomp")


@dataclasses.dataclass(frozen=True)
class _Tier:
    namespaces: int  # clone flags to unshare (0: none)
    seccomp: bool  # network by seccomp (none tier)
    audit_hook: bool  # network by audit hook (none tier, no seccomp)

    @property
    def userns(self) -> bool:
        return bool(self.namespaces & _CLONE_NEWUSER)


@dataclasses.dataclass
class _Run:
    exit_code: int | None = None  # the sandbox's exit status, if it exited
    killed_by: int | None = None  # the signal that ended it, if one did
    timed_out: bool = False
    output_exceeded: bool = False
    setup_error: str = ""
    warnings: tuple[str, ...] = ()
    stdout: bytes = b""
    stderr: bytes = b""
    trace: bytes = b""


class _Worker:
    """One worker process: a zygote that launches sandboxes, and the judge of their traces.

    The zygote is forked before any job arrives, so the sandboxes it forks in turn hold no test
    data (no expected values) in memory: only the job sent to each one over its stdin.
    """

    def __init__(self, use_namespaces: bool, site: Sequence[str]):
        self._root = os.geteuid() == 0
        self._site = tuple(site)
        self._cache: dict[tuple, _PreparedTests] = {}
        self._zygote_socket, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._zygote = os.fork()
        if self._zygote == 0:
            self._serve_zygote(zygote_end)
        zygote_end.close()
        self.tier = self._probe(use_namespaces)

    def close(self) -> None:
        """Stop the zygote and wait for it (so its CPU time is accounted to us)."""
        self._zygote_socket.close()
        try:
            os.waitpid(self._zygote, 0)
        except ChildProcessError:  # already reaped
            pass

    def _probe(self, use_namespaces: bool) -> _Tier:
        """The strongest tier under which a trivial job passes, tried through the real launch path."""
        everything = _CLONE_NEWNS | _CLONE_NEWUTS | _CLONE_NEWIPC | _CLONE_NEWPID | _CLONE_NEWNET
        tiers = []
        if use_namespaces:
            tiers.append(_Tier(everything | _CLONE_NEWUSER, False, False))
            if self._root:
                tiers.append(_Tier(everything, False, False))
        tiers += [_Tier(0, platform.machine() in _SECCOMP_ARCH, False), _Tier(0, False, True)]
        probe = CodeJob.mbpp("def f(x):\n    return x + 1\n", ["assert f(1) == 2"], timeout_s=10.0)
        failures = []
        for tier in tiers:
            self.tier = tier
            result = self.run(probe)
            if result["passed"]:
                return tier
            failures.append(f"{tier}: {result['status']} {result['error']}")
        raise RuntimeError("no sandbox tier works here: " + "; ".join(failures))

    def run(self, job: CodeJob | dict) -> dict:
        """Phase A in a sandbox, phase B in the judge; the verdict as ExecutionResult fields."""
        job = job if isinstance(job, CodeJob) else CodeJob(**{**job, "tests": tuple(job["tests"])})
        start = time.monotonic()
        total = len(job.tests)

        def result(status: str, passed_units: int = 0, error: str = "", run: _Run | None = None) -> dict:
            run = run or _Run()
            return dataclasses.asdict(ExecutionResult(
                status == "passed", status, passed_units, total, error[:_KEPT_OUTPUT],
                run.stdout[:_KEPT_OUTPUT].decode("utf-8", "replace"),
                run.stderr[:_KEPT_OUTPUT].decode("utf-8", "replace"),
                round(time.monotonic() - start, 4), *self._describe_isolation(run)))

        try:
            tests = self._prepared(job)
        except (SyntaxError, ValueError) as e:
            return result("test_error", error=f"the tests themselves do not compile: {e}")
        job_data = (job.program, tests.setup, tests.names, tests.stripped, self._site, self.tier.audit_hook)
        run = self._launch(marshal.dumps(job_data), job.timeout_s, job.memory_mb)
        trace = _parse_trace(run.trace)
        if run.setup_error:
            return result("crashed", error=f"sandbox setup failed: {run.setup_error}", run=run)
        if trace.syntax_error is not None:
            return result("syntax_error", error=trace.syntax_error, run=run)
        if run.timed_out:
            return result("timeout", error=f"timed out after {job.timeout_s} s", run=run)
        if run.output_exceeded:
            return result("output_limit", error="output exceeded the limit", run=run)
        verdicts = self._judge(tests, trace, max(2.0, job.timeout_s), job.memory_mb)
        passed_units = sum(ok for ok, _ in verdicts)
        failures = [f"test {i}: {message}" for i, (ok, message) in enumerate(verdicts) if not ok]
        if trace.program_error:
            failures.insert(0, f"the program raised {trace.program_error}")
        if run.killed_by is not None:
            failures.insert(0, f"the program was killed by signal {run.killed_by}")
        elif run.exit_code:
            failures.insert(0, f"the program exited with {run.exit_code}")
        if not failures and passed_units == total:
            return result("passed", passed_units, run=run)
        error = "; ".join(failures)
        if trace.memory_error or b"MemoryError" in run.stderr:
            return result("memory", passed_units, error, run)
        if run.killed_by in (signal.SIGXCPU, signal.SIGKILL):  # the CPU-time rlimit
            return result("timeout", passed_units, f"CPU time limit: {error}", run)
        if run.killed_by is not None or run.exit_code or not trace.done and not trace.program_error:
            return result("crashed", passed_units, error or "the run ended before the tests finished", run)
        return result("failed", passed_units, error, run)

    def _prepared(self, job: CodeJob) -> _PreparedTests:
        key = (job.tests, job.setup)
        if key not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = _prepare_tests(job.tests, job.setup)
        return self._cache[key]

    def _describe_isolation(self, run: _Run) -> tuple[str, str]:
        tier = self.tier
        network = "net-ns" if tier.namespaces & _CLONE_NEWNET else "seccomp" if tier.seccomp else "audit-hook"
        parts = ["user-ns" if tier.userns else "uid-nobody" if self._root else "same-uid",
                 "pid-ns" if tier.namespaces & _CLONE_NEWPID else "process-tree",
                 "ro-root+tmpfs-workdir" if tier.namespaces & _CLONE_NEWNS else "tmp-workdir", *run.warnings]
        return network, "+".join(parts)

    # -- phase A: the worker's side -------------------------------------------------------------

    def _launch(self, payload: bytes, timeout_s: float, memory_mb: int) -> _Run:
        """Ask the zygote for a sandbox, feed it `payload`, supervise it; clean up everything."""
        workdir = tempfile.mkdtemp(prefix="score-sandbox-")
        if self._root and not self.tier.userns:
            os.chown(workdir, _NOBODY, _NOBODY)
        job_r, job_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        trace_r, trace_w = os.pipe()
        status_r, status_w = os.pipe()  # launcher -> worker; EOF once the launcher exited
        sync_r, sync_w = os.pipe()  # launcher -> worker: "namespaces made, write my id maps"
        go_r, go_w = os.pipe()
        keep_r, keep_w = os.pipe()  # worker -> launcher; closing it means "kill the sandbox now"
        params = {"workdir": workdir, "timeout_s": timeout_s, "memory_mb": memory_mb,
                  "namespaces": self.tier.namespaces, "seccomp": self.tier.seccomp}
        start = time.monotonic()
        theirs = (job_r, out_w, err_w, trace_w, status_w, sync_w, go_r, keep_r)
        try:
            socket.send_fds(self._zygote_socket, [json.dumps(params).encode()], theirs)
        finally:
            for fd in theirs:
                os.close(fd)
        try:
            if self.tier.userns:
                self._map_ids(sync_r, go_w)
            return self._supervise(job_w, payload, out_r, err_r, trace_r, status_r, keep_w, start + timeout_s)
        finally:
            for fd in (sync_r, go_w, out_r, err_r, trace_r, status_r):
                os.close(fd)
            shutil.rmtree(workdir, ignore_errors=True)

    def _map_ids(self, sync_r: int, go_w: int) -> None:
        """Write the launcher's user-namespace id maps (it has unshared and waits on `go`)."""
        line = os.read(sync_r, 64).decode()
        if not line.strip().isdigit():
            return  # the launcher failed before unsharing; it reports on the status pipe
        launcher = int(line)
        if self._root:  # ns uid 0 = root (so DAC_READ_SEARCH covers root's files), ns uid 1 = nobody
            maps = (f"0 0 1\n1 {_NOBODY} 1\n", f"0 0 1\n1 {_NOBODY} 1\n")
        else:
            with open(f"/proc/{launcher}/setgroups", "w") as f:
                f.write("deny")
            maps = (f"0 {os.geteuid()} 1\n", f"0 {os.getegid()} 1\n")
        for name, text in zip(("uid_map", "gid_map"), maps):
            with open(f"/proc/{launcher}/{name}", "w") as f:
                f.write(text)
        os.write(go_w, b"g")

    def _supervise(self, job_w, payload, out_r, err_r, trace_r, status_r, keep_w, deadline) -> _Run:
        """Feed the job, collect output within the caps, stop at exit, timeout or overflow."""
        run = _Run()
        buffers = {out_r: bytearray(), err_r: bytearray(), trace_r: bytearray(), status_r: bytearray()}
        counts = dict.fromkeys(buffers, 0)
        open_fds = set(buffers)
        os.set_blocking(job_w, False)
        while status_r in open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                run.timed_out = True
                break
            readable, writable, _ = select.select(list(open_fds), [job_w] if payload else [], [], remaining)
            if writable:
                try:
                    payload = payload[os.write(job_w, payload):]
                except BrokenPipeError:
                    payload = b""
                if not payload:
                    os.close(job_w)
            self._read_available(readable, buffers, counts, open_fds, trace_r)
            if counts[out_r] + counts[err_r] > _OUTPUT_LIMIT or counts[trace_r] > _TRACE_LIMIT:
                run.output_exceeded = True
                break
        if payload:
            os.close(job_w)
        os.close(keep_w)  # the launcher kills the sandbox (if still running), reaps it, and exits
        stop = time.monotonic() + 5.0
        while status_r in open_fds and time.monotonic() < stop:
            readable = select.select([status_r], [], [], stop - time.monotonic())[0]
            self._read_available(readable, buffers, counts, open_fds, trace_r)
        status = bytes(buffers[status_r]).decode(errors="replace").splitlines()
        if status_r in open_fds:  # a stuck launcher; it still holds the pipe, so the pid is still its
            for line in status:
                if line.startswith("L") and line[1:].isdigit():
                    os.kill(int(line[1:]), signal.SIGKILL)
        for line in status:
            if line.startswith("X") and line[1:].isdigit():
                run.exit_code = int(line[1:])
            elif line.startswith("K") and line[1:].isdigit():
                run.killed_by = int(line[1:])
            elif line.startswith("E"):
                run.setup_error = line[1:]
            elif line.startswith("W"):
                run.warnings += (line[1:],)
        if not self.tier.namespaces & _CLONE_NEWPID:
            self._kill_descendants()
        open_fds.discard(status_r)
        stop = time.monotonic() + 1.0
        while open_fds and time.monotonic() < stop:  # what the dead sandbox left in the pipes
            readable = select.select(list(open_fds), [], [], stop - time.monotonic())[0]
            self._read_available(readable, buffers, counts, open_fds, trace_r)
        if run.exit_code is None and run.killed_by is None and not run.setup_error:
            run.setup_error = "the launcher died"
        run.stdout, run.stderr, run.trace = bytes(buffers[out_r]), bytes(buffers[err_r]), bytes(buffers[trace_r])
        return run

    @staticmethod
    def _read_available(readable, buffers, counts, open_fds, trace_r) -> None:
        for fd in readable:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                open_fds.discard(fd)
                continue
            counts[fd] += len(chunk)
            if len(buffers[fd]) < (_TRACE_LIMIT if fd == trace_r else _KEPT_OUTPUT):
                buffers[fd] += chunk

    def _kill_descendants(self) -> None:
        """No PID namespace: kill every process below this worker (but the zygote) until none is
        left. Orphans reparent to the worker (a child subreaper), so a daemon cannot leave the tree."""
        me = os.getpid()
        for _ in range(1000):
            children: dict[int, list[int]] = {}
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open(f"/proc/{entry}/stat", "rb") as f:
                            state, ppid = f.read().rsplit(b")", 1)[1].split()[:2]
                    except (OSError, ValueError):
                        continue
                    if state not in (b"Z", b"X"):  # zombies are dead already
                        children.setdefault(int(ppid), []).append(int(entry))
            doomed, stack = [], list(children.get(me, []))
            while stack:
                pid = stack.pop()
                if pid != self._zygote:
                    doomed.append(pid)
                stack.extend(children.get(pid, []))
            if not doomed:
                return
            for pid in doomed:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _reap_children()  # the orphans that were ours
            time.sleep(0.001)

    # -- phase A: the zygote's side ---------------------------------------------------------------

    def _serve_zygote(self, sock: socket.socket) -> None:
        """The zygote: fork a launcher per request; never returns."""
        worker = os.getppid()
        try:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != worker:
                os._exit(0)
            _close_all_except(0, 1, 2, sock.fileno())
            while True:
                _reap_children()  # launchers that have exited (waited for, so CPU time adds up)
                message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 16)
                if not message:
                    _reap_children(block=True)
                    os._exit(0)
                if os.fork() == 0:
                    sock.close()
                    self._launcher(json.loads(message), fds)
                for fd in fds:
                    os.close(fd)
        finally:
            os._exit(1)

    def _launcher(self, params: dict, fds: list[int]) -> None:
        """New session, namespaces, mounts; forks the sandbox, kills it when told, reports its exit."""
        job_r, out_w, err_w, trace_w, status_w, sync_w, go_r, keep_r = fds
        zygote = os.getppid()
        try:
            os.write(status_w, f"L{os.getpid()}\n".encode())
            os.setsid()
            namespaces = params["namespaces"]
            if namespaces & _CLONE_NEWUSER:
                _prctl(_PR_SET_DUMPABLE, 1)  # the zygote is not, and the worker must write our id maps
            if namespaces:
                _c_call(_libc.unshare(namespaces), "unshare")
            if namespaces & _CLONE_NEWUSER:
                os.write(sync_w, f"{os.getpid()}\n".encode())
                if os.read(go_r, 1) != b"g":
                    raise OSError("the worker did not map our user namespace ids")
            warnings = []
            if namespaces & _CLONE_NEWNS:
                _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
                try:
                    _read_only_root()
                except OSError as e:
                    warnings.append(f"root-writable({e.strerror})")
                owner = ("uid=1,gid=1" if namespaces & _CLONE_NEWUSER else f"uid={_NOBODY},gid={_NOBODY}") \
                    if self._root else "uid=0,gid=0"
                _mount("tmpfs", params["workdir"], "tmpfs", _MS_NOSUID | _MS_NODEV,
                       f"size={_WORKDIR_MB}m,nr_inodes=4096,mode=0700,{owner}")
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != zygote:
                os._exit(_SETUP_FAILED)
            life_r, life_w = os.pipe()
            sandbox = os.fork()
            if sandbox == 0:
                self._sandbox(params, (job_r, out_w, err_w, trace_w), status_w, life_r, warnings)
            try:
                watch = [keep_r, os.pidfd_open(sandbox)]  # readable when the sandbox exits
            except (AttributeError, OSError):  # no pidfd (Linux < 5.3): poll
                watch = [keep_r]
            _close_all_except(status_w, life_w, *watch)
            status = None
            while status is None:  # in a PID namespace: once init has exited, all are gone
                ready = select.select(watch, [], [], None if len(watch) > 1 else 0.005)[0]
                if keep_r in ready:  # closed: the worker wants the sandbox stopped
                    os.kill(sandbox, signal.SIGKILL)
                    status = os.waitpid(sandbox, 0)[1]
                else:
                    pid, waited = os.waitpid(sandbox, os.WNOHANG)
                    status = waited if pid else None
            end = f"X{os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"K{os.WTERMSIG(status)}"
            os.write(status_w, f"{end}\n".encode())
            os._exit(0)
        except BaseException as e:
            try:
                os.write(status_w, f"E{e}\n".encode())
            finally:
                os._exit(_SETUP_FAILED)

    def _sandbox(self, params: dict, fds: tuple, status_w: int, life_r: int, warnings: list[str]) -> None:
        """The sandbox process (PID 1 of its namespace where there is one): limits, then phase A."""
        try:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if select.select([life_r], [], [], 0)[0]:  # the launcher died before PDEATHSIG was armed
                os._exit(_SETUP_FAILED)
            namespaces = params["namespaces"]
            if namespaces & _CLONE_NEWPID and namespaces & _CLONE_NEWNS:
                try:
                    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_RDONLY)
                except OSError as e:  # (a container that masks parts of /proc) hide the host's instead
                    try:
                        _mount("tmpfs", "/proc", "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "size=4k")
                        warnings.append(f"proc-hidden({e.strerror})")
                    except OSError:
                        warnings.append(f"host-proc-visible({e.strerror})")
            cpu = math.ceil(params["timeout_s"]) + 1
            for limit, value in ((resource.RLIMIT_AS, params["memory_mb"] << 20), (resource.RLIMIT_CPU, cpu),
                                 (resource.RLIMIT_FSIZE, 16 << 20), (resource.RLIMIT_NOFILE, 256),
                                 (resource.RLIMIT_CORE, 0)):
                resource.setrlimit(limit, (value, value))
            if namespaces & _CLONE_NEWUSER or self._root:  # a uid of its own: counts only the sandbox
                resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))
            if self._root:  # nobody, keeping only the right to read (and search) what root can read
                keep = 1 << _CAP_DAC_READ_SEARCH
                _drop_bounding_set(keep)
                _prctl(_PR_SET_KEEPCAPS, 1)
                uid = 1 if namespaces & _CLONE_NEWUSER else _NOBODY
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                _set_capabilities(keep)
                _prctl(_PR_CAP_AMBIENT, 2, _CAP_DAC_READ_SEARCH)  # PR_CAP_AMBIENT_RAISE: kept across exec
            elif namespaces & _CLONE_NEWUSER:  # root of the namespace: drop every capability
                _drop_bounding_set(0)
                _set_capabilities(0)
            _prctl(_PR_SET_NO_NEW_PRIVS, 1)
            if params["seccomp"]:
                _seccomp_no_inet()
            high = [os.dup(fd) for fd in fds]  # above 3, so the dup2s below cannot clobber a source
            for target, fd in enumerate(high):
                os.dup2(fd, target)
            if warnings:
                os.write(status_w, "".join(f"W{w}\n" for w in warnings).encode())
            _close_all_except(0, 1, 2, 3)
            workdir = params["workdir"]
            os.chdir(workdir)
            os.environ.clear()
            os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir,
                               "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8",
                               "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
                               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
            sys.argv = [""]
            chunks = []
            while chunk := os.read(0, 1 << 16):
                chunks.append(chunk)
            job = marshal.loads(b"".join(chunks))
        except BaseException as e:
            try:
                os.write(status_w, f"E{e}\n".encode())
            finally:
                os._exit(_SETUP_FAILED)
        _sandbox_main(job)

    # -- phase B --------------------------------------------------------------------------------

    def _judge(self, tests: _PreparedTests, trace: _ParsedTrace, timeout_s: float,
               memory_mb: int) -> list[tuple[bool, str]]:
        """Run the original tests in a fork of this worker, answering the program's calls from
        `trace`; one (passed, message) per unit."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(timeout_s) + 1,) * 2)
                with open("/proc/self/statm") as f:  # what this fork maps already, plus the job's budget
                    mapped = int(f.read().split()[0]) * resource.getpagesize()
                resource.setrlimit(resource.RLIMIT_AS, (mapped + (memory_mb << 20),) * 2)
                data = json.dumps(_replay(tests, trace)).encode()
            except BaseException as e:
                data = json.dumps([[False, f"judge error: {e!r}"[:_KEPT_OUTPUT]]] * len(tests.full)).encode()
            while data:
                data = data[os.write(write_fd, data):]
            os._exit(0)
        os.close(write_fd)
        chunks, deadline = [], time.monotonic() + timeout_s
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                if select.select([read_fd], [], [], remaining)[0]:
                    chunk = os.read(read_fd, 1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
            else:
                os.kill(pid, signal.SIGKILL)
        finally:
            os.close(read_fd)
            os.waitpid(pid, 0)
        try:
            verdicts = json.loads(b"".join(chunks))
            return [(bool(ok), str(message)) for ok, message in verdicts]
        except (ValueError, TypeError):
            return [(False, f"the tests did not finish within {timeout_s} s in the judge")] * len(tests.full)


def _replay(tests: _PreparedTests, trace: _ParsedTrace) -> list[tuple[bool, str]]:
    """In the judge: the original tests, the program answered from the trace."""
    replayer = _Replayer(trace)
    namespace = {"__builtins__": _test_builtins(), "__name__": "__test__"}
    exec(tests.setup, namespace)
    for name in tests.names:
        replayer.bind_global(namespace, name)
    verdicts = []
    for i, code in enumerate(tests.full):
        replayer.begin(i)
        try:
            exec(code, namespace)
            verdicts.append((not replayer.violation, replayer.violation))
        except BaseException as e:
            verdicts.append((False, replayer.violation or _failure_message(e, tests.sources[i], f"<test {i}>")))
    return verdicts


def _failure_message(e: BaseException, source: str, filename: str) -> str:
    """`AssertionError at: assert f(2) == 4`, naming the failing line of the test."""
    line = ""
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            lines = source.splitlines()
            line = lines[tb.tb_lineno - 1].strip() if 0 < tb.tb_lineno <= len(lines) else ""
        tb = tb.tb_next
    name, message = _describe(e)
    return f"{name}{': ' + message if message else ''}{' at: ' + line if line else ''}"[:_KEPT_OUTPUT]


def _worker_main(options: str) -> None:
    """Entry point of a worker process: jobs in on fd 0, results out on fd 1 (then both moved
    aside, so that nothing else that writes to stdout can corrupt the protocol)."""
    proto_in, proto_out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)
    _prctl(_PR_SET_DUMPABLE, 0)  # a same-uid sandbox cannot ptrace or read our memory
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans of the sandbox reparent to us, not to init
    worker = _Worker(**json.loads(options))
    _write_frame(proto_out, {"ready": True})
    while (job := _read_frame(proto_in)) is not None:
        _write_frame(proto_out, worker.run(job))
    worker.close()
