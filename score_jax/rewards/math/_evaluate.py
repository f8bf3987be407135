"""Exact and numeric evaluation of answer trees: rationals, else 50-digit mpmath at pseudo-random points."""

from __future__ import annotations

import functools
import math
import threading
import zlib
from collections.abc import Sequence
from fractions import Fraction

import mpmath

from score_jax.rewards.math._limits import (
    DPS,
    MAX_EXACT_EXPONENT,
    MAX_EXPONENT,
    MAX_FACTORIAL,
    MIN_ROUNDING_PLACES,
    REL_TOL,
    TRIALS,
)


class EvalError(Exception):
    pass


@functools.lru_cache(maxsize=8192)
def exact_value(node) -> Fraction | None:
    """Exact value of a tree of rationals, + - * /, small integer powers, n! and square roots of squares."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "neg":
        value = exact_value(node[1])
        return None if value is None else -value
    if kind in ("add", "mul"):
        total = Fraction(0) if kind == "add" else Fraction(1)
        for child in node[1]:
            value = exact_value(child)
            if value is None:
                return None
            total = total + value if kind == "add" else total * value
        return total
    if kind == "div":
        num, den = exact_value(node[1]), exact_value(node[2])
        return None if num is None or not den else num / den
    if kind == "pct":
        value = exact_value(node[1])
        return None if value is None else value / 100
    if kind == "pow":
        base, exponent = exact_value(node[1]), exact_value(node[2])
        if base is None or exponent is None or exponent.denominator != 1 or abs(exponent) > MAX_EXACT_EXPONENT:
            return None
        if base == 0 and exponent < 0:
            return None
        size = max(base.numerator.bit_length(), base.denominator.bit_length())
        if size * abs(exponent) > 100_000:
            return None
        return base ** int(exponent)
    if kind == "call" and len(node[2]) == 1:
        value = exact_value(node[2][0])
        if value is None:
            return None
        if node[1] == "abs":
            return abs(value)
        if node[1] == "sqrt" and value >= 0:
            num, den = math.isqrt(value.numerator), math.isqrt(value.denominator)
            if num * num == value.numerator and den * den == value.denominator:
                return Fraction(num, den)
        if node[1] == "fact" and value.denominator == 1 and 0 <= value <= 1000:
            return Fraction(math.factorial(int(value)))
    return None


def decimal_places(node) -> int | None:
    """Decimal places of a bare literal (`-0.33` -> 2, `5` -> 0), None for anything else."""
    if node[0] == "neg":
        node = node[1]
    return node[2] if node[0] == "num" else None


_LOCAL = threading.local()


def mp_context():
    """This thread's mpmath context (mpmath's global `mp` precision is not thread-safe)."""
    ctx = getattr(_LOCAL, "ctx", None)
    if ctx is None:
        ctx = type(mpmath.mp)()
        ctx.dps = DPS
        _LOCAL.ctx = ctx
    return ctx


def _seed(*parts: object) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def _symbol_value(ctx, name: str, trial: int):
    """A pseudo-random real in +-[0.35, 2.85], the same for a name and trial in every process."""
    seed = _seed(name, trial)
    value = ctx.mpf(35 + seed % 250) / 100
    return -value if (seed >> 16) & 1 else value


def _unknown_function(ctx, name: str):
    """A fixed pseudo-random analytic function standing for an unknown f(x) or a_{n}."""
    seed = _seed("function", name)
    a = ctx.mpf(30 + seed % 97) / 100
    b = ctx.mpf((seed >> 8) % 89) / 100
    c = ctx.mpf(50 + (seed >> 16) % 83) / 100

    def function(*args):
        return a + sum((k + 1) * (c * ctx.sin(a * v + b) + v * 37 / 100) for k, v in enumerate(args))

    return function


def collect_symbols(node, names: set, integer_names: set) -> None:
    """Collects free symbol names; those in sum bounds are integers."""
    kind = node[0]
    if kind == "sym":
        names.add(node[1])
        return
    if kind == "sum":
        collect_symbols(node[3], integer_names, integer_names)
        collect_symbols(node[4], integer_names, integer_names)
        collect_symbols(node[5], names, integer_names)
        return
    for child in node[1:]:
        if isinstance(child, tuple) and child and isinstance(child[0], str):
            collect_symbols(child, names, integer_names)
        elif isinstance(child, tuple):
            for item in child:
                if isinstance(item, tuple) and item and isinstance(item[0], str):
                    collect_symbols(item, names, integer_names)
                elif isinstance(item, tuple):  # matrix rows
                    for cell in item:
                        collect_symbols(cell, names, integer_names)


class Matrix(tuple):
    """Rows of evaluated entries."""


def is_real(ctx, value) -> bool:
    return not isinstance(value, Matrix) and ctx.im(value) == 0


class Evaluator:
    """Evaluates a scalar (or matrix) tree at one assignment of its free symbols."""

    def __init__(self, ctx, env: dict):
        self.ctx = ctx
        self.env = env

    def ev(self, node):
        ctx = self.ctx
        kind = node[0]
        if kind == "num":
            return ctx.mpf(node[1].numerator) / node[1].denominator
        if kind == "sym":
            return self.env[node[1]]
        if kind == "const":
            return {"pi": ctx.pi, "e": ctx.e, "i": ctx.mpc(0, 1), "inf": ctx.inf}[node[1]]
        if kind in ("add", "mul"):
            combine = self.add if kind == "add" else self.mul
            total = self.ev(node[1][0])
            for child in node[1][1:]:
                total = combine(total, self.ev(child))
            return total
        if kind == "neg":
            value = self.ev(node[1])
            return Matrix(tuple(-x for x in row) for row in value) if isinstance(value, Matrix) else -value
        if kind == "div":
            num, den = self.ev(node[1]), self.ev(node[2])
            if isinstance(den, Matrix) or den == 0:
                raise EvalError("division by zero or by a matrix")
            return self.mul(num, 1 / den)
        if kind == "pow":
            return self.power(node)
        if kind == "pct":
            return self.ev(node[1]) / 100
        if kind == "call":
            return self.call(node[1], node[2])
        if kind == "idx":
            return _unknown_function(ctx, "idx:" + node[1])(self.ev(node[2]))
        if kind == "matrix":
            return Matrix(tuple(self.ev(cell) for cell in row) for row in node[1])
        if kind == "sum":
            return self.big_operator(node)
        raise EvalError(f"not a scalar: {kind}")

    def add(self, a, b):
        if isinstance(a, Matrix) or isinstance(b, Matrix):
            if not (isinstance(a, Matrix) and isinstance(b, Matrix)) or len(a) != len(b) or len(a[0]) != len(b[0]):
                raise EvalError("matrix shapes differ")
            return Matrix(tuple(x + y for x, y in zip(ra, rb)) for ra, rb in zip(a, b))
        return a + b

    def mul(self, a, b):
        if isinstance(a, Matrix) and isinstance(b, Matrix):
            if len(a[0]) != len(b):
                raise EvalError("matrix shapes do not multiply")
            return Matrix(
                tuple(sum((a[i][k] * b[k][j] for k in range(len(b))), self.ctx.mpf(0)) for j in range(len(b[0])))
                for i in range(len(a))
            )
        if isinstance(a, Matrix):
            return Matrix(tuple(x * b for x in row) for row in a)
        if isinstance(b, Matrix):
            return Matrix(tuple(a * x for x in row) for row in b)
        return a * b

    def power(self, node):
        ctx = self.ctx
        base = self.ev(node[1])
        exponent = self.ev(node[2])
        if isinstance(exponent, Matrix):
            raise EvalError("matrix exponent")
        if isinstance(base, Matrix):
            n = int(exponent.real) if is_real(ctx, exponent) and exponent == int(exponent.real) else -1
            if n < 1 or n > 64:
                raise EvalError("unsupported matrix power")
            result = base
            for _ in range(n - 1):
                result = self.mul(result, base)
            return result
        if abs(exponent) > MAX_EXPONENT or (abs(base) > 1 and abs(exponent) * ctx.log(abs(base), 2) > 10**7):
            raise EvalError("power too large")
        exact = exact_value(node[2])
        if exact is not None and exact.denominator % 2 == 1 and is_real(ctx, base) and base < 0:
            # Real odd roots of negative reals: (-8)^(1/3) = -2, as in MATH.
            magnitude = ctx.power(-base, ctx.mpf(exact.numerator) / exact.denominator)
            return -magnitude if exact.numerator % 2 else magnitude
        return ctx.power(base, exponent)

    def call(self, name: str, args: tuple):
        ctx = self.ctx
        values = [self.ev(a) for a in args]
        if name == "det":
            return self.determinant(values[0])
        if any(isinstance(v, Matrix) for v in values):
            raise EvalError(f"{name} of a matrix")
        if name in _UNARY and len(values) == 1:
            return _UNARY[name](ctx, values[0])
        if name in ("log", "ln") and len(values) == 2:
            return ctx.log(values[0]) / ctx.log(values[1])
        if name == "root" and len(values) == 2:
            index = exact_value(args[1])
            x = values[0]
            if index is not None and index.denominator == 1 and index % 2 == 1 and is_real(ctx, x) and x < 0:
                return -ctx.root(-x, int(index))
            return ctx.power(x, 1 / values[1])
        if name == "binom" and len(values) == 2:
            return ctx.binomial(values[0], values[1])
        if name in ("max", "min", "gcd", "lcm") and values and all(is_real(ctx, v) for v in values):
            reals = [ctx.re(v) for v in values]
            if name == "max":
                return max(reals)
            if name == "min":
                return min(reals)
            ints = [int(v) for v in reals]
            if any(i != v or abs(i) > 10**30 for i, v in zip(ints, reals)):
                raise EvalError(f"{name} of non-integers")
            return ctx.mpf(math.gcd(*ints) if name == "gcd" else math.lcm(*ints))
        return _unknown_function(ctx, name)(*values)

    def determinant(self, value):
        if not isinstance(value, Matrix) or len(value) != len(value[0]) or len(value) > 6:
            raise EvalError("det needs a small square matrix")
        return self.ctx.det(self.ctx.matrix([list(row) for row in value]))

    def big_operator(self, node):
        _, kind, var, lo_node, hi_node, body = node
        lo, hi = self.ev(lo_node), self.ev(hi_node)
        if not (is_real(self.ctx, lo) and is_real(self.ctx, hi)) or lo != int(lo) or hi != int(hi):
            raise EvalError("sum bounds must be integers")
        lo, hi = int(lo), int(hi)
        if hi - lo > 10_000:
            raise EvalError("sum too long")
        saved = self.env.get(var)
        total = self.ctx.mpf(0 if kind == "sum" else 1)
        try:
            for k in range(lo, hi + 1):
                self.env[var] = self.ctx.mpf(k)
                value = self.ev(body)
                total = total + value if kind == "sum" else total * value
        finally:
            if saved is None:
                self.env.pop(var, None)
            else:
                self.env[var] = saved
        return total


def _factorial(ctx, x):
    if not is_real(ctx, x) or abs(x) > MAX_FACTORIAL or (x < 0 and x == int(ctx.re(x))):
        raise EvalError("factorial out of range")
    return ctx.gamma(x + 1)


def _real_only(function):
    def wrapped(ctx, x):
        if not is_real(ctx, x):
            raise EvalError("needs a real argument")
        return function(ctx, ctx.re(x))

    return wrapped


_UNARY = {
    "sin": lambda c, x: c.sin(x),
    "cos": lambda c, x: c.cos(x),
    "tan": lambda c, x: c.tan(x),
    "sec": lambda c, x: c.sec(x),
    "csc": lambda c, x: c.csc(x),
    "cot": lambda c, x: c.cot(x),
    "arcsin": lambda c, x: c.asin(x),
    "arccos": lambda c, x: c.acos(x),
    "arctan": lambda c, x: c.atan(x),
    "arcsec": lambda c, x: c.asec(x),
    "arccsc": lambda c, x: c.acsc(x),
    "arccot": lambda c, x: c.acot(x),
    "sinh": lambda c, x: c.sinh(x),
    "cosh": lambda c, x: c.cosh(x),
    "tanh": lambda c, x: c.tanh(x),
    "exp": lambda c, x: c.exp(x),
    "ln": lambda c, x: c.log(x),
    "log": lambda c, x: c.log(x),
    "sqrt": lambda c, x: c.sqrt(x),
    "abs": lambda c, x: abs(x),
    "fact": _factorial,
    "floor": _real_only(lambda c, x: c.floor(x)),
    "ceil": _real_only(lambda c, x: c.ceil(x)),
    "sgn": _real_only(lambda c, x: c.sign(x)),
}


def is_close(ctx, a, b) -> bool:
    if isinstance(a, Matrix) or isinstance(b, Matrix):
        return (
            isinstance(a, Matrix)
            and isinstance(b, Matrix)
            and len(a) == len(b)
            and len(a[0]) == len(b[0])
            and all(is_close(ctx, x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
        )
    if ctx.isinf(a) or ctx.isinf(b) or ctx.isnan(a) or ctx.isnan(b):
        return bool(ctx.isinf(a) and ctx.isinf(b) and a == b)
    diff = abs(a - b)
    return diff <= REL_TOL * max(abs(a), abs(b)) or diff <= ctx.mpf(10) ** -40


def _assignments(ctx, nodes: Sequence[tuple]):
    """Yields symbol assignments: one for constant trees, TRIALS for trees with symbols."""
    names: set = set()
    integer_names: set = set()
    for node in nodes:
        collect_symbols(node, names, integer_names)
    names -= integer_names
    for trial in range(TRIALS if names or integer_names else 1):
        env = {name: _symbol_value(ctx, name, trial) for name in names}
        env.update({name: ctx.mpf(3 + _seed(name, trial) % 5) for name in integer_names})
        yield env


EVAL_ERRORS = (EvalError, ArithmeticError, ValueError, TypeError, KeyError, IndexError)


def numeric_equal(a, b, places: int | None) -> bool:
    """Same value at every sampled point (a decimal literal may instead round the other side)."""
    ctx = mp_context()
    agreed = trials = 0
    for env in _assignments(ctx, (a, b)):
        trials += 1
        evaluator = Evaluator(ctx, env)
        try:
            va, vb = evaluator.ev(a), evaluator.ev(b)
        except EVAL_ERRORS:
            continue
        if is_close(ctx, va, vb):
            agreed += 1
        elif (places or 0) >= MIN_ROUNDING_PLACES and not isinstance(va, Matrix) and not isinstance(vb, Matrix):
            tolerance = ctx.mpf(5) * ctx.mpf(10) ** -(places + 1) + abs(vb) * ctx.mpf(10) ** -15
            if abs(va - vb) > tolerance:
                return False
            agreed += 1
        else:
            return False
    return agreed >= min(trials, 2) and agreed > 0


def proportional(d1, d2, positive: bool) -> bool:
    """d1 = c * d2 for one constant c != 0 (c > 0 when `positive`) at every sampled point."""
    ctx = mp_context()
    ratio = None
    agreed = 0
    for env in _assignments(ctx, (d1, d2)):
        evaluator = Evaluator(ctx, env)
        try:
            v1, v2 = evaluator.ev(d1), evaluator.ev(d2)
        except EVAL_ERRORS:
            continue
        if isinstance(v1, Matrix) or isinstance(v2, Matrix):
            return False
        if is_close(ctx, v1, 0) and is_close(ctx, v2, 0):
            continue
        if is_close(ctx, v1, 0) or is_close(ctx, v2, 0):
            return False
        r = v1 / v2
        if ratio is None:
            ratio = r
            if positive and not (is_real(ctx, r) and r > 0):
                return False
        elif not is_close(ctx, r, ratio):
            return False
        agreed += 1
    return agreed >= 2
