"""Limits and tolerances of the MATH grader: answer size and nesting, time, exponents, precision."""

from __future__ import annotations

import mpmath

# Answers longer than this (after extraction) are compared as strings only.
MAX_ANSWER_CHARS = 1000
# Answers nested deeper than this (brackets; twice this in parser recursion) are compared as
# strings only.
MAX_NESTING = 40
# Hard limit on one grade() or is_equivalent() call, extraction and normalisation included, in seconds.
SYMBOLIC_TIMEOUT_S = 2.0
# A pool worker silent for this long on one item is killed and replaced, in seconds.
WORKER_TIMEOUT_S = 10.0
# A new pool worker must have imported sympy and be ready within this many seconds.
WORKER_START_TIMEOUT_S = 120.0
# Lists (and groups of boxes) longer than this are compared as strings only.
MAX_LIST_ITEMS = 64
# parse_latex, the fallback for what the small parser rejects, only sees answers this short.
MAX_SYMPY_PARSE_CHARS = 200
# Largest |exponent| the evaluators accept, and largest n for n!.
MAX_EXPONENT = 10**6
MAX_EXACT_EXPONENT = 2000
# Largest exact number (in bits) sympy is let to build; an exponent is sized after it is
# constructed, through whatever function hides it (floor, ceil, max, binomial, ...).
MAX_EXACT_BITS = 100_000
MAX_FACTORIAL = 10**5
# Working precision (decimal digits) and relative tolerance for numeric identity tests.
DPS = 50
REL_TOL = mpmath.mpf(10) ** -25
# A decimal with at least this many places matches an exact value it correctly rounds.
MIN_ROUNDING_PLACES = 2
# Random points per identity test.
TRIALS = 3
