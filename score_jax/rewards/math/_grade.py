"""The reward on one response: `is_equivalent` of two extracted answers and `grade` of a response."""

from __future__ import annotations

import functools
import re

from score_jax.rewards.math._compare import equiv
from score_jax.rewards.math._extract import extract_answer
from score_jax.rewards.math._limits import MAX_ANSWER_CHARS, MAX_SYMPY_PARSE_CHARS, SYMBOLIC_TIMEOUT_S
from score_jax.rewards.math._normalize import compact, normalize
from score_jax.rewards.math._parser import read_answer
from score_jax.rewards.math._sympy_fallback import load_sympy, sympy_equal
from score_jax.rewards.math._timeout import Timeout, time_limit

_DECIMAL_COMMA_RE = re.compile(r"[-+]?\d+,\d+")


def _decimal_comma_readings(s: str) -> list[str]:
    """`2,74` also reads as 2.74 (decimal comma) when it cannot be a thousands separator."""
    return [s, s.replace(",", ".")] if _DECIMAL_COMMA_RE.fullmatch(s) else [s]


def _equivalent_normalized(pred: str, gold: str) -> bool:
    for p in _decimal_comma_readings(pred):
        for g in _decimal_comma_readings(gold):
            tp, tg = read_answer(p), read_answer(g)
            if tp is None or tg is None:
                continue
            if tp.textual or tg.textual:
                if compact(p).lower() == compact(g).lower():
                    return True
                continue
            if equiv(tp.tree, tg.tree):
                return True
    unparsed = read_answer(pred) is None or read_answer(gold) is None
    if unparsed and max(len(pred), len(gold)) <= MAX_SYMPY_PARSE_CHARS:
        return sympy_equal(pred, gold)
    return False


def _equivalent(pred: str, gold: str) -> bool:
    """is_equivalent without its time limit; raises on failure."""
    if len(pred) > 20 * MAX_ANSWER_CHARS or len(gold) > 20 * MAX_ANSWER_CHARS:
        return pred.strip() == gold.strip()
    p, g = normalize(pred), normalize(gold)
    if not p or not g:
        return False
    if compact(p) == compact(g):
        return True
    if len(p) > MAX_ANSWER_CHARS or len(g) > MAX_ANSWER_CHARS:
        return False
    return _equivalent_normalized(p, g)


def is_equivalent(pred: str, gold: str, *, timeout_s: float = SYMBOLIC_TIMEOUT_S) -> bool:
    """Whether two already extracted answers are mathematically the same.

    Args:
      pred: the model's answer, e.g. "\\dfrac{1}{2}" or "x = 0.5".
      gold: the reference answer, e.g. "1/2".
      timeout_s: hard limit on the whole comparison (normalisation included), in seconds.

    Returns:
      True when equivalent; False otherwise, also on any error or after the time limit.
    """
    if pred is None or gold is None:
        return False
    load_sympy()  # imported once, outside every time limit
    try:
        with time_limit(timeout_s):
            return _equivalent(pred, gold)
    except Timeout:
        return False
    except Exception:  # noqa: BLE001 - any failure of a symbolic step means "not shown equivalent"
        return False


# References repeat across the samples of one prompt; their extraction is cached.
_extract_reference = functools.lru_cache(maxsize=4096)(extract_answer)


def grade(response: str, gold: str, *, timeout_s: float = SYMBOLIC_TIMEOUT_S) -> float:
    """SCoRe's MATH reward: 1.0 if the response's final answer matches the reference, else 0.0.

    Args:
      response: model output (any length).
      gold: reference answer: bare, `$...$`, `\\boxed{...}` or a full solution.
      timeout_s: hard limit on the whole of grading (extraction, normalisation, comparison), in
        seconds; every step is linear in the input or bounded, so one C call cannot outlast it by much.
    """
    load_sympy()  # imported once, outside every time limit
    try:
        with time_limit(timeout_s):
            pred, ref = extract_answer(response), _extract_reference(gold)
            return 1.0 if pred is not None and ref is not None and _equivalent(pred, ref) else 0.0
    except Timeout:
        return 0.0
    except Exception:  # noqa: BLE001 - a reward must never raise
        return 0.0
