"""sympy: the slow, general fallback (step 2d of `is_equivalent`), imported on first use."""

from __future__ import annotations

import functools

from score_jax.rewards.math._evaluate import EvalError, exact_value, mp_context
from score_jax.rewards.math._limits import DPS, MAX_EXACT_EXPONENT


@functools.lru_cache(maxsize=1)
def load_sympy():
    """sympy, imported on first use: it takes a few hundred ms, kept out of every time limit."""
    import sympy  # pylint: disable=import-outside-toplevel
    from sympy.parsing.latex import parse_latex  # pylint: disable=import-outside-toplevel

    parse_latex("x")  # loads the ANTLR parser and warms its caches
    return sympy, parse_latex


def warm_up() -> None:
    """Imports sympy and its LaTeX parser now (a few hundred ms) rather than on the first comparison.

    is_equivalent does it on first use anyway, outside its time limit; grade_batch's workers at start.
    """
    load_sympy()


_SYMPY_FUNCS = {
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "sec": "sec",
    "csc": "csc",
    "cot": "cot",
    "arcsin": "asin",
    "arccos": "acos",
    "arctan": "atan",
    "sinh": "sinh",
    "cosh": "cosh",
    "tanh": "tanh",
    "exp": "exp",
    "ln": "log",
    "log": "log",
    "sqrt": "sqrt",
    "abs": "Abs",
    "floor": "floor",
    "ceil": "ceiling",
}


def _to_sympy(node):
    """sympy expression of a scalar tree (symbols real); raises EvalError where there is none."""
    sympy, _ = load_sympy()
    kind = node[0]
    if kind == "num":
        return sympy.Rational(node[1].numerator, node[1].denominator)
    if kind == "sym":
        return sympy.Symbol(node[1], real=True)
    if kind == "const":
        return {"pi": sympy.pi, "e": sympy.E, "i": sympy.I, "inf": sympy.oo}[node[1]]
    if kind == "add":
        return sympy.Add(*[_to_sympy(t) for t in node[1]])
    if kind == "mul":
        return sympy.Mul(*[_to_sympy(f) for f in node[1]])
    if kind == "neg":
        return -_to_sympy(node[1])
    if kind == "div":
        return _to_sympy(node[1]) / _to_sympy(node[2])
    if kind == "pow":
        exponent = exact_value(node[2])
        if exponent is not None and abs(exponent) > MAX_EXACT_EXPONENT:
            raise EvalError("exponent too large for sympy")
        return sympy.Pow(_to_sympy(node[1]), _to_sympy(node[2]))
    if kind == "pct":
        return _to_sympy(node[1]) / 100
    if kind == "call" and node[1] in _SYMPY_FUNCS and len(node[2]) == 1:
        return getattr(sympy, _SYMPY_FUNCS[node[1]])(_to_sympy(node[2][0]))
    raise EvalError(f"no sympy form for {kind}")


def sympy_relation_set(ops: tuple, parts: tuple) -> list | None:
    if not all(op in ("<", "<=", "=", "!=") for op in ops):
        return None
    try:
        sympy, _ = load_sympy()
        exprs = [_to_sympy(p) for p in parts]
        free = set().union(*(e.free_symbols for e in exprs))
        if len(free) != 1:
            return None
        make = {"<": sympy.Lt, "<=": sympy.Le, "=": sympy.Eq, "!=": sympy.Ne}
        relation = sympy.And(*[make[op](exprs[k], exprs[k + 1]) for k, op in enumerate(ops)])
        solution = relation.as_set()
    except (EvalError, ArithmeticError, ValueError, TypeError, NotImplementedError, AttributeError):
        return None
    return _from_sympy_set(solution)


def _from_sympy_set(solution) -> list | None:
    sympy, _ = load_sympy()
    ctx = mp_context()

    def value(x):
        if x in (sympy.oo, -sympy.oo):
            return ctx.inf if x == sympy.oo else -ctx.inf
        return ctx.mpf(str(sympy.N(x, DPS)))

    parts = solution.args if isinstance(solution, sympy.Union) else (solution,)
    components = []
    for part in parts:
        if isinstance(part, sympy.Interval):
            lo, hi = value(part.start), value(part.end)
            components.append((lo, hi, bool(part.left_open), bool(part.right_open), None, None))
        elif isinstance(part, sympy.FiniteSet):
            components.extend((value(x), value(x), False, False, None, None) for x in part)
        else:
            return None
    return components


def sympy_equal(pred: str, gold: str) -> bool:
    """parse_latex on both sides, then sympy: for LaTeX the small parser does not take."""
    sympy, parse_latex = load_sympy()
    try:
        a, b = parse_latex(pred), parse_latex(gold)
    except Exception:  # noqa: BLE001 - parse_latex raises many unrelated types on bad input
        return False
    if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr):
        return bool(sympy.simplify(a - b) == 0)
    return bool(a == b)
