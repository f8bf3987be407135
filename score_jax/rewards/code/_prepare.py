"""Test preparation: full tests for the judge, stripped ones (no expected values) for the sandbox.

Worker side: standard library and relative imports only (see _worker).
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import symtable
from collections.abc import Sequence
from typing import Any

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
    elif (
        isinstance(node, ast.Call)
        and not any(isinstance(a, ast.Starred) for a in node.args)
        and all(k.arg is not None for k in node.keywords)
        and (
            (isinstance(node.func, ast.Name) and node.func.id in _PURE_BUILTINS)
            or (
                isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "math"
                and node.func.attr in _PURE_MATH
            )
        )
    ):
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


def _stripped_tree(source: str) -> ast.Module:
    return ast.fix_missing_locations(_HideExpected().visit(ast.parse(source)))


def strip_expected(source: str) -> str:
    """A test unit as the sandbox runs it: ``assert f(2) == 4, "msg"`` becomes ``(f(2),)``.

    Each assert keeps only the parts that feed the program, so expected values never reach the
    sandbox's memory (``prepare_tests`` compiles the same tree).
    """
    return ast.unparse(_stripped_tree(source))


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
    """A job's tests compiled for both phases."""

    setup: Any  # code object
    full: tuple  # code objects the judge runs
    stripped: tuple  # code objects the sandbox runs
    names: tuple[str, ...]  # the program's names the tests read
    sources: tuple[str, ...]


def prepare_tests(units: Sequence[str], setup: str = "") -> PreparedTests:
    """Compiles test units (and the setup) for the judge as written and for the sandbox stripped.

    Raises:
      SyntaxError, ValueError: a unit or the setup does not compile.
    """
    full, stripped = [], []
    for i, source in enumerate(units):
        tree = ast.parse(source)
        full.append(compile(tree, f"<test {i}>", "exec", dont_inherit=True))
        stripped.append(compile(_stripped_tree(source), "<test>", "exec", dont_inherit=True))
    return PreparedTests(
        compile(setup, "<setup>", "exec", dont_inherit=True),
        tuple(full),
        tuple(stripped),
        _program_names(units, setup),
        tuple(units),
    )
