"""Rewards, one grader per task: ``math`` (MATH answers), ``code`` (MBPP/HumanEval in a sandbox), ``synthetic``.

Import the one a task needs (``from score_jax.rewards import math``): this package imports none of them.
"""
