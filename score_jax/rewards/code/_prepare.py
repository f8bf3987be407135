"""Test preparation: each unit compiled for the judge, and the program's names the tests read.

Worker side: standard library and relative imports only (see _worker).
"""

from __future__ import annotations

import builtins
import dataclasses
import symtable
from collections.abc import Sequence
from typing import Any


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
class PreparedTests:
    """A job's tests compiled for the judge."""

    setup: Any  # code object
    units: tuple  # code objects, one per test unit
    names: tuple[str, ...]  # the program's names the tests read
    sources: tuple[str, ...]


def prepare_tests(units: Sequence[str], setup: str = "") -> PreparedTests:
    """Compiles test units (and the setup) for the judge, and finds the program's names they read.

    Raises:
      SyntaxError, ValueError: a unit or the setup does not compile.
    """
    return PreparedTests(
        compile(setup, "<setup>", "exec", dont_inherit=True),
        tuple(compile(source, f"<test {i}>", "exec", dont_inherit=True) for i, source in enumerate(units)),
        _program_names(units, setup),
        tuple(units),
    )
