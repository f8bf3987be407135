"""Phase B, in the judge: the sandbox's trace parsed, and the original tests run against it.

Worker side: standard library and relative imports only (see _worker).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from ._jobs import KEPT_OUTPUT
from ._prepare import PreparedTests
from ._values import Trace, TraceViolation, Unserialisable, builtins_for_tests, describe, dump


class _Replayer(Trace):
    """Phase B: answers the tests' calls from the recorded trace."""

    def __init__(self, trace: ParsedTrace):
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
        key = dump(event)
        for j in range(self._pos, len(self._queue)):
            if self._queue[j][0] == key:
                self._pos = j + 1
                try:
                    return self.deliver(self._queue[j][1])
                except ValueError as e:
                    self.violation = f"malformed recorded result: {e}"
                    raise TraceViolation(self.violation) from None
        self.violation = f"the program's run has no recorded answer for {key[:200]}"
        raise TraceViolation(self.violation)


@dataclasses.dataclass
class ParsedTrace:
    syntax_error: str | None = None
    program_error: str | None = None
    globals: dict = dataclasses.field(default_factory=dict)
    units: dict = dataclasses.field(default_factory=dict)  # unit -> [(call key, result)]
    unit_errors: dict = dataclasses.field(default_factory=dict)
    done: bool = False
    memory_error: bool = False


def parse_trace(raw: bytes) -> ParsedTrace:
    """Events from the sandbox: untrusted, so malformed lines are dropped, never trusted."""
    trace = ParsedTrace()
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
                key = dump(event[:-1])
            except (Unserialisable, RecursionError):
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


def replay(tests: PreparedTests, trace: ParsedTrace) -> list[tuple[bool, str]]:
    """In the judge: the original tests, the program answered from the trace."""
    replayer = _Replayer(trace)
    namespace = {"__builtins__": builtins_for_tests(), "__name__": "__test__"}
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
    name, message = describe(e)
    return f"{name}{': ' + message if message else ''}{' at: ' + line if line else ''}"[:KEPT_OUTPUT]
