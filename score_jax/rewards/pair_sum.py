"""The pair-sum task's text format and grader: which two numbers of a list add up to the target?

A problem reads "13 5 27 8 31 to 35": distinct numbers (five in the demo), exactly one pair of which sums to
the target. An attempt answers with that pair and its sum, "27+8=35". Producing the answer is a
search over the list's pairs (10 of five numbers); checking a candidate is one addition and one comparison. That
asymmetry is what gives a second attempt value at the optimum (`score_jax.data.pair_sum`).

The grader is strict, because it is a training reward: the whole attempt must be one answer of
the form "a+b=s"; a and b must be two different numbers of the list, they must add up to the
target, and s must be their true sum. Loose text, a truncated attempt, a number outside the list,
or a right pair with wrong arithmetic earns 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_PROBLEM = re.compile(r"((?:\d+ )+)to (\d+)")
_ANSWER = re.compile(r"(\d+)\+(\d+)=(\d+)")


def format_problem(numbers: tuple[int, ...], target: int) -> str:
    """((13, 5, 27), 35) -> "13 5 27 to 35"; the inverse of parse_problem."""
    return "".join(f"{n} " for n in numbers) + f"to {target}"


def parse_problem(text: str) -> tuple[tuple[int, ...], int]:
    """ "13 5 27 8 to 35" -> ((13, 5, 27, 8), 35).

    Raises:
      ValueError: `text` is not a problem of this task.
    """
    match = _PROBLEM.fullmatch(text)
    if match is None:
        raise ValueError(f"Not a pair-sum problem: {text!r}.")
    return tuple(int(n) for n in match[1].split()), int(match[2])


def format_answer(a: int, b: int) -> str:
    """An attempt's text for the candidate pair (a, b), with its true sum: "27+8=35"."""
    return f"{a}+{b}={a + b}"


def parse_answer(response: str) -> tuple[int, int, int] | None:
    """(a, b, s) of a response that is exactly one answer "a+b=s" (surrounding blanks allowed);
    None for anything else."""
    match = _ANSWER.fullmatch(response.strip())
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def answer_key(response: str) -> str | None:
    """The pair a response names, order-free ("8+27"), or None: what counts as changing the answer."""
    parsed = parse_answer(response)
    return None if parsed is None else "+".join(str(n) for n in sorted(parsed[:2]))


def is_correct(numbers: tuple[int, ...], target: int, response: str) -> bool:
    """Whether `response` names two different numbers of `numbers` summing to `target`, with
    their true sum written."""
    parsed = parse_answer(response)
    if parsed is None:
        return False
    a, b, s = parsed
    return a != b and a in numbers and b in numbers and a + b == target and s == target


def check_pair_sum_answer(problem: Mapping[str, Any], answer_text: str) -> bool:
    """The task's reward: `is_correct` against the problem text `problem["problem"]`."""
    numbers, target = parse_problem(problem["problem"])
    return is_correct(numbers, target, answer_text)
