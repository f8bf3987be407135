"""What the SFT baselines share: two-attempt samples on the training problems, traces built from
them, fine-tuning from a starting policy, and the evaluation table.

Samples are the model's own token ids, exactly as the sampler drew them (no detokenise-and-
retokenise round trip): per row the prompt, attempt 1 and attempt 2 (each with its stop token
when it stopped), their grades and the problem they answer. A trace for supervised fine-tuning is
``[prompt] [a response] [correction instruction] [a response]``, laid out as the episode sampler
lays out a real episode, with the loss on the last response only: the earlier one is the context
being corrected (for Pair-SFT and for STaR's wrong first attempts it is a wrong answer, which a
corrector must not learn to produce). The paper does not say which tokens its SFT learns; this
is our choice.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from score_jax import distributed, evaluate, metrics, run_setup, sft
from score_jax.episodes import EpisodeSampler

COLUMNS = metrics.TABLE_COLUMNS + ("edit_distance_ratio",)


@dataclasses.dataclass
class Samples:
    """Two-attempt episodes on training problems, rows of every process in problem order.

    prompts[r], first[r], second[r]: token ids of row r's prompt and attempts (stop tokens kept).
    correct [2, R] bool: each attempt's grade. problem [R] int: the problem row r answers.
    """

    prompts: list[list[int]]
    first: list[list[int]]
    second: list[list[int]]
    correct: np.ndarray
    problem: np.ndarray

    def attempt(self, k: int) -> list[list[int]]:
        return (self.first, self.second)[k]


def training_problems(setup, config, round_index: int) -> list[Any]:
    """The problems of one collection round: all training problems, or ``baseline.num_problems``
    of them drawn by a permutation seeded with (seed, round)."""
    train = setup.task.train
    n = config.baseline.num_problems
    if not n or n >= len(train):
        return [train[i] for i in range(len(train))]
    order = np.random.default_rng([config.seed, round_index]).permutation(len(train))[:n]
    return [train[int(i)] for i in order]


def sample(setup, config, params, problems: Sequence[Any], rng: jax.Array) -> Samples:
    """``baseline.samples_per_prompt`` two-attempt episodes per problem from `params`, sampled as RL
    samples (``rl.temperature``; the training prompt preset), ``rl.prompts_per_step`` problems at a
    time. Collective: each process samples the rows its devices hold; every process returns all."""
    settings = run_setup.sampling_config(config, setup.template, setup.tokenizer)
    sampler = EpisodeSampler(
        setup.model_config, setup.tokenizer, setup.template, settings, mesh=setup.mesh, rules=setup.rules
    )
    per_prompt, size = config.baseline.samples_per_prompt, config.rl.prompts_per_step
    slot, slots = distributed.batch_slot(setup.mesh, setup.rules)
    part = size // slots
    rows = []  # per row: [prompt, first, second, correct1, correct2, problem]
    for b, start in enumerate(range(0, len(problems), size)):
        batch = list(problems[start : start + size])
        batch += [batch[-1]] * (size - len(batch))  # one batch shape: the padding rows are dropped
        mine = batch[slot * part : (slot + 1) * part]
        episode = sampler.sample(
            params,
            [setup.task.preset.first_turn(ex) for ex in mine],
            setup.task.preset.correction_instruction,
            rng=jax.random.fold_in(rng, b),
            num_samples=per_prompt,
            num_attempts=2,
            batches=config.rl.sampling_batches,
        )
        kept = max(0, min(part, len(problems) - start - slot * part)) * per_prompt
        row_examples = [mine[i] for i in episode.prompt_index[:kept]]
        grades = [setup.task.reward(episode.texts[k][:kept], row_examples) > 0.5 for k in range(2)]
        problem = start + slot * part + episode.prompt_index[:kept]
        block = [
            [*episode_row(episode, r), bool(grades[0][r]), bool(grades[1][r]), int(problem[r])] for r in range(kept)
        ]
        blocks = dict(distributed.gather_objects([slot, block]))  # a block held by several processes counts once
        rows += [row for i in range(slots) for row in blocks[i]]
    return Samples(
        prompts=[r[0] for r in rows],
        first=[r[1] for r in rows],
        second=[r[2] for r in rows],
        correct=np.array([[r[3] for r in rows], [r[4] for r in rows]], bool).reshape(2, len(rows)),
        problem=np.array([r[5] for r in rows], np.int64),
    )


def episode_row(episode, row: int) -> tuple[list[int], list[int], list[int]]:
    """(prompt, attempt 1, attempt 2) token ids of one episode row, stop tokens kept."""
    masks = np.asarray(episode.attempt_masks[:, row], bool)
    tokens, valid = np.asarray(episode.tokens[row]), np.asarray(episode.valid[row], bool)
    first_slot = int(np.argmax(masks[0]))
    prompt = tokens[:first_slot][valid[:first_slot]]
    return prompt.tolist(), tokens[masks[0]].tolist(), tokens[masks[1]].tolist()


def two_attempt_trace(
    template, tokenizer, prompt: Sequence[int], first: Sequence[int], instruction: str, second: Sequence[int]
) -> sft.Trace:
    """``[prompt] [first] [instruction turn] [second]`` as the episode sampler lays it out (the
    instruction chunk closes the model's turn unless `first` ended with the end-of-turn token),
    with the loss on `second` only."""
    closed = bool(first) and first[-1] == tokenizer.token_id(template.end_of_turn)
    chunk = template.continuation(tokenizer, instruction, closed)
    context = [*prompt, *first, *chunk]
    return [*context, *second], [False] * len(context) + [True] * len(second)


def fine_tune(setup, config, start_params, traces: list[sft.Trace], workdir: str) -> Any:
    """Fine-tunes `start_params` on `traces` (``config.sft``), resumably in `workdir`.

    The traces are written to ``workdir/traces.npz`` first and read back on a rerun (a resumed
    run trains on exactly the traces the first one collected). Returns the fine-tuned parameters,
    or `start_params` when there are no traces.
    """
    path = os.path.join(workdir, "traces.npz")
    if os.path.exists(path):
        data = sft.load_packed(path)
    elif traces:
        data = sft.pack(traces, pad_id=setup.tokenizer.pad_id)
        if jax.process_index() == 0:
            sft.save_packed(path, data)
    else:
        return start_params
    steps = sft.epoch_steps(config, len(data["tokens"]))
    settings = sft.settings_from_config(config, steps)
    tx = sft.optimizer_from_config(config, steps)
    label = os.path.basename(os.path.normpath(workdir))
    return sft.fit(setup, data, workdir, settings, tx=tx, params=start_params, label=label).params


def evaluated(workdir: str, name: str, compute) -> dict[str, float]:
    """`compute()`'s metrics for table row `name`, kept in ``workdir/results.json`` so a rerun
    does not evaluate again."""
    path = pathlib.Path(workdir, "results.json")
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if name not in results:
        results[name] = compute()
        if jax.process_index() == 0:
            path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return results[name]


def evaluate_policy(setup, config, params) -> dict[str, float]:
    """Greedy two-attempt evaluation on the eval split (`score_jax.evaluate`)."""
    return evaluate.evaluate(setup, params, config)[0]


def write_table(workdir: str, rows: dict[str, dict[str, float]]) -> str:
    """Writes the paper's table (``eval_table.md``) and the metrics of every row (``eval.json``),
    prints the table and returns it."""
    table = metrics.markdown_table(rows, columns=COLUMNS)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "eval_table.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        with open(os.path.join(workdir, "eval.json"), "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
        print(table, flush=True)
    return table


def begin(config, workdir: str, setup=None):
    """(the run's `Setup`, built unless given; the table's first row, the base model's metrics),
    after writing ``config.json`` to `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        pathlib.Path(workdir, "config.json").write_text(config.to_json_best_effort(indent=2), encoding="utf-8")
    setup = setup or run_setup.build(config, workdir)
    base = evaluated(workdir, "base model", lambda: evaluate_policy(setup, config, setup.params))
    return setup, {"base model": base}


def rl_config(config, schedule: str):
    """`config` as an RL run with `schedule` (e.g. Stage I before STaR)."""
    c = copy.deepcopy(config)
    c.method = "rl"
    c.rl.schedule = schedule
    return c
