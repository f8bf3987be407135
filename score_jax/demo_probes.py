"""The study's measurements beyond the final table (`score_jax.demo`, ``demo.study=True``).

* `task_properties`: is the test fair? The base model's profile, how well it tells its wrong
  first answers from its right ones, the first-attempt ceiling (single-turn RL trained for
  ``demo.ceiling_factor`` times the methods' budget), and the Acc@t2 a "check, then retry when
  wrong" policy built on that ceiling model would reach.
* `method_probes`: per trained method, example transcripts, and for Pair-SFT its distribution
  shift (the paper's Fig. 4), for SCoRe inference-time scaling (Fig. 1, right).

Each result is computed once and kept in the workdir (``properties.json``; a method's record in
``seed_N/results.json``), so a resumed study does not redo it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

from score_jax import demo_methods, evaluate, inference_scaling, metrics, offline_attempts, run_setup, train
from score_jax.episodes import EpisodeSampler
from score_jax.rewards import pair_sum
from score_jax.rl import train_step as step_lib


def _examples(setup, n: int) -> list[dict]:
    return [setup.task.eval[i] for i in range(min(n, len(setup.task.eval)))]


def _sampler(setup, config, *, evaluation: bool) -> EpisodeSampler:
    settings = run_setup.sampling_config(config, setup.template, setup.tokenizer, evaluation=evaluation)
    return EpisodeSampler(
        setup.model_config, setup.tokenizer, setup.template, settings, mesh=setup.mesh, rules=setup.rules
    )


def discrimination(records: list[dict], answer) -> dict[str, float]:
    """How a model's greedy second attempt treats its right and its wrong first answers:
    P(changes the answer | attempt 1 right) and P(changes | attempt 1 wrong). A model that can
    tell them apart changes the wrong ones far more often."""
    changed = np.array([answer(r["attempt1"]) != answer(r["attempt2"]) for r in records], bool)
    right = np.array([r["correct1"] for r in records], bool)
    return {
        "p_change_given_right": float(changed[right].mean()) if right.any() else float("nan"),
        "p_change_given_wrong": float(changed[~right].mean()) if (~right).any() else float("nan"),
    }


def visible_errors(records: list[dict], examples: list[dict]) -> dict[str, float]:
    """Whether checking is cheap for this model: the share of its greedy first attempts that write
    their pair's true sum ("a+b=s" with s = a + b), and the share of its wrong first attempts whose
    written sum differs from the target, so that the error shows in the text. A model that copies
    the target after "=" hides its errors, and a second attempt cannot check anything."""
    true_sum = visible = parsed_wrong = parsed = 0
    for record, example in zip(records, examples):
        answer = pair_sum.parse_answer(record["attempt1"])
        if answer is None:
            continue
        a, b, s = answer
        parsed += 1
        true_sum += a + b == s
        if not record["correct1"]:
            parsed_wrong += 1
            visible += s != pair_sum.parse_problem(example["problem"])[1]
    return {
        "writes_true_sum": true_sum / parsed if parsed else float("nan"),
        "wrong_visibly_wrong": visible / parsed_wrong if parsed_wrong else float("nan"),
    }


def check_then_retry(setup, config, params, examples: list[dict], samples: int, rng: jax.Array) -> dict[str, float]:
    """Acc@t2 of the policy "answer greedily; if the answer fails its check, answer again with the
    most frequent other answer among `samples` first attempts at temperature 1" (the check is
    exact here: a written sum against the target), built on `params`' first attempts."""
    task = setup.task
    turns = [task.eval_preset.first_turn(ex) for ex in examples]
    greedy = _sampler(setup, config, evaluation=True).sample(
        params, turns, task.eval_preset.correction_instruction, rng=rng, num_attempts=1
    )
    first = list(greedy.texts[0])
    right = task.reward(first, examples) > 0.5
    sampled = _sampler(setup, config, evaluation=False).sample(
        params, turns, task.eval_preset.correction_instruction, rng=rng, num_attempts=1, num_samples=samples
    )
    retry_right = np.zeros(len(examples), bool)
    for i, ex in enumerate(examples):
        if right[i]:
            continue
        mine = sampled.texts[0][i * samples : (i + 1) * samples]
        counts = collections.Counter(
            task.answer(t) for t in mine if task.answer(t) not in (None, task.answer(first[i]))
        )
        if counts:
            best = counts.most_common(1)[0][0]
            text = next(t for t in mine if task.answer(t) == best)
            retry_right[i] = task.reward([text], [ex])[0] > 0.5
    return {"acc_t1": float(right.mean()), "acc_t2_check_then_retry": float((right | retry_right).mean())}


