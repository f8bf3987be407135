"""The offline demo: SCoRe versus naive multi-turn RL on a synthetic task, on a CPU, in minutes.

For each seed:
  1. the synthetic task (modular linear equations; `score_jax.data.synthetic`) is generated;
  2. a small base model is trained in-process, supervised on two-attempt traces: each attempt
     writes the reduced equation, then the answer ("3x=5 x=4"); first attempts have a controlled
     error rate, a systematic slip (multiplying instead of dividing) that is common on problems
     with a large divisor; second attempts mostly repeat the first, with occasional fixes and
     breakages: the self-correction habits of real models;
  3. with equal sample and update budgets, naive multi-turn RL (the outcome reward on every
     attempt, no Stage I) and SCoRe (Stage I, then Stage II) train copies of the base model;
  4. the base model and each policy are evaluated greedily on held-out problems.
The report (``report.md``, ``acc_over_training.png``, TensorBoard logs per run) lands in the
workdir. Rerunning the same command resumes: finished phases are read back, not redone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time

import jax
import numpy as np

from score_jax import evaluate, metrics, run_setup, sft, train
from score_jax.checkpoints import manager as ckpt_lib
from score_jax.rewards import synthetic as synthetic_rewards

METHODS = ("naive multi-turn RL", "SCoRe")
_BASE = "base model"


def _parse(problem: str) -> tuple[int, int, int, int]:
    """'3x+4=2 mod 7' -> (a, b, c, p): the demo's problems have one x term."""
    p, coefficients, b, c = synthetic_rewards.parse_problem(problem)
    if len(coefficients) != 1:
        raise ValueError(f"demo problems have one x term; got {problem!r}")
    return coefficients[0], b, c, p


def worked_answer(problem: str, x: int) -> str:
    """An attempt's text: the reduced equation, then the answer: '3x=5 x=4'."""
    a, b, c, p = _parse(problem)
    return f"{a}x={(c - b) % p} x={x}"


def misconception(problem: str) -> int:
    """The base model's systematic slip: multiplying by a instead of dividing by it."""
    a, b, c, p = _parse(problem)
    return (c - b) * a % p


def is_hard(problem: str) -> bool:
    """Problems whose divisor is in the upper half of the residues, where the slip is common."""
    a, _, _, p = _parse(problem)
    return a > p // 2


def make_traces(problems, cfg, template, tokenizer, instruction: str, rng: np.random.Generator):
    """Two-attempt SFT traces: (token ids, loss mask on the model's turns) per trace.

    Attempt 1 reduces the equation correctly, then divides: right with probability
    `first_correct_easy` / `first_correct_hard`, otherwise it makes the systematic slip (multiplying
    instead of dividing). Attempt 2 mostly repeats attempt 1; it fixes a wrong one with probability
    `fix_rate` and breaks a right one (to the slip) with probability `break_rate`.
    """
    eot = tokenizer.token_id(template.end_of_turn)
    traces = []
    for ex in problems:
        answer, slip = int(ex["answer"]), misconception(ex["problem"])
        p_right = cfg.first_correct_hard if is_hard(ex["problem"]) else cfg.first_correct_easy
        for _ in range(cfg.traces_per_problem):
            first = answer if rng.random() < p_right else slip
            u = rng.random()
            if first == answer:
                second = slip if u < cfg.break_rate else first
            else:
                second = answer if u < cfg.fix_rate else first
            ids, mask = [], []
            for chunk, learn in (
                (template.prompt(tokenizer, ex["problem"]), False),
                (tokenizer.encode(worked_answer(ex["problem"], first)) + [eot], True),
                (template.continuation(tokenizer, instruction, closed=True), False),
                (tokenizer.encode(worked_answer(ex["problem"], second)) + [eot], True),
            ):
                ids += chunk
                mask += [learn] * len(chunk)
            traces.append((ids, mask))
    return traces


def _rl_config(config, schedule: str, seed: int):
    c = copy.deepcopy(config)
    with c.unlocked():
        del c["demo"]
    c.seed = seed
    c.rl.schedule = schedule
    c.eval.every_steps = config.demo.eval_every_steps
    return c


def _eval_history(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if "eval/acc_t1" in r]


