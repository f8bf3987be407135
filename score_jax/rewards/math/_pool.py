"""Process pool for `grade_batch`: spawned grading workers, replaced when they die or hang."""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Sequence

from score_jax.rewards.math._grade import grade
from score_jax.rewards.math._limits import SYMBOLIC_TIMEOUT_S, WORKER_START_TIMEOUT_S, WORKER_TIMEOUT_S
from score_jax.rewards.math._sympy_fallback import load_sympy


def _grading_worker_main(conn) -> None:
    """Pool worker: says "ready", then receives (index, response, gold, timeout_s) and sends (index, reward).

    None stops it.
    """
    load_sympy()  # imported once here, not inside the first item's time limit
    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        index, response, gold, timeout_s = job
        conn.send((index, grade(response, gold, timeout_s=timeout_s)))


class _GradingWorker:
    """One spawned grading process and the item it is working on."""

    def __init__(self, context):
        self.conn, child = context.Pipe()
        # spawn, not fork: the trainer holds JAX and other threads, which fork would copy locked.
        self.process = context.Process(target=_grading_worker_main, args=(child,), name="math-grader", daemon=True)
        self.process.start()
        child.close()
        self.index: int | None = None
        self.started = 0.0

    def wait_ready(self) -> None:
        """Blocks until the worker has imported everything (about a second)."""
        if not self.conn.poll(WORKER_START_TIMEOUT_S) or self.conn.recv() != "ready":
            self.kill()
            raise RuntimeError(
                f"math grader worker (pid {self.process.pid}) did not start within {WORKER_START_TIMEOUT_S} s; "
                "check that score_jax imports in a fresh interpreter"
            )

    def stop(self) -> None:
        """Waits briefly for a worker that was sent None, then kills it."""
        self.process.join(timeout=1.0)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5.0)
        self.conn.close()


class _GradingPool:
    """Fixed number of workers; a worker that dies or stays silent on one item too long is replaced."""

    def __init__(self, size: int):
        self._context = multiprocessing.get_context("spawn")
        self._workers = [_GradingWorker(self._context) for _ in range(size)]
        for worker in self._workers:
            worker.wait_ready()

    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    def _replace(self, worker: _GradingWorker) -> _GradingWorker:
        worker.kill()
        fresh = _GradingWorker(self._context)
        self._workers[self._workers.index(worker)] = fresh
        fresh.wait_ready()
        return fresh

    def run(
        self, responses: Sequence[str], golds: Sequence[str], timeout_s: float, worker_timeout_s: float
    ) -> list[float]:
        results = [0.0] * len(responses)
        queue = list(range(len(responses) - 1, -1, -1))  # popped from the end: input order
        failures = [0] * len(responses)
        idle = list(self._workers)
        busy: dict = {}

        def lost(worker: _GradingWorker) -> None:
            # The worker died or hung on its item: retry the item once (the worker may have
            # been killed from outside), then give it 0.0.
            failures[worker.index] += 1
            if failures[worker.index] < 2:
                queue.append(worker.index)
            idle.append(self._replace(worker))

        while queue or busy:
            while idle and queue:
                worker, index = idle.pop(), queue.pop()
                worker.index, worker.started = index, time.monotonic()
                try:
                    worker.conn.send((index, responses[index], golds[index], timeout_s))
                except (OSError, ValueError):
                    lost(worker)
                    continue
                busy[worker.conn] = worker
            for conn in multiprocessing.connection.wait(list(busy), timeout=0.25):
                worker = busy.pop(conn)
                try:
                    index, reward = conn.recv()
                except (EOFError, OSError):
                    lost(worker)
                    continue
                results[index] = reward
                idle.append(worker)
            now = time.monotonic()
            for conn, worker in list(busy.items()):
                if now - worker.started > worker_timeout_s:
                    del busy[conn]
                    lost(worker)
        return results

    def close(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(None)
        for worker in self._workers:
            worker.stop()


_POOL: _GradingPool | None = None
_POOL_LOCK = threading.Lock()
# Workers in the grading pool; grading is CPU-bound Python, one process per core.
_POOL_SIZE = max(1, min(8, os.cpu_count() or 1))


def close_pool() -> None:
    """Stops grade_batch's worker processes; the next grade_batch starts new ones. Also runs at exit."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


atexit.register(close_pool)


def pool_worker_pids() -> list[int]:
    """Process ids of grade_batch's workers (waits for a running batch); empty while none are started."""
    with _POOL_LOCK:
        return [] if _POOL is None else _POOL.pids()


def grade_batch(
    responses: Sequence[str],
    golds: Sequence[str],
    *,
    timeout_s: float = SYMBOLIC_TIMEOUT_S,
    worker_timeout_s: float = WORKER_TIMEOUT_S,
) -> list[float]:
    """grade() over a batch in worker processes; safe to call from any thread.

    The pool starts on the first call (about a second per worker) and is reused. Calls from
    several threads take turns. A worker that dies or hangs is replaced and its item retried
    once; an item that fails twice scores 0.0.

    Args:
      responses: model outputs, one per episode.
      golds: references, aligned with `responses`.
      timeout_s: hard limit on the symbolic part of grading one item, in seconds (see is_equivalent).
      worker_timeout_s: a worker silent for this long on one item is killed and replaced, in seconds.

    Returns:
      Rewards in {0.0, 1.0}, in input order.
    """
    if len(responses) != len(golds):
        raise ValueError(
            f"grade_batch got {len(responses)} responses but {len(golds)} golds; pass one gold per response"
        )
    if not responses:
        return []
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _GradingPool(_POOL_SIZE)
        return _POOL.run(list(responses), list(golds), timeout_s, worker_timeout_s)
