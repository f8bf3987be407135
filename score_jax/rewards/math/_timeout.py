"""Time limit: raise Timeout in the calling thread, main or not, once a deadline has passed."""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import threading
import time


class Timeout(BaseException):
    """Raised in a thread whose symbolic time ran out.

    A BaseException so that sympy's own ``except Exception`` blocks cannot swallow it.
    """


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class _Watchdog:
    """One daemon thread per process that raises Timeout in threads past their deadline.

    SIGALRM only reaches the main thread; an asynchronous exception reaches any thread, between
    two bytecodes. Neither interrupts one long C call, which is why the guards in the parser
    and evaluators keep every single operation small.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, int]] = {}
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="math-grader-watchdog", daemon=True)
                self._thread.start()
            token = next(self._tokens)
            self._armed[token] = (time.monotonic() + seconds, threading.get_ident())
            self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                # Drop a Timeout that was set but not raised yet (a NULL exception clears it).
                _set_async_exc(threading.get_ident(), ctypes.py_object())

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (deadline, thread_id) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        self._fired.add(token)
                        _set_async_exc(thread_id, ctypes.py_object(Timeout))
                next_deadline = min((d for d, _ in self._armed.values()), default=now + 60.0)
                self._cond.wait(timeout=max(next_deadline - now, 0.001))


_WATCHDOG = _Watchdog()


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raises Timeout inside the with-block once `seconds` have passed."""
    token = _WATCHDOG.arm(seconds)
    try:
        yield
    finally:
        _WATCHDOG.disarm(token)
