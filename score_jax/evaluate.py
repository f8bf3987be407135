"""Greedy two-attempt evaluation: the paper's metric table for a policy on a test split.

    python -m score_jax.evaluate --workdir=$WORKDIR [--config.eval.num_examples=100] \
        [--checkpoint=$WORKDIR/checkpoints] [--scaling_budget=32]

Without ``--config`` the run's own settings are used (``$WORKDIR/config.json``, which training
writes), and ``--config.FIELD=VALUE`` overrides apply to them; ``--config=configs/FILE.py`` evaluates
with that file's settings instead (for a workdir no training run wrote).

Without ``--checkpoint`` the newest checkpoint of the run (``checkpoint.directory``, else
``$WORKDIR/checkpoints``) is evaluated (or the starting model, if there is none). Prints the
table (Acc@t1, Acc@t2, Delta, i->c, c->i, answer changes, edit distance) and writes
``eval_table.md`` and ``eval_records.jsonl`` to the workdir.

With several processes each evaluates its block of every batch of problems (the rows its devices
hold), grades it, and the texts and grades are gathered, so every process returns the same
metrics and records, in problem order, as a single-process run; only process 0 writes files.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

from score_jax import distributed, metrics, run_setup
from score_jax.episodes import EpisodeSampler


def _eval_sampler(setup: run_setup.Setup, config) -> EpisodeSampler:
    settings = run_setup.sampling_config(config, setup.template, setup.tokenizer, evaluation=True)
    return EpisodeSampler(
        setup.model_config, setup.tokenizer, setup.template, settings, mesh=setup.mesh, rules=setup.rules
    )


def evaluate(setup: run_setup.Setup, params: Any, config, examples=None) -> tuple[dict[str, float], list[dict]]:
    """Greedy K-attempt answers on the eval split; returns (metrics, per-problem records).

    Collective with several processes (every process passes the same `examples`).
    """
    import jax

    task = setup.task
    if examples is None:
        n = len(task.eval) if not config.eval.num_examples else min(config.eval.num_examples, len(task.eval))
        examples = [task.eval[i] for i in range(n)]
    sampler = _eval_sampler(setup, config)
    num_attempts = max(config.rl.num_attempts, 2)
    # A whole number of rows per batch shard (the same global batches on any number of processes).
    shards = distributed.batch_shards(setup.mesh, setup.rules)
    batch_size = -(-min(config.eval.batch_size, len(examples)) // shards) * shards
    index, count = distributed.batch_slot(setup.mesh, setup.rules)
    part = batch_size // count
    chunks = []  # per batch: this process's real rows, each [attempt texts..., attempt grades...]
    for start in range(0, len(examples), batch_size):
        chunk = list(examples[start : start + batch_size])
        real = len(chunk)
        chunk += [chunk[-1]] * (batch_size - real)  # a fixed batch shape: no recompiles on the last batch
        mine = chunk[index * part : (index + 1) * part]
        turns = [task.eval_preset.first_turn(ex) for ex in mine]
        episode = sampler.sample(
            params, turns, task.eval_preset.correction_instruction, rng=jax.random.key(0), num_attempts=num_attempts
        )
        keep = max(0, min(part, real - index * part))
        grades = [task.reward(episode.texts[k][:keep], mine[:keep]) > 0.5 for k in range(num_attempts)]
        chunks.append(
            [[episode.texts[k][r] for k in range(num_attempts)] + [bool(g[r]) for g in grades] for r in range(keep)]
        )
    blocks = dict(distributed.gather_objects([index, chunks]))
    rows = [row for c in range(len(chunks)) for i in range(count) for row in blocks[i][c]]
    texts = [[row[k] for row in rows] for k in range(num_attempts)]
    correct = np.array([[row[num_attempts + k] for row in rows] for k in range(num_attempts)], bool)
    answers = [[task.answer(t) for t in texts[k]] for k in range(num_attempts)]
    result = metrics.self_correction_metrics(correct, answers=answers, texts=texts)
    result["num_problems"] = float(len(examples))
    records = [
        {
            "index": i,
            **{f"attempt{k + 1}": texts[k][i] for k in range(num_attempts)},
            **{f"correct{k + 1}": bool(correct[k, i]) for k in range(num_attempts)},
        }
        for i in range(len(examples))
    ]
    return result, records


def main(argv):
    del argv
    import jax
    from absl import flags
    from etils import epath

    from score_jax import cli

    def log(line):
        if jax.process_index() == 0:
            print(line, flush=True)

    from absl import logging

    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    distributed.initialize(**config.distributed)
    is_chief = jax.process_index() == 0
    if cli.flag_value(sys.argv, "config"):
        log("settings: the --config file given (the training run's own are in its config.json)")
    else:
        log(f"settings: the run's {os.path.join(workdir, run_setup.RUN_CONFIG)} with the --config.* overrides given")
    if flags.FLAGS.scaling_budget and jax.process_count() > 1:
        raise SystemExit("--scaling_budget runs on one process; run the scaling study on a single host")
    os.makedirs(workdir, exist_ok=True)
    setup = run_setup.build(config, workdir)
    params = setup.params
    path = flags.FLAGS.checkpoint or run_setup.checkpoint_dir(config, workdir)
    if epath.Path(path).is_dir() and any(epath.Path(path).iterdir()):
        step, params, _ = run_setup.restore_policy(config, setup.model_config, setup.params, path)
        log(f"evaluating checkpoint step {step} from {path}")
    elif flags.FLAGS.checkpoint:
        raise SystemExit(f"--checkpoint={path} does not exist")
    else:
        log("no checkpoint found: evaluating the starting model")
    result, records = evaluate(setup, params, config)
    if not is_chief:
        return
    table = metrics.markdown_table({"policy": result}, columns=metrics.EVAL_COLUMNS)
    print(table)
    with open(os.path.join(workdir, "eval_table.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(workdir, "eval_records.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    if flags.FLAGS.scaling_budget:
        from score_jax import inference_scaling

        examples = [setup.task.eval[i] for i in range(min(len(setup.task.eval), config.eval.num_examples or 10**9))]
        scaling = inference_scaling.inference_scaling(
            _eval_sampler(setup, config),
            params,
            examples,
            [setup.task.eval_preset.first_turn(ex) for ex in examples],
            setup.task.eval_preset.correction_instruction,
            grade=lambda text, ex: float(setup.task.reward([text], [ex])[0]),
            extract=setup.task.answer,
            rng=jax.random.key(config.seed),
            max_budget=flags.FLAGS.scaling_budget,
        )
        print(scaling.table())


def define_flags(argv: list[str]) -> None:
    """Defines the flags; ``--config`` defaults to the run's config.json when ``--workdir`` has one."""
    from absl import flags
    from ml_collections import config_flags

    from score_jax import cli

    workdir = cli.flag_value(argv, "workdir")
    run_config = None if cli.flag_value(argv, "config") or not workdir else run_setup.load_run_config(workdir)
    cli.drop_unknown_overrides(run_config)
    if run_config is not None:
        config_flags.DEFINE_config_dict("config", run_config, "The run's config (config.json); override fields.")
    else:
        config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
        flags.mark_flags_as_required(["config"])
    flags.DEFINE_string("workdir", None, "Run directory (its settings and checkpoints are used by default).")
    flags.DEFINE_string("checkpoint", "", "Checkpoint directory or step folder to evaluate.")
    flags.DEFINE_integer("scaling_budget", 0, "Largest sample budget of the inference-time scaling study (0 = skip).")
    flags.mark_flags_as_required(["workdir"])


if __name__ == "__main__":
    from score_jax import cli

    define_flags(sys.argv)
    cli.run(main)
