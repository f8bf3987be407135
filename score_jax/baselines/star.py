"""STaR for self-correction (the paper's D+_STaR, run by the ReST-EM protocol).

Each of ``baseline.star_iterations`` rounds (3 in the paper): sample two-attempt traces from the
current policy on the training problems at ``rl.temperature`` (1.0), keep the traces whose second
attempt is right after a wrong first one (x, wrong y1, correct y2), and the correct -> correct ones
too (D+_STaR; ``baseline.star_correct_to_correct=False`` keeps the first kind only, D_STaR), then
fine-tune. As ReST-EM does, every round fine-tunes the starting model (never the previous round's
policy) on the traces collected so far (``baseline.star_accumulate``; False: this round's only);
the fine-tuned model samples the next round. The loss is on y2 (`collect` says why).

With ``baseline.star_stage1_steps > 0`` this is the paper's ablation "STaR instead of REINFORCE in
Stage II": Stage I by RL (``rl.schedule = stage1:N``, in ``workdir/stage1``), then the STaR rounds
start from the Stage I policy.

Writes ``round_<i>/`` (traces.npz, checkpoints, metrics) per round, and the evaluation table
(``eval_table.md``: the starting model(s) and STaR) to the workdir; reruns resume.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from score_jax import run_setup, sft, train
from score_jax.baselines import collect
from score_jax.checkpoints import manager as ckpt_lib
from score_jax.rl import train_step as step_lib


def select(correct: np.ndarray, correct_to_correct: bool = True) -> np.ndarray:
    """Indices of the traces STaR keeps, from per-attempt grades `correct` [2, N]: attempt 2 right
    after a wrong attempt 1, plus (with `correct_to_correct`) attempt 2 right after a right one."""
    correct = np.asarray(correct, bool)
    if correct.ndim != 2 or correct.shape[0] != 2:
        raise ValueError(f"correct must be [2 attempts, traces], got shape {correct.shape}")
    first, second = correct
    return np.nonzero(second & (~first | correct_to_correct))[0]


def traces(samples: collect.Samples, template, tokenizer, instruction: str, correct_to_correct: bool = True):
    """The (x, y1, instruction, y2) traces of the rows `select` keeps, with the loss on y2."""
    return [
        collect.two_attempt_trace(
            template, tokenizer, samples.prompts[r], samples.first[r], instruction, samples.second[r]
        )
        for r in select(samples.correct, correct_to_correct)
    ]


def stage1_policy(setup, config, run_dir: str):
    """(the policy, its evaluation) after ``baseline.star_stage1_steps`` of Stage I RL in `run_dir`
    (`score_jax.train.run`, resumed or read back when a previous call got that far)."""
    stage1 = collect.rl_config(config, f"stage1:{config.baseline.star_stage1_steps}")
    result = train.run(stage1, run_dir, setup=dataclasses.replace(setup, config=stage1))
    if result.preempted:
        raise SystemExit("Stage I was preempted after saving; rerun the same command to resume")
    if result.state is not None:
        return result.state.params, result.eval_metrics
    # Finished by an earlier call: its last checkpoint holds the final policy.
    abstract = ckpt_lib.abstract_like(step_lib.init_train_state(setup.params, run_setup.optimizer(stage1)))
    _, state, _ = ckpt_lib.restore_from_path(run_setup.checkpoint_dir(stage1, run_dir), abstract)
    return state.params, result.eval_metrics


def run(config, workdir: str, setup=None) -> dict[str, dict[str, float]]:
    """STaR rounds (after Stage I when ``baseline.star_stage1_steps``), then the evaluation table."""
    setup, rows = collect.begin(config, workdir, setup)
    b = config.baseline
    start = setup.params
    if b.star_stage1_steps:
        start, stage1_metrics = stage1_policy(setup, config, os.path.join(workdir, "stage1"))
        rows["Stage I (RL)"] = collect.evaluated(workdir, "Stage I (RL)", lambda: stage1_metrics)
    policy, kept = start, []
    instruction = setup.task.preset.correction_instruction
    for i in range(1, b.star_iterations + 1):
        round_dir = os.path.join(workdir, f"round_{i}")
        saved = os.path.join(round_dir, "traces.npz")
        if os.path.exists(saved):  # a rerun: this round's traces were collected before
            kept = sft.unpack(sft.load_packed(saved))
        else:
            problems = collect.training_problems(setup, config, i)
            samples = collect.sample(
                setup, config, policy, problems, jax.random.fold_in(jax.random.key(config.seed), i)
            )
            new = traces(samples, setup.template, setup.tokenizer, instruction, b.star_correct_to_correct)
            kept = kept + new if b.star_accumulate else new
            if jax.process_index() == 0:
                print(f"[star] round {i}: kept {len(new)} of {len(samples.first)} traces; training on {len(kept)}")
        policy = collect.fine_tune(setup, config, start, kept, round_dir)
    name = "STaR in Stage II" if b.star_stage1_steps else "STaR"
    rows[name] = collect.evaluated(workdir, name, lambda: collect.evaluate_policy(setup, config, policy))
    collect.write_table(workdir, rows)
    return rows
