"""The judge: the original tests, run in a limited fork of the worker, calling into the sandbox.

Every object the tests get from the program is a stand-in (``_Handle``); calling it or reading an
attribute sends one request line to the sandbox, which runs the real call and answers with plain
data (``None``/bool/int/float/str/bytes/complex/range and lists, tuples, dicts, sets of those) or
a handle to an object that has none. Replies are untrusted: each is read with a cap on its length
(``MAX_LINE``) and rebuilt with a cap on its nesting; a reply that is too long, not JSON or of the
wrong shape ends the run with a ``failure``, which the worker reports as "crashed".

Worker side: standard library and relative imports only (see _worker).
"""

from __future__ import annotations

import json
import os
import sys

from ._jobs import KEPT_OUTPUT
from ._prepare import PreparedTests
from ._values import MAX_LINE, Boundary, SandboxFailure, Unserialisable, builtins_for_tests, describe, dump


class _Judge(Boundary):
    """The tests' side of the boundary: every call into the program is a request to the sandbox."""

    def __init__(self, requests_fd: int, replies_fd: int):
        super().__init__()
        self._requests = requests_fd
        self._replies = os.fdopen(replies_fd, "rb", buffering=1 << 16)
        self.failure = ""  # why the sandbox can no longer be trusted to answer; sticky
        self.memory_error = False

    def _fail(self, why: str):
        self.failure = self.failure or why
        return SandboxFailure(self.failure)

    def receive(self):
        """The sandbox's next message, parsed; raises SandboxFailure if it ended or broke the protocol."""
        if self.failure:
            raise SandboxFailure(self.failure)
        line = self._replies.readline(MAX_LINE + 1)
        if not line:
            raise self._fail("the program's process ended during a call")
        if len(line) > MAX_LINE:
            raise self._fail(f"malformed reply: longer than {MAX_LINE} bytes")
        try:
            return json.loads(line)
        except (ValueError, RecursionError) as e:
            raise self._fail(f"malformed reply: {e}"[:200]) from None

    def _exchange(self, request):
        """Sends one request, returns the sandbox's parsed reply."""
        if self.failure:
            raise SandboxFailure(self.failure)
        data = (dump(request) + "\n").encode()
        try:
            while data:
                data = data[os.write(self._requests, data) :]
        except OSError:
            raise self._fail("the program's process ended during a call") from None
        return self.receive()

    def _value(self, reply):
        try:
            value, error = self.decode(reply)
        except ValueError as e:
            raise self._fail(f"malformed reply: {e}"[:200]) from None
        if error is not None:
            self.memory_error |= type(error) is MemoryError
            raise error
        return value

    def bind_global(self, namespace: dict, name: str) -> None:
        """`name` in the tests' namespace: the program's value, the real stdlib module, or unbound."""
        reply = self._exchange(["g", name])
        if reply == ["m"]:
            if name in sys.stdlib_module_names:
                namespace[name] = __import__(name)
        elif reply != ["n"]:
            try:
                namespace[name] = self._value(reply)
            except Exception:  # noqa: BLE001 - the program's value could not be had: the name stays unbound
                pass

    def call(self, hid, args, kwargs):
        try:
            request = ["c", hid, self.canon(args, "arg"), self.canon(kwargs, "arg")]
        except Unserialisable as e:
            raise TypeError(str(e)) from None
        return self._value(self._exchange(request))

    def getattr(self, hid, name):
        return self._value(self._exchange(["a", hid, name]))

    def close(self) -> None:
        """Tells the sandbox there are no more requests (it exits)."""
        os.close(self._requests)


def judge(tests: PreparedTests, job: bytes, job_fd: int, requests_fd: int, replies_fd: int) -> dict:
    """Sends `job` to the sandbox, then runs the tests against it; returns the report for the worker."""
    try:
        while job:
            job = job[os.write(job_fd, job) :]
    except OSError:
        pass  # the sandbox is gone; receive() says so
    os.close(job_fd)
    judge = _Judge(requests_fd, replies_fd)
    report = {"syntax_error": None, "program_error": None, "verdicts": []}
    namespace = {"__builtins__": builtins_for_tests(), "__name__": "__test__"}
    exec(tests.setup, namespace)
    try:
        hello = judge.receive()
        if type(hello) is not list or not hello or hello[0] not in ("R", "S", "P"):
            raise judge._fail(f"malformed first message {hello!r:.80}")
        if hello[0] == "S":
            report["syntax_error"] = str(hello[1] if len(hello) > 1 else "SyntaxError")[:KEPT_OUTPUT]
        elif hello[0] == "P":
            report["program_error"] = ": ".join(map(str, hello[1:3]))[:KEPT_OUTPUT]
            judge.memory_error |= hello[1:2] == ["MemoryError"]
        else:
            for name in tests.names:
                judge.bind_global(namespace, name)
    except SandboxFailure:
        pass
    if report["syntax_error"] is None:
        for i, code in enumerate(tests.units):
            try:
                exec(code, namespace)
                report["verdicts"].append((not judge.failure, judge.failure))
            except BaseException as e:
                message = judge.failure or _failure_message(e, tests.sources[i], f"<test {i}>")
                report["verdicts"].append((False, message))
    judge.close()
    report.update(failure=judge.failure, memory_error=judge.memory_error)
    return report


def _failure_message(e: BaseException, source: str, filename: str) -> str:
    """`AssertionError at: assert f(2) == 4`, naming the failing line of the test."""
    line = ""
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            lines = source.splitlines()
            line = lines[tb.tb_lineno - 1].strip() if 0 < tb.tb_lineno <= len(lines) else ""
        tb = tb.tb_next
    name, message = describe(e)
    return f"{name}{': ' + message if message else ''}{' at: ' + line if line else ''}"[:KEPT_OUTPUT]
