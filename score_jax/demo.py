"""The offline demo and the pre-registered study: SCoRe against the paper's baselines on a CPU.

Both run on the pair-sum task (`score_jax.data.pair_sum`: find the two numbers of a list that add
up to a target; checking a candidate is cheap, finding one is a search a small model cannot do
reliably in one pass) with a small base model trained in-process on supervised traces that give
it the paper's starting point: it second-guesses right answers more often than it fixes wrong
ones (`score_jax.habit_traces`).

  1. The base model is trained once per workdir (``base/``) and shared by every method and seed:
     like the paper's base model, it is part of the set-up, not of a method.
  2. For each seed, each method in ``demo.methods`` trains a copy of it with the same sample and
     update budget (`METHODS` says how each spends it) and is evaluated greedily on the eval
     split (the test split; ``demo.phase="validation"`` evaluates on the validation split carved
     out of training instead, for the design choices).
  3. ``report.md`` in the workdir: the paper's tables with means and 95% intervals over seeds,
     curves over training, and, for the study, the task's measured properties, the collapse
     diagnostics, Pair-SFT's distribution shift, inference-time scaling and example transcripts
     (`score_jax.demo_report`).

Everything is resumable: finished phases are read back from the workdir, an interrupted training
run resumes from its checkpoint. ``configs/demo.py`` is the quick demo (one seed, base / naive
multi-turn RL / SCoRe); ``configs/demo.py:study`` the whole comparison.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from score_jax import baselines, evaluate, habit_traces, run_setup, sft, train
from score_jax.baselines import collect
from score_jax.checkpoints import manager as ckpt_lib
from score_jax.demo_methods import BASE, METHODS, Method, eval_history, method_config, restore_params, seeds, slug

# The config fields that make the base model: a base read back from a workdir must have been made
# with the same values (the model's shape is checked by the restore itself).
BASE_RECIPE_FIELDS = (
    "demo.first_wrong",
    "demo.revise_digits",
    "demo.revision",
    "demo.complement_rate",
    "demo.traces_per_problem",
    "demo.sft_steps",
    "demo.sft_batch_size",
    "demo.sft_learning_rate",
    "demo.base_seed",
    "data.synthetic_difficulty",
    "data.synthetic_size",
    "data.validation_size",
)


def base_recipe(config) -> dict[str, Any]:
    """{field: value} of `BASE_RECIPE_FIELDS` (tuples as lists, as JSON stores them)."""
    flat = run_setup.flat_config(config)
    return {field: flat[field] for field in BASE_RECIPE_FIELDS}


def train_base_model(config, setup, workdir: str, log: Callable[[str], None]) -> Any:
    """The shared base model: supervised on habit traces (read back from ``base/`` when a previous
    run finished it with the same recipe; a different recipe is refused, naming the fields)."""
    demo = config.demo
    base_dir = os.path.join(workdir, "base")
    recipe = base_recipe(config)
    ckpt = ckpt_lib.Checkpointer(base_dir, max_to_keep=1, async_save=False)
    restored = ckpt.restore_latest(ckpt_lib.abstract_like(setup.params))
    if restored is not None:
        ckpt.close()
        saved = restored[2].get("recipe")
        if saved is None:
            log("base model: read back from a previous run (made before recipes were recorded: not checked)")
            return restored[1]
        changed = {k: (saved.get(k), v) for k, v in recipe.items() if saved.get(k) != v}
        if changed:
            listed = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items())
            raise ValueError(
                f"The base model in {base_dir} was made with a different recipe ({listed}). "
                "Use a fresh --workdir, or the recipe it was made with."
            )
        log("base model: read back from a previous run")
        return restored[1]
    habits = habit_traces.Habits(
        first_wrong=demo.first_wrong,
        revise_digits=tuple(demo.revise_digits),
        revision=demo.revision,
        complement_rate=demo.complement_rate,
    )
    traces = habit_traces.make_traces(
        setup.task.train,
        habits,
        setup.template,
        setup.tokenizer,
        setup.task.preset.correction_instruction,
        demo.traces_per_problem,
        np.random.default_rng(demo.base_seed),
    )
    packed = sft.pack(traces, pad_id=setup.tokenizer.pad_id)
    settings = sft.Settings(
        steps=demo.sft_steps,
        batch_size=demo.sft_batch_size,
        seed=demo.base_seed,
        log_every=max(demo.sft_steps // 10, 1),
    )
    tx = sft.warmup_cosine_adamw(demo.sft_learning_rate, demo.sft_steps)
    log(f"base model: supervised on {len(traces)} habit traces for {demo.sft_steps} steps")
    params = sft.fit(setup, packed, None, settings, tx=tx, label="base model SFT").params
    ckpt.save(0, params, {"traces": len(traces), "recipe": recipe}, force=True)
    ckpt.close()
    return params


def run_method(config, method: Method, setup, base_params, seed: int, run_dir: str) -> tuple[dict, Any]:
    """Trains and evaluates `method` from the base model; returns (final metrics, final params;
    None for Self-Refine, which trains nothing but prompts differently)."""
    c = method_config(config, method, seed)
    if method.kind == "none":
        return evaluate.evaluate(setup, base_params, c)[0], base_params
    policy, reference = run_setup.policy_and_reference(base_params, c.model.reference_dtype)
    method_setup = dataclasses.replace(setup, config=c, params=policy, ref_params=reference)
    if method.kind == "rl":
        result = train.run(c, run_dir, setup=method_setup)
        if result.preempted:
            raise SystemExit(f"{method.name} was preempted after saving; rerun the same command to resume")
        if result.state is not None:
            return result.eval_metrics, result.state.params
        tx = run_setup.optimizer(c)
        return result.eval_metrics, restore_params(run_setup.checkpoint_dir(c, run_dir), base_params, tx)
    rows = baselines.run(c, run_dir, setup=method_setup)
    if method.kind == "self_refine":
        return rows["Self-Refine"], None
    name = {"pair_sft": "Pair-SFT"}.get(method.kind, "STaR in Stage II" if method.star_stage1 else "STaR")
    # The final policy: the last fine-tuning that ran (a round with no kept traces trains nothing),
    # else Stage I's policy (STaR in Stage II), else the base model.
    rounds = ["sft"] if method.kind == "pair_sft" else [f"round_{i}" for i in range(c.baseline.star_iterations, 0, -1)]
    tx = sft.optimizer_from_config(c, c.sft.steps)
    for part in rounds:
        checkpoints = os.path.join(run_dir, part, "checkpoints")
        if os.path.isdir(checkpoints) and os.listdir(checkpoints):
            return rows[name], restore_params(checkpoints, base_params, tx)
    if method.star_stage1:
        stage1 = collect.rl_config(c, f"stage1:{c.baseline.star_stage1_steps}")
        stage1_dir = os.path.join(run_dir, "stage1")
        return rows[name], restore_params(
            run_setup.checkpoint_dir(stage1, stage1_dir), base_params, run_setup.optimizer(stage1)
        )
    return rows[name], base_params


@dataclasses.dataclass
class SeedResults:
    """What one seed produced: {method: {"final": metrics, "history": evals over training, ...}}."""

    seed: int
    methods: dict[str, dict]


def run_seed(config, setup, base_params, workdir: str, seed: int, log, on_trained=None) -> SeedResults:
    """Every method of ``demo.methods`` at `seed` (finished ones are read back from results.json).

    `on_trained(method, params, record, run_dir)` may add entries to a method's record (the study's
    probes) before it is saved; it gets None params for the SFT baselines.
    """
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    os.makedirs(seed_dir, exist_ok=True)
    results_path = os.path.join(seed_dir, "results.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as f:
            results = json.load(f)
    for name in config.demo.methods:
        if name in results:
            continue
        method = METHODS[name]
        run_dir = os.path.join(seed_dir, slug(name))
        start = time.monotonic()
        log(f"seed {seed}: {name}")
        final, params = run_method(config, method, setup, base_params, seed, run_dir)
        record = {"final": final, "history": eval_history(run_dir), "seconds": time.monotonic() - start}
        if on_trained is not None:
            on_trained(method, params, record, run_dir)
        results[name] = record
        log(f"seed {seed}: {name}: Acc@t1={final['acc_t1']:.3f} Acc@t2={final['acc_t2']:.3f}")
        if jax.process_index() == 0:
            with open(results_path, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
    return SeedResults(seed, {name: results[name] for name in config.demo.methods})


def build(config, workdir: str):
    """(the run `Setup` of the first method, the shared base parameters): the task, tokenizer,
    mesh and model once, then the base model."""
    first = method_config(config, METHODS[BASE], seeds(config.demo.seeds)[0])
    setup = run_setup.build(first, workdir)
    if config.demo.phase == "validation":
        # Design choices are made on problems carved out of training, never on the test split.
        setup = dataclasses.replace(setup, task=dataclasses.replace(setup.task, eval=setup.task.validation))
    elif config.demo.phase != "test":
        raise ValueError(f"demo.phase={config.demo.phase!r}: use 'validation' or 'test'")
    return setup


def run(config, workdir: str) -> dict[str, dict[str, float]]:
    """Runs every seed and method, writes ``report.md``; returns the seed-averaged table."""
    from score_jax import demo_probes, demo_report

    os.makedirs(workdir, exist_ok=True)
    if config.demo.compilation_cache and not jax.config.jax_compilation_cache_dir:
        # Every method and seed compiles the same sampler and train steps: compile each once.
        jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    start = time.monotonic()
    is_chief = jax.process_index() == 0

    def log(message):
        if is_chief:
            print(f"[demo {time.monotonic() - start:6.0f}s] {message}", flush=True)

    setup = build(config, workdir)
    base_params = train_base_model(config, setup, workdir, log)
    properties = demo_probes.task_properties(config, setup, base_params, workdir, log) if config.demo.study else None
    per_seed = []
    all_seeds = seeds(config.demo.seeds)
    for i, seed in enumerate(all_seeds):
        on_trained = demo_probes.method_probes(config, setup, base_params) if config.demo.study else None
        per_seed.append(run_seed(config, setup, base_params, workdir, seed, log, on_trained))
        elapsed = time.monotonic() - start
        log(f"seed {seed} done ({i + 1}/{len(all_seeds)}); {elapsed:.0f}s so far")
    rows = demo_report.mean_rows(per_seed, config.demo.methods)
    if is_chief:
        demo_report.write(config, workdir, per_seed, properties, wall_seconds=time.monotonic() - start)
        log(f"report: {os.path.join(workdir, 'report.md')}")
    return rows
