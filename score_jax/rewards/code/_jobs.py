"""What crosses between the host and a worker: jobs, verdicts, and the length-prefixed JSON frames that carry them.

Worker side too: standard library and relative imports only (see _worker).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import struct
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 1024
STATUSES = ("passed", "failed", "timeout", "crashed", "memory", "syntax_error", "test_error")
KEPT_OUTPUT = 4000  # characters of stdout / stderr / error kept in a result


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
    memory_mb: int = DEFAULT_MEMORY_MB  # memory of the sandbox (its cgroup), and address space of each of its processes

    def __post_init__(self):
        if not self.tests:
            raise ValueError("a CodeJob needs at least one test; with none, any program would pass.")
        if isinstance(self.tests, str):
            raise ValueError("tests must be a sequence of test sources, not one string.")

    @classmethod
    def mbpp(
        cls,
        program: str,
        tests: Iterable[str],
        setup: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
    ) -> CodeJob:
        """MBPP shape: `tests` are assert statements such as ``assert f(2) == 4``."""
        if isinstance(tests, str):
            raise ValueError(f"tests must be a list of assert statements, got one string {tests[:80]!r}.")
        return cls(program, tuple(tests), setup, timeout_s, memory_mb)

    @classmethod
    def humaneval(
        cls,
        problem: Mapping[str, Any],
        completion: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
    ) -> CodeJob:
        """HumanEval shape: the program is ``prompt + completion``; the test defines ``check(candidate)``.

        Helper functions the prompt defines besides the entry point (``poly``, ``encode_cyclic``)
        are trusted: the tests use the prompt's own, which the completion cannot redefine.
        """
        missing = [k for k in ("prompt", "test", "entry_point") if k not in problem]
        if missing:
            raise ValueError(f"HumanEval problem lacks {missing}; it needs prompt, test and entry_point.")
        entry = problem["entry_point"]
        unit = f"{problem['test']}\n\ncheck({entry})\n"
        return cls(
            problem["prompt"] + completion, (unit,), _prompt_helpers(problem["prompt"], entry), timeout_s, memory_mb
        )


def _prompt_helpers(prompt: str, entry_point: str) -> str:
    """The prompt without the entry point's definition: its imports and helper functions."""
    try:
        tree = ast.parse(prompt)
    except SyntaxError:
        return ""
    tree.body = [
        n for n in tree.body if not (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == entry_point)
    ]
    return ast.unparse(tree)


def write_frame(stream, obj) -> None:
    data = json.dumps(obj).encode()
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def read_frame(stream):
    head = stream.read(8)
    if len(head) < 8:
        return None
    data = stream.read(struct.unpack("<Q", head)[0])
    return json.loads(data)
