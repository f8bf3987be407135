"""Pair-SFT (the paper's D_SFT, after Welleck et al. 2023, "Generating Sequences by Learning to
Self-Correct"): fine-tune on (x, wrong response, correction instruction, correct response) pairs.

The base model samples ``baseline.samples_per_prompt`` two-attempt episodes per training problem
at ``rl.temperature`` (1.0); every first and second attempt is a response to its problem. Each
wrong response is paired with a correct response to the same problem drawn at random from all of
them, first and second attempts alike (problems with no correct response give no pairs); with
``baseline.pair_correct_to_correct`` each correct response is paired with a random correct one too
(D+_SFT). The base model is fine-tuned for one epoch (``sft.epochs``) on the pairs, laid out as
two-attempt traces with the loss on the correct response (`collect` says why).

Writes ``sft/`` (traces.npz, checkpoints, metrics) and the evaluation table (``eval_table.md``:
base model and Pair-SFT) to the workdir; reruns resume.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from score_jax.baselines import collect


def make_pairs(
    problem: np.ndarray, correct: np.ndarray, rng: np.random.Generator, correct_to_correct: bool = False
) -> list[tuple[int, int]]:
    """(response, its correction) index pairs over responses with problem ids `problem` [M] and
    grades `correct` [M]: each wrong response (each correct one too, with `correct_to_correct`), in
    order, with a correct response to the same problem drawn uniformly by `rng`."""
    problem, correct = np.asarray(problem), np.asarray(correct, bool)
    if problem.shape != correct.shape or problem.ndim != 1:
        raise ValueError(f"problem {problem.shape} and correct {correct.shape} must be the same [M] shape")
    right = {p: np.nonzero(correct & (problem == p))[0] for p in np.unique(problem)}
    pairs = []
    for i, (p, ok) in enumerate(zip(problem, correct)):
        if (ok and not correct_to_correct) or not len(right[p]):
            continue
        pairs.append((i, int(right[p][rng.integers(len(right[p]))])))
    return pairs


def pair_traces(
    samples: collect.Samples, template, tokenizer, instruction: str, rng: np.random.Generator, correct_to_correct=False
):
    """The (x, response, instruction, its correction) traces of `make_pairs` over the responses of
    `samples`, every first attempt and then every second attempt, with the loss on the correction."""
    prompts, responses = samples.prompts * 2, samples.first + samples.second
    pairs = make_pairs(np.tile(samples.problem, 2), samples.correct.reshape(-1), rng, correct_to_correct)
    return [
        collect.two_attempt_trace(template, tokenizer, prompts[i], responses[i], instruction, responses[j])
        for i, j in pairs
    ]


def run(config, workdir: str, setup=None) -> dict[str, dict[str, float]]:
    """Samples from the base model, pairs, fine-tunes one epoch, writes the evaluation table."""
    setup, rows = collect.begin(config, workdir, setup)
    sft_dir = os.path.join(workdir, "sft")
    traces = []
    if not os.path.exists(os.path.join(sft_dir, "traces.npz")):
        problems = collect.training_problems(setup, config, 0)
        samples = collect.sample(setup, config, setup.params, problems, jax.random.key(config.seed))
        instruction = setup.task.preset.correction_instruction
        rng = np.random.default_rng(config.seed)
        traces = pair_traces(
            samples, setup.template, setup.tokenizer, instruction, rng, config.baseline.pair_correct_to_correct
        )
        if jax.process_index() == 0:
            print(f"[pair_sft] {len(traces)} pairs from {2 * len(samples.first)} responses to {len(problems)} problems")
    policy = collect.fine_tune(setup, config, setup.params, traces, sft_dir)
    rows["Pair-SFT"] = collect.evaluated(workdir, "Pair-SFT", lambda: collect.evaluate_policy(setup, config, policy))
    collect.write_table(workdir, rows)
    return rows