def sampled_profile(setup, config, params, examples: list[dict], samples: int, rng: jax.Array) -> dict[str, float]:
    """The two-attempt profile at the training temperature, the one RL sees: over `samples`
    episodes of each problem, Acc@t1, Acc@t2, i->c and c->i (shares of all episodes), and the
    share of wrong first attempts the second attempt fixes and of right ones it breaks. A base
    whose fixes are rare next to its breakages gives every RL objective "stop changing" as the
    nearest way up."""
    task = setup.task
    turns = [task.eval_preset.first_turn(ex) for ex in examples]
    episode = _sampler(setup, config, evaluation=False).sample(
        params, turns, task.eval_preset.correction_instruction, rng=rng, num_attempts=2, num_samples=samples
    )
    rows = [examples[i % len(examples)] for i in episode.prompt_index]
    right1, right2 = (task.reward(list(episode.texts[k]), rows) > 0.5 for k in range(2))
    wrong1 = ~right1
    return {
        "samples": float(len(rows)),
        **metrics.self_correction_metrics(np.stack([right1, right2])),
        "fixes_wrong": float((wrong1 & right2).sum() / max(wrong1.sum(), 1)),
        "breaks_right": float((right1 & ~right2).sum() / max(right1.sum(), 1)),
    }


def task_properties(config, setup, base_params, workdir: str, log) -> dict[str, Any]:
    """The task's measured properties (see the module docstring), kept in ``properties.json``."""
    path = os.path.join(workdir, "properties.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    demo_cfg = config.demo
    probe_config = demo_methods.method_config(config, demo_methods.METHODS[demo_methods.BASE], demo_cfg.base_seed)
    base_metrics, records = evaluate.evaluate(setup, base_params, probe_config)
    examples = _examples(setup, demo_cfg.probe_problems)
    log(f"properties: base model Acc@t1={base_metrics['acc_t1']:.3f} Acc@t2={base_metrics['acc_t2']:.3f}")
    props: dict[str, Any] = {
        "base": base_metrics,
        "base_discrimination": discrimination(records, setup.task.answer),
        "base_visible_errors": visible_errors(records, [setup.task.eval[r["index"]] for r in records]),
        "base_sampled": sampled_profile(
            setup, probe_config, base_params, examples, demo_cfg.retry_samples, jax.random.key(demo_cfg.base_seed + 1)
        ),
    }
    # The first-attempt ceiling: single-turn RL for ceiling_factor times the methods' budget.
    n = demo_cfg.ceiling_factor * (demo_cfg.stage1_steps + demo_cfg.stage2_steps)
    ceiling_config = demo_methods.method_config(config, demo_methods.METHODS["single-turn RL"], demo_cfg.base_seed)
    ceiling_config.rl.schedule = f"single_turn:{n}"
    ceiling_config.eval.every_steps = max(n // 6, 1)
    policy, reference = run_setup.policy_and_reference(base_params, ceiling_config.model.reference_dtype)
    ceiling_dir = os.path.join(workdir, "ceiling")
    log(f"properties: first-attempt ceiling, single-turn RL for {n} steps")
    result = train.run(
        ceiling_config,
        ceiling_dir,
        setup=dataclasses.replace(setup, config=ceiling_config, params=policy, ref_params=reference),
    )
    if result.preempted:
        raise SystemExit("the ceiling run was preempted after saving; rerun the same command to resume")
    ceiling_params = (
        result.state.params
        if result.state is not None
        else demo_methods.restore_params(
            run_setup.checkpoint_dir(ceiling_config, ceiling_dir), base_params, run_setup.optimizer(ceiling_config)
        )
    )
    history = demo_methods.eval_history(ceiling_dir)
    props["ceiling_history"] = [{"step": h["step"], "acc_t1": h["eval/acc_t1"]} for h in history]
    props["ceiling"] = result.eval_metrics
    props["ceiling_steps"] = n
    rng = jax.random.key(demo_cfg.base_seed)
    props["check_then_retry"] = {
        "base": check_then_retry(setup, probe_config, base_params, examples, demo_cfg.retry_samples, rng),
        "ceiling": check_then_retry(setup, probe_config, ceiling_params, examples, demo_cfg.retry_samples, rng),
    }
    if jax.process_index() == 0:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(props, f, indent=1)
    return props


def transcripts(records: list[dict], count: int = 3) -> list[dict]:
    """Up to `count` evaluation records, preferring one of each outcome (i->c, c->i, then the rest)."""
    outcome = {
        (False, True): "i->c",
        (True, False): "c->i",
        (True, True): "c->c",
        (False, False): "i->i",
    }
    chosen, seen = [], set()
    for want in ("i->c", "c->i", "i->i", "c->c"):
        for r in records:
            label = outcome[(r["correct1"], r["correct2"])]
            if label == want and label not in seen:
                chosen.append({**r, "outcome": label})
                seen.add(label)
                break
        if len(chosen) == count:
            break
    return chosen


def pair_sft_shift(config, setup, base_params, run_dir: str, examples: list[dict], seed: int) -> list[dict]:
    """Pair-SFT's distribution shift over its training (the paper's Fig. 4): at each kept
    checkpoint, the rate at which the policy corrects (a) the base model's fixed wrong first
    attempts and (b) its own wrong first attempts, both greedy."""
    from score_jax import sft
    from score_jax.checkpoints import manager as ckpt_lib

    c = demo_methods.method_config(config, demo_methods.METHODS["Pair-SFT"], seed)
    task = setup.task
    turns = [task.eval_preset.first_turn(ex) for ex in examples]
    instruction = task.eval_preset.correction_instruction
    sampler = _sampler(setup, c, evaluation=True)
    rng = jax.random.key(0)
    base_first = sampler.sample(base_params, turns, instruction, rng=rng, num_attempts=1)
    base_right = task.reward(list(base_first.texts[0]), examples) > 0.5

    def rates(params) -> dict[str, float]:
        fixed = offline_attempts.continue_from(sampler, params, base_first, instruction, rng)
        fixed_right = task.reward(list(fixed.texts[1]), examples) > 0.5
        own, _ = evaluate.evaluate(setup, params, c, examples=examples)
        wrong_own = 1.0 - own["acc_t1"]
        return {
            "fixed_base_attempts": float((fixed_right & ~base_right).sum() / max((~base_right).sum(), 1)),
            "own_attempts": own["delta_i2c"] / wrong_own if wrong_own > 0 else float("nan"),
        }

    points = [{"step": 0, **rates(base_params)}]
    checkpoint_dir = os.path.join(run_dir, "sft", "checkpoints")
    tx = sft.optimizer_from_config(c, c.sft.steps)
    abstract = ckpt_lib.abstract_like(step_lib.init_train_state(base_params, tx))
    steps = sorted(int(d) for d in os.listdir(checkpoint_dir) if d.isdigit()) if os.path.isdir(checkpoint_dir) else []
    for step in steps:
        params = ckpt_lib.restore_from_path(checkpoint_dir, abstract, step=step)[1].params
        points.append({"step": step, **rates(params)})
    return points


def method_probes(config, setup, base_params):
    """`on_trained` for `score_jax.demo.run_seed`: adds transcripts, and Pair-SFT's shift and
    SCoRe's inference-time scaling, to a method's record."""
    demo_cfg = config.demo
    examples = _examples(setup, demo_cfg.probe_problems)

    def on_trained(method, params, record, run_dir):
        c = demo_methods.method_config(config, method, 0)
        if method.kind == "self_refine":
            path = os.path.join(run_dir, "self_refine_records.jsonl")
            with open(path, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f][: demo_cfg.probe_problems]
            records = [
                {**r, "attempt2": r["attempt3"], "correct2": r["correct3"], "feedback": r["attempt2"]} for r in rows
            ]
        else:
            _, records = evaluate.evaluate(setup, params, c, examples=examples)
        for r in records:
            r["problem"] = examples[r["index"]]["problem"] if r["index"] < len(examples) else ""
        record["transcripts"] = transcripts(records)
        if method.name == "Pair-SFT":
            record["shift"] = pair_sft_shift(config, setup, base_params, run_dir, examples, c.seed)
        if method.name in demo_cfg.scaling_methods and params is not None:
            task = setup.task
            scaling_examples = examples[: demo_cfg.scaling_problems]
            result = inference_scaling.inference_scaling(
                _sampler(setup, c, evaluation=False),
                params,
                scaling_examples,
                [task.eval_preset.first_turn(ex) for ex in scaling_examples],
                task.eval_preset.correction_instruction,
                lambda text, ex: float(task.reward([text], [ex])[0]),
                task.answer,
                jax.random.key(demo_cfg.base_seed),
                max_budget=demo_cfg.scaling_max_budget,
            )
            record["scaling"] = dataclasses.asdict(result)

    return on_trained
