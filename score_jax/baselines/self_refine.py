"""Self-Refine (Madaan et al. 2023), the paper's prompting baseline: inference only.

The base model answers (attempt 1), is asked for feedback on its own answer (the feedback turn),
then for a refinement that uses it: three model turns in one conversation, sampled greedily on
one KV cache (`score_jax.episodes` with a per-gap instruction: feedback, then refinement; prompts
in `score_jax.data.prompts.self_refine_instructions`). It is scored like every other method:
Acc@t1 is the first answer, Acc@t2 the refinement (the feedback is not an answer), with the same
grader and metrics (`score_jax.metrics.self_correction_metrics`).

Writes the evaluation table (``eval_table.md``: the base model with the correction instruction,
and Self-Refine), ``eval.json`` and ``self_refine_records.jsonl`` (answer, feedback and refinement
per problem) to the workdir.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os

import jax
import numpy as np

from score_jax import evaluate, metrics
from score_jax.baselines import collect
from score_jax.data.prompts import self_refine_instructions


def score(records: list[dict], answer) -> dict[str, float]:
    """The paper's metrics of Self-Refine episodes from evaluation records of three attempts:
    attempt 1 is the answer, attempt 3 the refinement (attempt 2, the feedback, is not scored)."""
    texts = [[r[f"attempt{k}"] for r in records] for k in (1, 3)]
    correct = np.array([[r[f"correct{k}"] for r in records] for k in (1, 3)], bool)
    answers = [[answer(t) for t in attempt] for attempt in texts]
    return {
        **metrics.self_correction_metrics(correct, answers=answers, texts=texts),
        "num_problems": float(len(records)),
    }


def run(config, workdir: str, setup=None) -> dict[str, dict[str, float]]:
    """Evaluates the base model with the correction instruction and with Self-Refine."""
    setup, rows = collect.begin(config, workdir, setup)
    task = setup.task
    # Three turns whose two gaps carry the feedback and the refinement instructions.
    preset = dataclasses.replace(
        task.eval_preset, correction_instruction=self_refine_instructions(task.eval_preset.task)
    )
    refine_setup = dataclasses.replace(setup, task=dataclasses.replace(task, eval_preset=preset))
    refine_config = copy.deepcopy(config)
    refine_config.rl.num_attempts = 3

    def self_refine():
        _, records = evaluate.evaluate(refine_setup, setup.params, refine_config)
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "self_refine_records.jsonl"), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        return score(records, task.answer)

    rows["Self-Refine"] = collect.evaluated(workdir, "Self-Refine", self_refine)
    collect.write_table(workdir, rows)
    return rows
