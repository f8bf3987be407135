"""The synthetic task's grader: linear equations modulo a small prime, checked by substitution.

A problem reads "3x+4=2 mod 7" (or, with two x terms, "3x+5x+2=1 mod 13"); the answer is the one
x in [0, p) that satisfies it, written "x=5". ``parse_problem`` and ``format_problem`` convert
between that text and (p, x coefficients, constant, right-hand side), ``solve`` gives x, and
``check_synthetic_answer`` is the task's reward. ``score_jax.data.synthetic`` generates the
problems with ``format_problem`` and ``solve``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_PROBLEM = re.compile(r"((?:\d+x\+)+)(\d+)=(\d+) mod (\d+)")
_ASSIGNMENT = re.compile(r"x\s*=\s*(-?\d+)")
_INTEGER = re.compile(r"-?\d+")


def format_problem(p: int, coefficients: tuple[int, ...], constant: int, rhs: int) -> str:
    """(7, (3,), 4, 2) -> "3x+4=2 mod 7"; the inverse of parse_problem."""
    return "".join(f"{a}x+" for a in coefficients) + f"{constant}={rhs} mod {p}"


def parse_problem(text: str) -> tuple[int, tuple[int, ...], int, int]:
    """ "3x+5x+2=1 mod 13" -> (p, x coefficients, constant, right-hand side) = (13, (3, 5), 2, 1).

    Raises:
      ValueError: `text` is not a problem of this task.
    """
    match = _PROBLEM.fullmatch(text)
    if match is None:
        raise ValueError(f"Not a synthetic problem: {text!r}.")
    coefficients = tuple(int(a) for a in match[1].split("x+")[:-1])
    return int(match[4]), coefficients, int(match[2]), int(match[3])


def solve(p: int, coefficients: tuple[int, ...], constant: int, rhs: int) -> int:
    """The x in [0, p) with sum(coefficients) * x + constant = rhs (mod p): solve(*parse_problem(text)).

    Raises:
      ValueError: sum(coefficients) is 0 mod p, so there is no unique solution.
    """
    return (rhs - constant) * pow(sum(coefficients), -1, p) % p


def extract_synthetic_answer(response: str) -> int | None:
    """The final answer of a response: the last "x=<n>", else its last integer; None if neither."""
    assignments = _ASSIGNMENT.findall(response)
    if assignments:
        return int(assignments[-1])
    integers = _INTEGER.findall(response)
    return int(integers[-1]) if integers else None


def check_synthetic_answer(problem: Mapping[str, Any], answer_text: str) -> bool:
    """The task's reward: whether the response's x, in [0, p), satisfies the equation.

    Checks by substitution into the problem text, so it needs only `problem["problem"]`.
    """
    p, coefficients, constant, rhs = parse_problem(problem["problem"])
    x = extract_synthetic_answer(answer_text)
    if x is None or not 0 <= x < p:
        return False
    return (sum(coefficients) * x + constant - rhs) % p == 0
