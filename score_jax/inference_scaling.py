"""The inference-time scaling study (the paper's Fig. 1, right): majority voting vs self-correction.

At a budget of b samples per problem,
compare majority voting over b independent first attempts (temperature 0.7) with majority voting
over the second attempts of b / 2 episodes, each a first attempt corrected once (b samples in
all). Grading and answer extraction are passed in, so this module knows nothing of any task.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import numpy as np

from score_jax.episodes import EpisodeSampler


def majority_vote(texts: Sequence[str], extract: Callable[[str], Hashable | None]) -> str:
    """The first text whose extracted answer is the most common one (ties: earliest answer).

    Texts with no extractable answer do not vote; if none has one, the first text is returned.
    """
    if not texts:
        raise ValueError("majority_vote() needs at least one text")
    answers = [extract(t) for t in texts]
    counts = collections.Counter(a for a in answers if a is not None)
    if not counts:
        return texts[0]
    winner = counts.most_common(1)[0][0]
    return texts[answers.index(winner)]


@dataclasses.dataclass
class ScalingResult:
    """Accuracy (mean grade over problems) per budget of samples per problem."""

    parallel: dict[int, float]  # majority over `budget` first attempts
    corrected: dict[int, float]  # majority over the second attempts of budget / 2 episodes

    def table(self) -> str:
        lines = ["budget  parallel  corrected"]
        for b in sorted(set(self.parallel) | set(self.corrected)):
            par, cor = self.parallel.get(b), self.corrected.get(b)
            lines.append(f"{b:>6}  {'' if par is None else f'{par:.4f}':>8}  {'' if cor is None else f'{cor:.4f}':>9}")
        return "\n".join(lines)


def inference_scaling(
    sampler: EpisodeSampler,
    params: Any,
    examples: Sequence[Any],
    first_turns: Sequence[str],
    instruction: str,
    grade: Callable[[str, Any], float],
    extract: Callable[[str], Hashable | None],
    rng: jax.Array,
    *,
    max_budget: int = 32,
    temperature: float = 0.7,
) -> ScalingResult:
    """Majority voting over parallel samples versus over self-corrected samples, per budget.

    Budgets are the powers of two up to `max_budget` (and `max_budget` itself). Samples are drawn
    once: max_budget / 2 two-attempt episodes plus the rest as single attempts, so the parallel pool
    (every first attempt) holds max_budget samples and the corrected pool max_budget / 2.

    Args:
      examples: one per problem, passed to `grade` untouched.
      first_turns: the first-turn user text of each problem.
      grade: ``grade(text, example) -> float`` in [0, 1].
      extract: ``extract(text) -> answer or None``; equal answers vote together.
      temperature: replaces the sampler's temperature (the paper: 0.7).
    """
    if len(examples) != len(first_turns):
        raise ValueError(f"{len(examples)} examples but {len(first_turns)} first turns")
    if max_budget < 2:
        raise ValueError(f"max_budget={max_budget}: the corrected mode needs a budget of at least 2")
    budgets = sorted({2**i for i in range(max_budget.bit_length()) if 2**i <= max_budget} | {max_budget})
    num_pairs = max_budget // 2
    settings = sampler.settings.replace(temperature=temperature, greedy=False)
    pair_rng, single_rng = jax.random.split(rng)
    pairs = sampler.sample(
        params, first_turns, instruction, rng=pair_rng, num_samples=num_pairs, num_attempts=2, settings=settings
    )
    singles = sampler.sample(
        params,
        first_turns,
        instruction,
        rng=single_rng,
        num_samples=max_budget - num_pairs,
        num_attempts=1,
        settings=settings,
    )

    def per_problem(texts: list[str], n: int) -> list[list[str]]:
        return [texts[i * n : (i + 1) * n] for i in range(len(first_turns))]

    firsts = [
        a + b
        for a, b in zip(per_problem(pairs.texts[0], num_pairs), per_problem(singles.texts[0], max_budget - num_pairs))
    ]
    seconds = per_problem(pairs.texts[1], num_pairs)

    def accuracy(pools: list[list[str]], n: int) -> float:
        return float(np.mean([grade(majority_vote(pool[:n], extract), ex) for pool, ex in zip(pools, examples)]))

    return ScalingResult(
        parallel={b: accuracy(firsts, b) for b in budgets},
        corrected={b: accuracy(seconds, b // 2) for b in budgets if b >= 2},
    )
