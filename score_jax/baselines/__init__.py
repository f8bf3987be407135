"""The paper's baselines as training paths, chosen by ``config.method``:

  self_refine  Self-Refine: the base model answers, critiques its answer, revises (inference only)
  star         STaR (D+_STaR, ReST-EM rounds); after Stage I RL with baseline.star_stage1_steps
  pair_sft     Pair-SFT (D_SFT, Welleck et al.): wrong response -> random correct response pairs

``method = "rl"`` (the default) is SCoRe and the multi-turn RL baselines (`score_jax.train`).
Each writes the paper's table for its method and the base model to ``workdir/eval_table.md``;
configs/baselines_math.py and configs/baselines_code.py set them up.
"""

from __future__ import annotations

import importlib

from score_jax import config as config_lib

BASELINES = ("self_refine", "star", "pair_sft")


def run(config, workdir: str, setup=None) -> dict[str, dict[str, float]]:
    """Runs the baseline ``config.method``; returns its table rows ({row: metrics})."""
    if config.method not in BASELINES:
        raise ValueError(f"method={config.method!r} is not a baseline; baselines are {BASELINES}")
    module = importlib.import_module(f"score_jax.baselines.{config.method}")
    return module.run(config, workdir, setup=setup)


def config_variant(options: str, variants: tuple[str, ...], path: str) -> tuple[str, bool]:
    """(the one variant, whether ``runlocal`` is set) of config file `path`'s ``VARIANT[,runlocal]``
    argument; ConfigError naming the choices otherwise."""
    chosen = config_lib.config_options(options, variants + ("runlocal",))
    named = chosen - {"runlocal"}
    if len(named) != 1:
        raise config_lib.ConfigError(f"choose one of {variants} ({path}:VARIANT[,runlocal]), got {sorted(named)}")
    return named.pop(), "runlocal" in chosen


def runlocal(c):
    """`score_jax.config.runlocal`, plus baseline sizes a CPU runs in a minute: 2 problems, 2
    samples each, 2 STaR rounds (1 after 1 Stage I step, where there is one), 2 SFT updates of 8 traces."""
    c = config_lib.runlocal(c)
    c.baseline.num_problems = 2  # the MBPP fixture's train split has two problems
    c.baseline.samples_per_prompt = 2
    c.baseline.star_stage1_steps = min(c.baseline.star_stage1_steps, 1)
    c.baseline.star_iterations = 1 if c.baseline.star_stage1_steps else 2  # Stage I's run costs the second
    c.sft.batch_size = 8
    c.sft.steps = 2
    c.sft.warmup_steps = 1
    c.sft.checkpoint_every_steps = 1
    return c
