"""MATH answer grading: pull the final answer out of model text and decide if it equals the reference.

The reward r(y, y*) of SCoRe on MATH is 1.0 when the final answer of y matches the reference
answer y*, else 0.0. This module is that reward.

Pipeline
--------
``grade(response, gold)``
  1. ``extract_answer`` on the response and on the gold (a gold may be a bare answer, ``$...$``,
     ``\\boxed{...}`` or a full solution). In order:
       a. the paper's "Final Answer: The final answer is X. I hope it is correct." or the last
          ``\\boxed{}``/``\\fbox{}`` (balanced braces; ``\\boxed 5``), whichever comes later. Boxes
          separated by punctuation or a few words with a connective (", ", "and", "for part (b)
          and") form one list answer;
       b. "the answer is X" / "Answer: X";
       c. a text that is itself an answer ("28 percent", "$1$ and $2$", "\\frac{10}{9}");
       d. the last inline math span or number, whichever comes later.
  2. ``is_equivalent(pred, gold)``:
       a. normalise both strings: double escaping, ``\\left``/``\\right``, spacing commands,
          ``\\dfrac``/``\\tfrac``, ``\\text{}`` wrappers, degrees, dollars, percent words,
          thousands separators, mixed numbers, trailing punctuation; equal strings are equal;
       b. parse both with a small LaTeX parser into a tree of tuples: exact rational literals
          that remember their decimal places, symbols, functions, ``\\pm``, lists, tuples, sets,
          intervals, unions, matrices, ratios, percent, relation chains. Trailing unit words
          ("cm", "\\text{ miles}") are dropped;
       c. compare the trees. Lists and sets are unordered, tuples and matrices ordered, a
          labelled answer ``x = 3``/``(p, q) = (1, 2)``/``f(x) = 1`` also reads as its right
          side, equations match up to a constant factor and inequalities up to a positive one,
          inequalities and intervals meet as sets of reals. Scalars: exact rationals where the
          whole tree is rational; a decimal with at least two places matches an exact value it
          rounds from; otherwise both sides are evaluated at the same pseudo-random points
          with 50-digit mpmath (probabilistic identity testing: fast, and it decides
          ``sec^2 y = tan^2 y + 1`` without sympy.simplify);
       d. sympy only where the evaluator cannot decide: turning an inequality such as
          ``1 <= |z| <= 3/2`` into a set, and ``parse_latex`` (ANTLR) for LaTeX the small
          parser rejects.
     Cheap guards come first (input length, nesting depth, exponent and factorial size, list
     length). Any exception, guard trip or timeout means "not equivalent".
  The whole of ``grade`` (extraction, normalisation, comparison) runs under one hard time limit
  that raises in the calling thread, main or not, between two bytecodes. It cannot interrupt
  one long C call, so no single call may be long: every regex is linear (no ``(...)+$`` that
  retries each start of a long run; such suffixes are stripped by a backward scan), only the
  last 20,000 characters of a response are read, and before sympy builds a number, its size
  is bounded from the unevaluated tree: an exponent counts at the size of what it is built
  from, even hidden under floor, ceil, max or a binomial (``MAX_EXACT_BITS``).
``grade_batch(responses, golds)`` runs ``grade`` in a lazily started pool of spawned worker
processes. A worker that dies, or stays silent on one item past a deadline, is killed and
replaced; its item is retried once on the fresh worker and scores 0.0 if that fails too.
Results keep the input order.

Modules, in pipeline order: ``_extract`` (1), ``_normalize`` (2a), ``_parser`` (2b), ``_evaluate``
and ``_compare`` (2c), ``_sympy_fallback`` (2d), ``_grade`` (``grade``, ``is_equivalent``),
``_pool`` (``grade_batch``); ``_text``, ``_timeout`` and ``_limits`` serve them all.
"""

from score_jax.rewards.math._extract import extract_answer
from score_jax.rewards.math._grade import grade, is_equivalent
from score_jax.rewards.math._limits import SYMBOLIC_TIMEOUT_S, WORKER_TIMEOUT_S
from score_jax.rewards.math._pool import close_pool, grade_batch, pool_worker_pids
from score_jax.rewards.math._sympy_fallback import warm_up

__all__ = [
    "SYMBOLIC_TIMEOUT_S",
    "WORKER_TIMEOUT_S",
    "close_pool",
    "extract_answer",
    "grade",
    "grade_batch",
    "is_equivalent",
    "pool_worker_pids",
    "warm_up",
]
