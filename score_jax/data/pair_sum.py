"""The pair-sum task (offline demo and study): find the two numbers of a list that add up to a target.

"13 5 27 8 31 2 to 35" -> "27+8=35". The list holds `list_size` distinct numbers in [1,
max_value]; exactly one of its pairs sums to the target, so the answer is unique. Why this task
(see ``docs/study.md``): a small transformer cannot reliably do the search over pairs in the
one pass before it commits to an answer, while checking a written candidate ("27+8=35" against
"to 35") is one comparison. A second attempt that sees a wrong first answer can tell it is wrong
and try another pair, so self-correction keeps its value at the optimum, as on hard MATH
problems for a capable model. The space of problems (about 10^9 for the default sizes) is far
too large to memorise, so held-out problems test the skill, not recall.

The problems of a split depend only on `seed` (not on the training seed), so every training
seed and every method sees the same train, validation and test problems.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from typing import Any

from score_jax.rewards.pair_sum import format_answer, format_problem


@dataclasses.dataclass(frozen=True)
class PairSumDifficulty:
    """The space problems are drawn from."""

    list_size: int  # numbers in the list
    max_value: int  # numbers are drawn from [1, max_value]


DIFFICULTIES = {"pairs": PairSumDifficulty(list_size=5, max_value=29)}

# The problem set's seed: one fixed train/test split for every run (training seeds vary the rest).
PROBLEM_SEED = 2026


def _draw(rng: random.Random, difficulty: PairSumDifficulty) -> tuple[tuple[int, ...], int, tuple[int, int]] | None:
    numbers = tuple(rng.sample(range(1, difficulty.max_value + 1), difficulty.list_size))
    i, j = sorted(rng.sample(range(difficulty.list_size), 2))
    target = numbers[i] + numbers[j]
    sums = [a + b for a, b in itertools.combinations(numbers, 2)]
    if sums.count(target) != 1:
        return None  # another pair sums to the target too: the answer would not be unique
    return numbers, target, (numbers[i], numbers[j])


def generate_pair_sum(
    num: int, seed: int = PROBLEM_SEED, difficulty: str | PairSumDifficulty = "pairs"
) -> list[dict[str, Any]]:
    """`num` distinct problems; the first k of a call do not depend on `num`.

    Returns:
      Dicts with `id` ("pairs/<index>"), `problem` ("13 5 27 8 31 2 to 35") and `answer`
      ("27+8=35", the pair in list order).
    """
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"Unknown pair-sum difficulty {difficulty!r}; choose from {list(DIFFICULTIES)}.")
        difficulty = DIFFICULTIES[difficulty]
    if difficulty.list_size < 2 or difficulty.max_value < difficulty.list_size:
        raise ValueError(f"{difficulty}: need at least 2 numbers and max_value >= list_size")
    rng = random.Random(seed)
    seen, problems = set(), []
    attempts = 0
    while len(problems) < num:
        attempts += 1
        if attempts > 100 * num + 1000:
            raise ValueError(f"{difficulty} has too few problems with a unique answer for {num}")
        drawn = _draw(rng, difficulty)
        if drawn is None:
            continue
        numbers, target, (a, b) = drawn
        text = format_problem(numbers, target)
        if text in seen:
            continue
        seen.add(text)
        problems.append({"id": f"pairs/{len(problems)}", "problem": text, "answer": format_answer(a, b)})
    return problems
