"""Host side: check_mbpp, check_humaneval, run_jobs, and the SandboxPool of `python -S` worker processes."""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._jobs import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, CodeJob, ExecutionResult, read_frame, write_frame


def check_mbpp(
    program: str,
    tests: Sequence[str],
    setup: str = "",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> ExecutionResult:
    """Run `program` against MBPP asserts; passed only if every assert holds."""
    return run_jobs([CodeJob.mbpp(program, tests, setup, timeout_s, memory_mb)], max_workers=1)[0]


def check_humaneval(
    problem: Mapping[str, Any],
    completion: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> ExecutionResult:
    """Run ``problem['prompt'] + completion`` against ``check(entry_point)``."""
    return run_jobs([CodeJob.humaneval(problem, completion, timeout_s, memory_mb)], max_workers=1)[0]


def run_jobs(
    jobs: Iterable[CodeJob | tuple[str, Mapping[str, Any], str]],
    max_workers: int | None = None,
    pool: SandboxPool | None = None,
) -> list[ExecutionResult]:
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

        threads = [
            threading.Thread(target=drive, daemon=True)
            for _ in range(min(len(jobs), max_workers or self.max_workers, self.max_workers))
        ]
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


# Runs this package's worker side as a stdlib-only worker. -S skips site (fast, no .pth side effects); not -E
# or -I, because the worker needs PYTHONHASHSEED from its environment (built from scratch here). The package's
# folder is imported as a bare package `_score_sandbox` whose __init__ never runs: only _worker and the modules
# it imports (relatively) load, never score_jax nor anything outside the standard library.
_WORKER_BOOT = (
    "import sys;del sys.path[0];p=type(sys)('_score_sandbox');p.__path__=[sys.argv[1]];"
    "sys.modules[p.__name__]=p;__import__(p.__name__+'._worker');"
    "p._worker.sandbox_worker_main(sys.argv[2])"
)


class _WorkerProcess:
    """The main process's end of one worker: length-prefixed JSON both ways."""

    def __init__(self, use_namespaces: bool):
        self._use_namespaces = use_namespaces
        self._start()

    def _start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TMPDIR": tempfile.gettempdir(),
            "PYTHONHASHSEED": "0",
            "LC_ALL": "C.UTF-8",
        }
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-S",
                "-B",
                "-c",
                _WORKER_BOOT,
                os.path.dirname(os.path.abspath(__file__)),
                json.dumps({"use_namespaces": self._use_namespaces}),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd="/",
            close_fds=True,
        )
        if read_frame(self._proc.stdout) is None:  # the worker's hello: its tier is probed
            raise RuntimeError(f"sandbox worker failed to start (exit {self._proc.wait()}); see its stderr above")

    def run(self, job: CodeJob) -> ExecutionResult:
        try:
            write_frame(self._proc.stdin, dataclasses.asdict(job))
            reply = read_frame(self._proc.stdout)
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
