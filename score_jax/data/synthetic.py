"""A synthetic task for the offline CPU demo: linear equations modulo a small prime.

A problem reads "3x+4=2 mod 7" (or, with two x terms, "3x+5x+2=1 mod 13"); the answer is the one
x in [0, p) that satisfies it, written "x=5". Producing x takes a modular inverse, checking it
takes one substitution: a second attempt can verify the first and, when it fails, try again,
which is the behaviour SCoRe teaches (the paper's section 4: a base model that rarely revises
is what SCoRe must change). Texts stay under 24 characters so that a tiny character-level
transformer learns the task in minutes.

Difficulty sets the primes and the number of x terms; `easy` has few enough distinct problems
(394) that its splits are small. This module generates problems; their text format, solver and
grader are in `score_jax.rewards.synthetic`.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterable, Iterator
from typing import Any

import tensorflow_datasets as tfds

from score_jax.data import files
from score_jax.rewards.synthetic import format_problem, solve


@dataclasses.dataclass(frozen=True)
class SyntheticDifficulty:
    """The space problems are drawn from, uniformly."""

    primes: tuple[int, ...]  # moduli p
    num_terms: tuple[int, ...]  # numbers of x terms on the left-hand side


DIFFICULTIES = {
    "easy": SyntheticDifficulty(primes=(5, 7), num_terms=(1,)),
    "medium": SyntheticDifficulty(primes=(7, 11), num_terms=(1, 2)),
    "hard": SyntheticDifficulty(primes=(11, 13), num_terms=(2,)),
    # The offline demo's: one x term over three primes (3,532 problems), so that held-out
    # problems reuse the small subtraction and division tables the training problems cover.
    "demo": SyntheticDifficulty(primes=(7, 11, 13), num_terms=(1,)),
}


def _problem_space(
    difficulty: SyntheticDifficulty,
) -> Iterator[tuple[int, tuple[int, ...], int, int]]:
    """Every (p, x coefficients, constant, right-hand side) with exactly one solution."""
    for p in difficulty.primes:
        for num_terms in difficulty.num_terms:
            for coefficients in itertools.product(range(1, p), repeat=num_terms):
                if sum(coefficients) % p == 0:  # 0*x = c has no unique solution.
                    continue
                for constant, rhs in itertools.product(range(p), repeat=2):
                    yield p, coefficients, constant, rhs


def generate_synthetic(num: int, seed: int, difficulty: str | SyntheticDifficulty) -> list[dict[str, Any]]:
    """`num` distinct problems drawn uniformly from the difficulty's space, the same for a seed.

    Args:
      num: how many problems.
      seed: the random seed; the first k of `generate_synthetic(n, seed, d)` do not depend on n,
        so disjoint splits are slices of one call.
      difficulty: a name in DIFFICULTIES or a SyntheticDifficulty.

    Returns:
      Dicts with `id` ("<seed>/<index>"), `problem` ("3x+4=2 mod 7") and `answer` ("5").

    Raises:
      ValueError: unknown difficulty, or `num` larger than the number of distinct problems.
    """
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"Unknown difficulty {difficulty!r}; choose from {list(DIFFICULTIES)}.")
        difficulty = DIFFICULTIES[difficulty]
    space = list(_problem_space(difficulty))
    if num > len(space):
        raise ValueError(f"Asked for {num} problems; {difficulty} has only {len(space)}.")
    # Shuffle the whole space rather than `sample(space, num)`, whose draws depend on num.
    random.Random(seed).shuffle(space)
    return [
        {"id": f"{seed}/{i}", "problem": format_problem(*params), "answer": str(solve(*params))}
        for i, params in enumerate(space[:num])
    ]


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    """A difficulty, a seed and split sizes; the test problems never appear in train."""

    difficulty: str = "easy"
    seed: int = 0
    num_train: int = 300
    num_test: int = 64


class Synthetic(files.ManualBuilder, skip_registration=True):
    """Modular linear equations, generated locally: no download."""

    name = "synthetic"
    BUILDER_CONFIGS = [
        SyntheticConfig(
            name="easy",
            difficulty="easy",
            num_train=300,
            num_test=64,
            description="p in {5, 7}, one x term; 394 distinct problems in all.",
        ),
        SyntheticConfig(
            name="medium",
            difficulty="medium",
            num_train=4000,
            num_test=500,
            description="p in {7, 11}, one or two x terms.",
        ),
        SyntheticConfig(
            name="hard",
            difficulty="hard",
            num_train=8000,
            num_test=1000,
            description="p in {11, 13}, two x terms.",
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "problem": tfds.features.Text(),
                    "answer": tfds.features.Text(),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        problems = generate_synthetic(config.num_train + config.num_test, config.seed, config.difficulty)
        return {
            "train": self._generate_examples(problems[: config.num_train]),
            "test": self._generate_examples(problems[config.num_train :]),
        }

    def _generate_examples(self, examples: Iterable[dict[str, Any]]):
        yield from enumerate(examples)
