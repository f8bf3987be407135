"""The study's methods and how each spends the shared budget (`score_jax.demo` runs them).

`METHODS` names every row of the paper's Tables 2 and 4; `method_config` turns the demo config
into one method's run config at one seed, with equal sample and update budgets.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any

from score_jax.checkpoints import manager as ckpt_lib
from score_jax.rl import train_step as step_lib

BASE = "base model"


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the comparison and how it spends the budget of ``stage1_steps + stage2_steps``
    RL steps of ``rl.prompts_per_step`` x ``rl.samples_per_prompt`` episodes."""

    name: str
    kind: str  # "none" (the base model), "self_refine", "rl", "star", "pair_sft"
    schedule: str = ""  # rl: the schedule, with {s1}, {s2} and {n} = s1 + s2 filled in
    alpha: float | None = None  # rl: replaces rl.alpha (the shaping bonus)
    star_stage1: bool = False  # star: Stage I by RL for s1 steps first, then STaR for the rest


METHODS = {
    m.name: m
    for m in (
        Method(BASE, "none"),
        Method("Self-Refine", "self_refine"),
        Method("STaR", "star"),
        Method("Pair-SFT", "pair_sft"),
        Method("single-turn RL", "rl", "single_turn:{n}"),
        Method("naive multi-turn RL", "rl", "naive_multi_turn:{n}"),
        Method("multi-turn RL (per-attempt rewards)", "rl", "multi_turn:{n}"),
        Method("SCoRe w/o Stage I", "rl", "stage2:{n}"),
        Method("SCoRe w/o shaping", "rl", "stage1:{s1},stage2:{s2}", alpha=0.0),
        Method("SCoRe w/ STaR in Stage II", "star", star_stage1=True),
        Method("SCoRe", "rl", "stage1:{s1},stage2:{s2}"),
    )
}


# The paper's Table 2 (baselines) and Table 4 (ablations), as rows of the study.
TABLE_BASELINES = (BASE, "Self-Refine", "STaR", "Pair-SFT", "SCoRe")
TABLE_ABLATIONS = (
    "single-turn RL",
    "naive multi-turn RL",
    "multi-turn RL (per-attempt rewards)",
    "SCoRe w/o Stage I",
    "SCoRe w/o shaping",
    "SCoRe w/ STaR in Stage II",
    "SCoRe",
)


def slug(name: str) -> str:
    """A method's directory name: 'SCoRe w/o Stage I' -> 'score_wo_stage_i'."""
    keep = "".join(ch if ch.isalnum() else " " for ch in name.lower().replace("w/o", "wo").replace("w/", "w"))
    return "_".join(keep.split())


def seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]."""
    return [int(s) for s in str(text).split(",") if s.strip()]


def method_config(config, method: Method, seed: int):
    """The run config of `method` at `seed`: the shared settings plus the method's budget split."""
    c = copy.deepcopy(config)
    demo = c.demo
    with c.unlocked():
        del c["demo"]
    c.seed = seed
    s1, s2 = demo.stage1_steps, demo.stage2_steps
    n = s1 + s2
    c.eval.every_steps = demo.eval_every_steps
    if method.kind == "rl":
        c.method = "rl"
        c.rl.schedule = method.schedule.format(s1=s1, s2=s2, n=n)
        if method.alpha is not None:
            c.rl.alpha = method.alpha
    elif method.kind in ("star", "pair_sft"):
        # Equal budgets: the RL methods sample n * prompts_per_step problems x samples_per_prompt
        # episodes and make n updates; the SFT baselines sample as many and make as many updates.
        c.method = method.kind
        c.baseline.samples_per_prompt = c.rl.samples_per_prompt
        sft_budget = s2 if method.star_stage1 else n
        c.baseline.star_stage1_steps = s1 if method.star_stage1 else 0
        if method.kind == "star":
            rounds = c.baseline.star_iterations
            c.baseline.num_problems = max(sft_budget * c.rl.prompts_per_step // rounds, 1)
            c.sft.steps = max(sft_budget // rounds, 1)
            c.rl.schedule = f"stage1:{max(s1, 1)}"  # Stage I (RL) before STaR in Stage II
        else:
            c.baseline.num_problems = sft_budget * c.rl.prompts_per_step
            c.sft.steps = sft_budget
    elif method.kind == "self_refine":
        c.method = "self_refine"
    return c


def eval_history(workdir: str) -> list[dict]:
    """The periodic evaluations a training run wrote to ``metrics.jsonl`` (step and eval/* keys)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if "eval/acc_t1" in r]


def restore_params(checkpoint_dir: str, like: Any, tx) -> Any:
    """Final parameters from a training or SFT run's checkpoint directory (its newest step);
    `tx` is the run's optimizer (its state's structure is part of the checkpoint)."""
    abstract = ckpt_lib.abstract_like(step_lib.init_train_state(like, tx))
    return ckpt_lib.restore_from_path(checkpoint_dir, abstract)[1].params
