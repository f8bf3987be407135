"""Comparison of answer trees (step 2c of `is_equivalent`): readings, collections, relations, sets of reals."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from score_jax.rewards.math._evaluate import (
    EVAL_ERRORS,
    Evaluator,
    Matrix,
    collect_symbols,
    decimal_places,
    exact_value,
    is_close,
    is_real,
    mp_context,
    numeric_equal,
    proportional,
)
from score_jax.rewards.math._limits import MIN_ROUNDING_PLACES
from score_jax.rewards.math._parser import FLIPPED, WORD_FUNCS, is_label, labelled_value
from score_jax.rewards.math._sympy_fallback import sympy_relation_set

_COLLECTIONS = {"list", "set", "tuple", "interval", "union", "setop", "matrix", "ratio"}
_SET_LIKE = {"interval", "union", "setop"}


def _readings(node, is_pred: bool) -> list[tuple]:
    """The ways to read an answer: itself, the value of `label = value`, the end of a chain.

    Only the prediction reads `expression = value` as its value ("1/2 + 1/6 = 2/3"); a
    reference equation such as `7 = 11a + c` stays an equation.
    """
    readings = [node]
    if node[0] != "rel":
        return readings
    ops, parts = node[1], node[2]
    value = labelled_value(node)
    if value is not None:
        readings.append(value)
    chain_end = (len(parts) >= 3 and all(op == "=" for op in ops)) or (is_pred and ops[-1] == "=")
    if chain_end and parts[-1] not in readings:
        readings.append(parts[-1])
    return readings


def equiv(pred, gold) -> bool:
    return any(_match(p, g) for p in _readings(pred, True) for g in _readings(gold, False))


def _has_pm(node) -> bool:
    if not isinstance(node, tuple) or not node or not isinstance(node[0], str):
        return False
    if node[0] == "pm":
        return True
    if node[0] in _COLLECTIONS or node[0] == "rel":
        return False
    return any(_has_pm(child) for child in node[1:] if isinstance(child, tuple)) or any(
        _has_pm(item)
        for child in node[1:]
        if isinstance(child, tuple) and child and not isinstance(child[0], str)
        for item in child
    )


def _expand_pm(node) -> list[tuple]:
    """`a \\pm b` -> [a + b, a - b]; independent signs for several \\pm (at most 8 values)."""
    if not isinstance(node, tuple) or not node or not isinstance(node[0], str):
        return [node]
    if node[0] == "pm":
        lefts = [None] if node[1] is None else _expand_pm(node[1])
        results = []
        for right in _expand_pm(node[2]):
            for left in lefts:
                for signed in (right, ("neg", right)):
                    results.append(signed if left is None else ("add", (left, signed)))
        return results[:8]
    options = [[]]
    for child in node[1:]:
        if isinstance(child, tuple) and child and isinstance(child[0], str):
            choices = _expand_pm(child)
        elif isinstance(child, tuple):
            combos = [[]]
            for item in child:
                combos = [c + [x] for c in combos for x in _expand_pm(item)][:8]
            choices = [tuple(c) for c in combos]
        else:
            choices = [child]
        options = [o + [c] for o in options for c in choices][:8]
    return [(node[0], *o) for o in options]


def _members(node) -> list[tuple]:
    items = node[1] if node[0] in ("list", "set") else (node,)
    members = []
    for item in items:
        for member in _expand_pm(item) if _has_pm(item) else [item]:
            if member not in members:
                members.append(member)
    return members


def _match(a, b) -> bool:
    """Equality of two readings (pred first, gold second)."""
    if a == b:
        return True
    if a[0] == "pct" or b[0] == "pct":
        if a[0] == b[0]:
            return _match(a[1], b[1])
        inner, other = (a[1], b) if a[0] == "pct" else (b[1], a)
        hundred = ("num", Fraction(100), 0)
        if a[0] == "pct":
            return _match(inner, other) or _match(("div", inner, hundred), other)
        return _match(other, inner) or _match(other, ("div", inner, hundred))
    if a[0] == "rel" or b[0] == "rel":
        return _match_relations(a, b)
    if _has_pm(a) or _has_pm(b):
        return _match_unordered(_members(a), _members(b))
    if a[0] in _COLLECTIONS or b[0] in _COLLECTIONS:
        return _match_collections(a, b)
    return _scalar_equal(a, b)


def _scalar_equal(a, b) -> bool:
    pa, pb = decimal_places(a), decimal_places(b)
    places = pa if pb is None else pb if pa is None else None
    ea, eb = exact_value(a), exact_value(b)
    if ea is not None and eb is not None:
        if ea == eb:
            return True
        return places is not None and places >= MIN_ROUNDING_PLACES and abs(ea - eb) <= Fraction(1, 2 * 10**places)
    if pa is not None and pb is not None:
        return False
    return numeric_equal(a, b, places)


def _match_unordered(xs: list, ys: list) -> bool:
    if len(xs) != len(ys):
        return False
    unused = list(ys)
    for x in xs:
        for k, y in enumerate(unused):
            if equiv(x, y):
                del unused[k]
                break
        else:
            return False
    return True


def _match_ordered(xs: Sequence, ys: Sequence) -> bool:
    return len(xs) == len(ys) and all(equiv(x, y) for x, y in zip(xs, ys))


def _vector(node) -> tuple | None:
    """Entries of a one-row or one-column matrix, or None."""
    rows = node[1]
    if len(rows) == 1:
        return rows[0]
    if all(len(r) == 1 for r in rows):
        return tuple(r[0] for r in rows)
    return None


def _match_collections(a, b) -> bool:
    ka, kb = a[0], b[0]
    if ka in ("list", "set") and kb in ("list", "set"):
        return _match_unordered(_members(a), _members(b))
    if ka == "list" and kb not in _COLLECTIONS:  # one answer in two forms: "15\\frac{39}{40}, or \\frac{639}{40}"
        return all(equiv(x, b) for x in a[1])
    if ka in _SET_LIKE or kb in _SET_LIKE:
        return _match_sets(a, b)
    if ka == kb == "matrix":
        return len(a[1]) == len(b[1]) and all(_match_ordered(ra, rb) for ra, rb in zip(a[1], b[1]))
    if "matrix" in (ka, kb) and (ka not in _COLLECTIONS or kb not in _COLLECTIONS):
        return numeric_equal(a, b, None)  # matrix arithmetic: A + B, A B, 2 A
    if ka == kb and ka in ("tuple", "ratio"):
        return _match_ordered(a[1], b[1])
    sequences = []
    for node in (a, b):
        if node[0] in ("tuple", "list", "set"):
            sequences.append(node[1])
        elif node[0] == "matrix":
            sequences.append(_vector(node))
        elif node[0] in _COLLECTIONS:
            return False
        else:
            sequences.append((node,))
    if sequences[0] is None or sequences[1] is None:
        return False
    return _match_ordered(sequences[0], sequences[1])


def _orient(node) -> tuple[tuple, tuple]:
    """Relation chain written with < and <= where it was written with > and >=."""
    ops, parts = node[1], node[2]
    if all(op in (">", ">=") for op in ops):
        return tuple(FLIPPED[op] for op in reversed(ops)), tuple(reversed(parts))
    return ops, parts


def _match_relations(a, b) -> bool:
    if a[0] == "rel" and b[0] == "rel":
        oa, pa = _orient(a)
        ob, pb = _orient(b)
        if oa == ob:
            if _match_ordered(pa, pb):
                return True
            scalar = not any(p[0] in _COLLECTIONS or _has_pm(p) for p in pa + pb)
            if len(oa) == 1 and oa[0] in ("=", "!=", "<", "<=") and scalar:
                d1 = ("add", (pa[0], ("neg", pa[1])))
                d2 = ("add", (pb[0], ("neg", pb[1])))
                if proportional(d1, d2, positive=oa[0] in ("<", "<=")):
                    return True
    if a[0] == b[0] == "rel":
        inequality = {"<", "<=", ">", ">=", "!=", "in"}
        if set(a[1]) & inequality or set(b[1]) & inequality:
            return _match_sets(a, b)  # x \in [-2, 7] vs -2 <= x <= 7
        return False
    if any(n[0] in _SET_LIKE or n[0] in ("set", "tuple") for n in (a, b)):
        return _match_sets(a, b)  # 0 < f(x) < 1 vs (0, 1)
    return False


# Sets of reals: lists of components (lo, hi, left_open, right_open, lo_node, hi_node).


def _constant(node):
    """Real value of a constant tree, or None."""
    if _has_pm(node) or node[0] in _COLLECTIONS or node[0] == "rel":
        return None
    names: set = set()
    collect_symbols(node, names, names)
    if names:
        return None
    ctx = mp_context()
    try:
        value = Evaluator(ctx, {}).ev(node)
    except EVAL_ERRORS:
        return None
    if isinstance(value, Matrix) or not is_real(ctx, value):
        return None
    return ctx.re(value)


def _set_components(node) -> list | None:
    kind = node[0]
    if kind == "interval" or (kind == "tuple" and len(node[1]) == 2):
        lo_node, hi_node = (node[1], node[2]) if kind == "interval" else node[1]
        left_open, right_open = (node[3], node[4]) if kind == "interval" else (True, True)
        lo, hi = _constant(lo_node), _constant(hi_node)
        if lo is None or hi is None or lo > hi:
            return None
        return [(lo, hi, left_open, right_open, lo_node, hi_node)]
    if kind in ("set", "list"):
        components = []
        for member in _members(node):
            value = _constant(member)
            if value is None:
                return None
            components.append((value, value, False, False, member, member))
        return components
    if kind == "union":
        components = []
        for part in node[1]:
            sub = _set_components(part)
            if sub is None:
                return None
            components.extend(sub)
        return components
    if kind == "rel":
        return _relation_set(node)
    return None


def _canonical_set(components: list) -> list:
    """Sorted, with overlapping or touching components merged."""
    merged: list = []
    for comp in sorted(components, key=lambda c: (c[0], c[2], c[1])):
        if merged:
            lo, hi, lopen, ropen, lo_node, _ = merged[-1]
            touches = comp[0] < hi or (comp[0] == hi and not (ropen and comp[2]))
            if touches:
                if comp[1] > hi or (comp[1] == hi and ropen and not comp[3]):
                    merged[-1] = (lo, comp[1], lopen, comp[3], lo_node, comp[5])
                continue
        merged.append(comp)
    return merged


def _match_sets(a, b) -> bool:
    ca, cb = _set_components(a), _set_components(b)
    if ca is None or cb is None:
        return False
    ca, cb = _canonical_set(ca), _canonical_set(cb)
    if len(ca) != len(cb):
        return False
    ctx = mp_context()
    for x, y in zip(ca, cb):
        if x[2] != y[2] or x[3] != y[3]:
            return False
        for vx, vy, nx, ny in ((x[0], y[0], x[4], y[4]), (x[1], y[1], x[5], y[5])):
            if nx is not None and ny is not None:
                if not _scalar_equal(nx, ny):
                    return False
            elif not is_close(ctx, vx, vy):
                return False
    return True


def _is_variable(node) -> bool:
    """x, a_n or f(x): what `a < x < b` bounds directly (|x| or x^2 needs solving)."""
    return node[0] in ("sym", "idx") or (node[0] == "call" and node[1] not in WORD_FUNCS and is_label(node))


def _ray(ctx, value, node, below: bool, open_end: bool) -> tuple:
    if below:
        return (-ctx.inf, value, True, open_end, ("neg", ("const", "inf")), node)
    return (value, ctx.inf, open_end, True, node, ("const", "inf"))


def _relation_set(node) -> list | None:
    """The real solution set of a relation in one unknown: `x \\in S`, `a < x <= b`, `|z| <= 3`."""
    ops, parts = _orient(node)
    ctx = mp_context()
    if ops == ("in",) and is_label(parts[0]):
        return _set_components(parts[1])
    if all(op in ("<", "<=") for op in ops) and len(parts) in (2, 3):
        values = [_constant(p) for p in parts]
        if len(parts) == 3 and _is_variable(parts[1]) and values[0] is not None and values[2] is not None:
            return [(values[0], values[2], ops[0] == "<", ops[1] == "<", parts[0], parts[2])]
        if len(parts) == 2 and _is_variable(parts[0]) and values[1] is not None:
            return [_ray(ctx, values[1], parts[1], True, ops[0] == "<")]
        if len(parts) == 2 and _is_variable(parts[1]) and values[0] is not None:
            return [_ray(ctx, values[0], parts[0], False, ops[0] == "<")]
    if ops == ("!=",) and _is_variable(parts[0]):
        value = _constant(parts[1])
        if value is not None:
            return [_ray(ctx, value, parts[1], True, True), _ray(ctx, value, parts[1], False, True)]
    return sympy_relation_set(ops, parts)