def _base_model(config, setup, seed_dir: str, seed: int, log) -> object:
    """SFT of the base model (read back from ``base/`` when a previous run finished it)."""
    demo = config.demo
    ckpt = ckpt_lib.Checkpointer(os.path.join(seed_dir, "base"), max_to_keep=1, async_save=False)
    restored = ckpt.restore_latest(ckpt_lib.abstract_like(setup.params))
    if restored is not None:
        log("base model: read back from a previous run")
        ckpt.close()
        return restored[1]
    rng = np.random.default_rng(seed)
    traces = make_traces(
        setup.task.train, demo, setup.template, setup.tokenizer, setup.task.preset.correction_instruction, rng
    )
    packed = sft.pack(traces, pad_id=setup.tokenizer.pad_id)
    settings = sft.Settings(
        steps=demo.sft_steps, batch_size=demo.sft_batch_size, seed=seed, log_every=max(demo.sft_steps // 10, 1)
    )
    tx = sft.warmup_cosine_adamw(demo.sft_learning_rate, demo.sft_steps)
    params = sft.fit(setup, packed, None, settings, tx=tx, label="base model SFT").params
    ckpt.save(0, params, {"traces": len(traces)}, force=True)
    ckpt.close()
    return params


def run_seed(config, workdir: str, seed: int, log) -> dict:
    """One seed of the demo: returns {method: final eval metrics} and eval histories."""
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    os.makedirs(seed_dir, exist_ok=True)
    base_config = _rl_config(config, "stage1:1", seed)
    setup = run_setup.build(base_config, seed_dir)
    base_params = _base_model(config, setup, seed_dir, seed, log)
    results_path = os.path.join(seed_dir, "results.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as f:
            results = json.load(f)
    if _BASE not in results:
        base_metrics, _ = evaluate.evaluate(setup, base_params, base_config)
        results[_BASE] = {"final": base_metrics, "history": []}
        log(f"base model: Acc@t1={base_metrics['acc_t1']:.3f} Acc@t2={base_metrics['acc_t2']:.3f}")
    demo = config.demo
    schedules = {
        "naive multi-turn RL": f"naive_multi_turn:{demo.stage1_steps + demo.stage2_steps}",
        "SCoRe": f"stage1:{demo.stage1_steps},stage2:{demo.stage2_steps}",
    }
    for method in METHODS:
        if method in results:
            continue
        run_dir = os.path.join(seed_dir, method.replace(" ", "_").replace("-", "_").lower())
        rl_config = _rl_config(config, schedules[method], seed)
        policy, reference = run_setup.policy_and_reference(base_params, rl_config.model.reference_dtype)
        method_setup = dataclasses.replace(setup, config=rl_config, params=policy, ref_params=reference)
        log(f"{method}: {schedules[method]}")
        result = train.run(rl_config, run_dir, setup=method_setup)
        if result.preempted:
            raise SystemExit(f"{method} was preempted after saving; rerun the same command to resume the demo")
        results[method] = {"final": result.eval_metrics, "history": _eval_history(run_dir)}
        with open(results_path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    with open(results_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return results


def _mean_table(per_seed: list[dict]) -> dict[str, dict[str, float]]:
    rows = {}
    for method in (_BASE, *METHODS):
        finals = [r[method]["final"] for r in per_seed]
        rows[method] = {k: float(np.mean([f[k] for f in finals])) for k in finals[0]}
    return rows


def _plot(per_seed: list[dict], path: str, seeds, stage1_steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    colours = {"naive multi-turn RL": "tab:orange", "SCoRe": "tab:blue"}
    for ax, key, title in zip(axes, ("eval/acc_t1", "eval/acc_t2"), ("Acc@t1", "Acc@t2")):
        for method in METHODS:
            base = np.mean([r[_BASE]["final"][key.split("/")[1]] for r in per_seed])
            steps = [0] + [h["step"] for h in per_seed[0][method]["history"]]
            values = [base] + [
                float(np.mean([r[method]["history"][i][key] for r in per_seed])) for i in range(len(steps) - 1)
            ]
            ax.plot(steps, values, marker="o", label=method, color=colours[method])
        ax.axvline(stage1_steps, linestyle="--", color="gray", linewidth=1, label="SCoRe: Stage I -> Stage II")
        ax.set_title(f"{title} on held-out problems (mean of {len(seeds)} seed(s))")
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(config, workdir: str) -> dict[str, dict[str, float]]:
    """Runs every seed, writes the report, returns the seed-averaged table."""
    os.makedirs(workdir, exist_ok=True)
    start = time.monotonic()
    seeds = [int(s) for s in str(config.demo.seeds).split(",")]
    is_chief = jax.process_index() == 0

    def log(message):
        if is_chief:
            print(f"[demo {time.monotonic() - start:6.0f}s] {message}", flush=True)

    per_seed = []
    for i, seed in enumerate(seeds):
        log(f"seed {seed} ({i + 1}/{len(seeds)})")
        per_seed.append(run_seed(config, workdir, seed, log))
        elapsed = time.monotonic() - start
        log(f"seed {seed} done; ETA for the remaining seeds {elapsed / (i + 1) * (len(seeds) - i - 1):.0f}s")
    rows = _mean_table(per_seed)
    if is_chief:
        columns = metrics.TABLE_COLUMNS + ("edit_distance_ratio",)
        table = metrics.markdown_table(rows, columns=columns)
        _plot(per_seed, os.path.join(workdir, "acc_over_training.png"), seeds, config.demo.stage1_steps)
        seed_tables = "\n\n".join(
            f"Seed {seed}:\n\n" + metrics.markdown_table({m: r[m]["final"] for m in (_BASE, *METHODS)}, columns)
            for seed, r in zip(seeds, per_seed)
        )
        report = (
            f"# score_jax offline demo\n\nHeld-out synthetic problems, greedy decoding, mean of seeds "
            f"{seeds} (percent).\n\n{table}\n\n![Acc@t1 and Acc@t2 over training](acc_over_training.png)\n\n"
            f"{seed_tables}\n\nWall time: {time.monotonic() - start:.0f} s.\n"
        )
        with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
            f.write(report)
        print(table, flush=True)
        log(f"report: {os.path.join(workdir, 'report.md')}")
    return rows
