"""sympy: the slow, general fallback (step 2d of `is_equivalent`), imported on first use."""

from __future__ import annotations

import functools
import math

from score_jax.rewards.math._evaluate import EvalError, mp_context
from score_jax.rewards.math._limits import DPS, MAX_EXACT_BITS


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


# Functions whose value is no larger than their argument (plus a little): floor(9^n) is as big as 9^n.
_SIZE_KEEPING = frozenset(
    {
        *("floor", "ceiling", "Abs", "sign", "re", "im", "arg", "Max", "Min", "frac", "round", "conjugate", "Mod"),
        *("sin", "cos", "tan", "sec", "csc", "cot", "asin", "acos", "atan", "acot", "asec", "acsc", "atan2"),
        *("sinh", "cosh", "tanh", "coth", "asinh", "acosh", "atanh", "exp", "log", "LambertW", "erf"),
    }
)


def _bits(expr) -> float:
    """An upper bound on the size in bits of the exact number `expr` can become, from its
    (unevaluated) tree: exponents are bounded by the size of what they are built from, so a
    power hidden under floor, ceil, max, a binomial or anything else still counts in full.

    Raises EvalError for anything over MAX_EXACT_BITS: the sympy calls that follow would
    compute it exactly, in one C call no time limit can interrupt.
    """
    sympy, _ = load_sympy()
    if expr.is_Integer:
        size = float(int(expr).bit_length())
    elif expr.is_Rational:
        size = float(max(int(expr.p).bit_length(), int(expr.q).bit_length()))
    elif expr.is_Float or expr.is_Symbol or expr.is_NumberSymbol or not expr.args:
        size = 2.0
    elif expr.is_Pow:
        base, exponent = _bits(expr.args[0]), _bits(expr.args[1])
        if exponent > 62:
            raise EvalError("exponent too large for sympy")
        size = max(base, 1.0) * 2.0**exponent
    elif isinstance(expr, sympy.Function) and type(expr).__name__ in _SIZE_KEEPING:
        size = max(_bits(a) for a in expr.args) + 1
    elif isinstance(expr, (sympy.Function, sympy.factorial, sympy.binomial)):
        # factorial, binomial, gamma, fibonacci, ...: up to n^n for an argument up to n
        n = 2.0 ** min(max(_bits(a) for a in expr.args), 62.0)
        size = n * math.log2(n + 2)
    else:  # Add, Mul, relations, sets, tuples: at most the sum of the parts
        size = sum(_bits(a) for a in expr.args) + len(expr.args)
    if size > MAX_EXACT_BITS:
        raise EvalError(f"a number of more than {MAX_EXACT_BITS} bits")
    return size


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
        base, exponent = _to_sympy(node[1]), _to_sympy(node[2])
        with sympy.evaluate(False):
            power = sympy.Pow(base, exponent)
        _bits(power)  # checked once built, before sympy evaluates it
        return sympy.Pow(base, exponent)
    if kind == "pct":
        return _to_sympy(node[1]) / 100
    if kind == "call" and node[1] in _SYMPY_FUNCS and len(node[2]) == 1:
        function, argument = getattr(sympy, _SYMPY_FUNCS[node[1]]), _to_sympy(node[2][0])
        with sympy.evaluate(False):
            _bits(function(argument))
        return function(argument)
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
        with sympy.evaluate(False):  # built as written, sized, and only then evaluated
            a, b = parse_latex(pred), parse_latex(gold)
            _bits(a), _bits(b)
        a, b = a.doit(), b.doit()
    except EvalError:
        return False
    except Exception:  # noqa: BLE001 - parse_latex raises many unrelated types on bad input
        return False
    if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr):
        return bool(sympy.simplify(a - b) == 0)
    return bool(a == b)
