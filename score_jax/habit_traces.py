"""Two-attempt supervised traces that give the demo's base model the self-correction habits of
real LLMs on the pair-sum task (`score_jax.data.pair_sum`).

The paper's base model (its Table 1: Acc@t1 52.6, Acc@t2 41.4, c->i 15.8 vs i->c 4.6) changes
its answer often when asked to check it, and mostly for the worse: it cannot tell its right
answers from its wrong ones, and second-guesses both. The traces reproduce that profile:

* Attempt 1 names the answer, except with probability `first_wrong` a near miss: one number of
  the right pair with another number of the list (what a slip in the search looks like).
* Attempt 2 repeats attempt 1, except on problems whose target ends in one of `revise_digits`,
  where it revises, in one of two ways (`revision`):
  - "next" (second-guessing): it keeps attempt 1's first number and swaps the second for the
    next number of the list (the next after it, cyclically, skipping the first). That swap breaks
    every right answer and fixes a near miss only when the swapped-in number happens to be the
    partner, so the base model's greedy second attempt shows c->i well above i->c, and almost
    never fixes anything.
  - "research" (searching again): it names another pair than attempt 1's, found by a fresh
    search that succeeds as often as attempt 1's (1 - `first_wrong`) and otherwise is a near
    miss. Another pair than a right one is always wrong, so right answers still break, but in the
    traces wrong ones get fixed too. (A model trained on them need not inherit that: its second
    search tends to fail where its first did; docs/study_1.md, the last section.)
  The rule depends on what the model can see (the target and its own first answer), so greedy
  decoding follows it.
* With probability `complement_rate`, on any problem, attempt 2 instead keeps the number of
  attempt 1 that belongs to the answer and pairs it with its complement, the target minus it
  (written first, then the complement: "8+27=35"). That fixes every near miss and leaves a right
  answer as it was. It is a minority habit: greedy decoding follows the rule above, but at the
  temperature RL samples at, the base model sometimes fixes its own wrong answers, as real LLMs
  occasionally do; the skill it needs (pick the number whose complement is in the list, subtract)
  is cheap and learnable once the written sum shows the answer is wrong. RL can find and
  strengthen it, or learn to stop revising (docs/study.md).

Every attempt writes its pair's true sum ("27+8=35"), so a wrong pair is visibly wrong against the
target: checking is cheap, and it is up to RL to teach the model to use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from score_jax.rewards import pair_sum


@dataclasses.dataclass(frozen=True)
class Habits:
    """The base model's habits; see the module docstring."""

    first_wrong: float = 0.2  # attempt 1 is a near miss with this probability
    revise_digits: tuple[int, ...] = (1, 4, 7)  # attempt 2 revises when the target ends in one
    revision: str = "next"  # how attempt 2 revises: "next" (second-guess) or "research" (search again)
    complement_rate: float = 0.0  # attempt 2 completes attempt 1's right number with this probability

    def __post_init__(self):
        if self.revision not in REVISIONS:
            raise ValueError(f"revision={self.revision!r}: choose one of {REVISIONS}")
        if not 0.0 <= self.complement_rate <= 1.0:
            raise ValueError(f"complement_rate={self.complement_rate} must be a probability in [0, 1]")


REVISIONS = ("next", "research")


def answer_pair(example: dict[str, Any]) -> tuple[int, int]:
    """The (a, b) of the problem's answer, in list order."""
    a, b, _ = pair_sum.parse_answer(example["answer"])
    return a, b


def near_miss(numbers: Sequence[int], pair: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """One number of `pair` with another number of the list, in list order: a wrong pair when
    `pair` is the unique answer."""
    keep = pair[rng.integers(2)]
    other = [n for n in numbers if n not in pair]
    swap = other[rng.integers(len(other))]
    return tuple(sorted((keep, swap), key=numbers.index))


def second_guess(numbers: Sequence[int], pair: tuple[int, int]) -> tuple[int, int]:
    """`pair` with its second number swapped for the next number of the list (cyclically),
    skipping the first: the base model's revision."""
    a, b = pair
    i = numbers.index(b)
    for step in range(1, len(numbers)):
        candidate = numbers[(i + step) % len(numbers)]
        if candidate != a:
            return a, candidate
    raise ValueError(f"no other number to swap in: {numbers}")


def search_again(
    numbers: Sequence[int], first: tuple[int, int], right: tuple[int, int], habits: Habits, rng: np.random.Generator
) -> tuple[int, int]:
    """Another pair than `first`: the right one when `first` is not it and a fresh search succeeds
    (probability 1 - first_wrong), else a near miss other than `first`."""
    if first != right and rng.random() >= habits.first_wrong:
        return right
    while True:
        candidate = near_miss(numbers, right, rng)
        if candidate != first:
            return candidate


def complete(first: tuple[int, int], right: tuple[int, int], target: int) -> tuple[int, int]:
    """The number of `first` that belongs to the answer `right`, then its complement (`target`
    minus it): the answer, when `first` shares a number with it (a near miss or the answer itself)."""
    kept = first[0] if first[0] in right else first[1]
    if kept not in right:
        raise ValueError(f"{first} shares no number with the answer {right}")
    return kept, target - kept


def revises(target: int, habits: Habits) -> bool:
    """Whether the base model revises its first answer on a problem with this target."""
    return target % 10 in habits.revise_digits


def attempts(example: dict[str, Any], habits: Habits, rng: np.random.Generator) -> tuple[str, str]:
    """(attempt 1, attempt 2) texts of one trace."""
    numbers, target = pair_sum.parse_problem(example["problem"])
    right = answer_pair(example)
    first = near_miss(numbers, right, rng) if rng.random() < habits.first_wrong else right
    # (No draw at rate 0: the traces of a base without the habit stay those of earlier versions.)
    if habits.complement_rate > 0 and rng.random() < habits.complement_rate:
        second = complete(first, right, target)
    elif not revises(target, habits):
        second = first
    elif habits.revision == "next":
        second = second_guess(numbers, first)
    else:
        second = search_again(numbers, first, right, habits, rng)
    return pair_sum.format_answer(*first), pair_sum.format_answer(*second)


def make_traces(
    problems: Sequence[dict[str, Any]],
    habits: Habits,
    template,
    tokenizer,
    instruction: str,
    traces_per_problem: int,
    rng: np.random.Generator,
) -> list[tuple[list[int], list[bool]]]:
    """(token ids, loss mask on the model's turns) for `traces_per_problem` traces per problem."""
    eot = tokenizer.token_id(template.end_of_turn)
    traces = []
    for example in problems:
        for _ in range(traces_per_problem):
            first, second = attempts(example, habits, rng)
            ids, mask = [], []
            for chunk, learn in (
                (template.prompt(tokenizer, example["problem"]), False),
                (tokenizer.encode(first) + [eot], True),
                (template.continuation(tokenizer, instruction, closed=True), False),
                (tokenizer.encode(second) + [eot], True),
            ):
                ids += chunk
                mask += [learn] * len(chunk)
            traces.append((ids, mask))
    return traces
