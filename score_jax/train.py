"""SCoRe training: Stage I / Stage II multi-turn RL on whatever mesh the config gives.

One step, as data flows (ARCHITECTURE.md):
  prompts (this process's slice) -> n two-attempt episodes per prompt on one KV cache
  -> rewards per attempt (host worker pools) -> stage objective -> advantages
  -> jitted train step (policy and reference log-probs, per-attempt KL, REINFORCE) -> metrics
  -> Orbax checkpoint (state + data-iterator state), periodic greedy evaluation.

`run(config, workdir)` resumes from the newest readable checkpoint in ``workdir/checkpoints``
and returns the final evaluation metrics.

What a run prints (process 0): a "compiling ..." line and its time before the first step, "resumed
from step N" on a resume, one progress line per ``log_every_steps`` naming the stage, a warning when
every group's rewards stay equal (no learning signal), and the evaluation table at the end; a rerun
of a finished run says so and returns its saved evaluation. Every ``samples.every_steps`` a few
episodes go to ``<workdir>/samples.jsonl`` and TensorBoard text.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from score_jax import config as config_lib
from score_jax import (
    distributed,
    episodes,
    evaluate,
    metrics,
    offline_attempts,
    run_setup,
    sharding,
    slot_sampling,
)
from score_jax.checkpoints import manager as ckpt_lib
from score_jax.data import PromptBatches
from score_jax.episodes import Episode
from score_jax.model import lora
from score_jax.rl import estimators, objectives
from score_jax.rl import train_step as step_lib
from score_jax.run_setup import Setup

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The loop.


class _Preemption:
    """Turns SIGTERM into a flag the loop checks after each step (then saves and exits)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, no preemption saves
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        log.warning("SIGTERM: saving a checkpoint after this step, then exiting")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def stage_at(schedule: list[tuple[str, int]], step: int) -> tuple[str, int, int]:
    """(stage, index in schedule, first step of that stage) for a global step."""
    start = 0
    for i, (stage, steps) in enumerate(schedule):
        if step < start + steps:
            return stage, i, start
        start += steps
    return schedule[-1][0], len(schedule) - 1, start - schedule[-1][1]


@dataclasses.dataclass
class RunResult:
    eval_metrics: dict[str, float]  # final greedy evaluation on the eval split (empty if preempted)
    state: Any  # final TrainState (None when the run was already finished; under LoRA its params are the adapters)
    history: list[dict[str, float]]  # per-step training metrics of this process's run
    preempted: bool = False  # stopped by SIGTERM after saving; rerun to resume
    finished_before: bool = False  # the run had finished already: nothing trained, eval.json read back


# Consecutive steps in which every group's rewards are all equal before the run warns of no signal.
NO_SIGNAL_WARN_STEPS = 3


def _say(line: str) -> None:
    """A status line on process 0's stdout (always shown: logging runs at WARNING)."""
    if jax.process_index() == 0:
        print(line, flush=True)


def run(
    config, workdir: str, setup: Setup | None = None, on_step_end=None, allow_config_change: bool = False
) -> RunResult:
    """Trains per ``config.rl.schedule``, resuming from ``workdir``.

    `setup` replaces what `run_setup.build(config, workdir)` would make (e.g. a custom task); `on_step_end`
    is called as ``on_step_end(step, metrics)`` after each step's checkpointing. A resume whose
    training settings differ from the run's config.json raises ConfigError unless
    `allow_config_change` (then the changes are printed and config.json is rewritten).

    Call it under ``if __name__ == "__main__":`` in a script: the MATH and code graders start
    worker processes by spawning, which re-imports the calling script; unguarded, each worker
    would start training again (and fails with spawn tracebacks).
    """
    os.makedirs(workdir, exist_ok=True)
    changes = run_setup.check_resume(config, workdir, allow_config_change)
    for line in changes:
        _say(f"config changed on resume (--allow_config_change): {line}")
    finished = _finished_evaluation(config, workdir)
    if finished is not None:
        _say(
            f"run in {workdir} is finished: all {run_setup.total_steps(config)} steps trained and evaluated "
            f"(eval.json); nothing to do. Evaluate again with python -m score_jax.evaluate --workdir={workdir}"
        )
        return RunResult(finished, None, [], finished_before=True)
    setup = setup or run_setup.build(config, workdir)
    is_chief = jax.process_index() == 0
    run_setup.write_run_config(config, workdir)
    rl, schedule = config.rl, config_lib.stage_schedule(config)
    total_steps = run_setup.total_steps(config)
    tx = run_setup.optimizer(config)
    # Under LoRA the state holds the adapters (the base stays in setup.ref_params, shared, frozen).
    state = step_lib.init_train_state(lora.trainable(setup.model_config, setup.params), tx)
    lora_base = None if setup.model_config.lora is None else run_setup.lora_base(config, setup.ref_params)

    def policy(trained):
        """The policy's whole parameter tree from the state's (the adapters over the base, under LoRA)."""
        return lora.policy_params(setup.model_config, setup.ref_params, trained)

    # Each process reads the prompts of the rows its devices hold: its block of every global batch.
    slot, slots = distributed.batch_slot(setup.mesh, setup.rules)
    if rl.prompts_per_step % slots:
        raise config_lib.ConfigError(
            f"rl.prompts_per_step={rl.prompts_per_step} does not split into the {slots} "
            f"blocks of rows that mesh.shape={tuple(config.mesh.shape)} puts on "
            "different processes; make it a multiple of {slots}"
        )
    batches = PromptBatches(
        setup.task.train,
        batch_size=rl.prompts_per_step // slots,
        seed=config.seed,
        process_index=slot,
        process_count=slots,
    )
    checkpointer = ckpt_lib.Checkpointer(
        run_setup.checkpoint_dir(config, workdir), config.checkpoint.max_to_keep, config.checkpoint.async_save
    )

    start_step = 0
    restored = checkpointer.restore_latest(ckpt_lib.abstract_like(state))
    if restored is not None:
        start_step, state, extra = restored
        if lora_base is not None:
            run_setup.check_lora_base(extra, lora_base, checkpointer.directory)
        batches.set_state(extra["data"])
        checkpointer.best_metric = extra.get("best_metric")
        _say(f"resumed from step {start_step} of {total_steps} in {workdir}")
    elif rl.init_from:
        _, init_state, extra = ckpt_lib.restore_from_path(rl.init_from, ckpt_lib.abstract_like(state))
        if lora_base is not None:
            run_setup.check_lora_base(extra, lora_base, rl.init_from)
        state = step_lib.init_train_state(init_state.params, tx)
        _say(f"policy initialised from {rl.init_from}")

    shardings = jax.tree.map(lambda x: x.sharding, state)
    ref_shardings = jax.tree.map(lambda x: x.sharding, setup.ref_params)
    writer = metrics.MetricWriter(workdir, enabled=is_chief)
    progress = metrics.Progress(total_steps, label="train", enabled=is_chief)
    sampler_class = {"static": episodes.EpisodeSampler, "slots": slot_sampling.SlotEpisodeSampler}[rl.sampler]
    sampler = sampler_class(
        setup.model_config,
        setup.tokenizer,
        setup.template,
        run_setup.sampling_config(config, setup.template, setup.tokenizer),
        mesh=setup.mesh,
        rules=setup.rules,
    )
    train_steps: dict[tuple[str, int], Any] = {}
    learning_rate = run_setup.learning_rate_schedule(config)
    no_signal_steps = 0
    history: list[dict[str, float]] = []
    eval_metrics: dict[str, float] = {}

    config_json = json.loads(config.to_json_best_effort())
    # Reference scoring for KL-in-reward, compiled once for the run.
    score_fn = (
        step_lib.make_score_fn(
            setup.ref_config, logits_chunk_tokens=config.optim.logits_chunk_tokens, temperature=rl.temperature
        )
        if rl.kl_in_reward
        else None
    )

    def extra_state(step: int, stage: str, step_metrics: dict) -> dict:
        extra = {
            "data": batches.get_state(),
            "step": step,
            "stage": stage,
            "seed": config.seed,
            "config": config_json,
            "metrics": {k: float(v) for k, v in step_metrics.items() if np.ndim(v) == 0},
        }
        return extra if lora_base is None else dict(extra, lora_base=lora_base)

    with _Preemption() as preemption, sharding.use_sharding(setup.mesh, setup.rules):
        step_metrics: dict[str, float] = {}
        for step in range(start_step, total_steps):
            stage, stage_index, _ = stage_at(schedule, step)
            num_attempts = objectives.num_attempts_trained(stage, rl.num_attempts)
            key = (stage, num_attempts)
            compiling = key not in train_steps
            if compiling:
                _say(f"compiling {stage} (sampling and the train step) for step {step + 1} ...")
            t0 = time.perf_counter()
            examples = next(batches)
            user_turns = [setup.task.preset.first_turn(ex) for ex in examples]
            rng = jax.random.fold_in(jax.random.key(config.seed), step)
            episode = sampler.sample(
                policy(state.params),
                user_turns,
                setup.task.preset.correction_instruction,
                num_samples=rl.samples_per_prompt,
                num_attempts=num_attempts,
                rng=rng,
                batches=rl.sampling_batches,
            )
            online_rows = len(episode.prompt_index)
            if rl.offline_first_attempts and stage == "stage2":
                episode = _with_offline_first_attempts(setup, sampler, policy(state.params), episode, user_turns, rng)
            t_sample = time.perf_counter()

            row_examples = [examples[i % len(examples)] for i in episode.prompt_index]
            rewards = np.stack(
                [setup.task.training_reward(episode.texts[k], row_examples) for k in range(num_attempts)]
            )
            if rl.reward_format == "strict":  # an attempt cut off at max_new_tokens earns nothing
                rewards = np.where(episode.truncated[:num_attempts], 0.0, rewards).astype(rewards.dtype)
            # Attempt 1 of an offline row is the base model's: rewarded (for the shaping bonus), not trained.
            episode.attempt_masks[0, online_rows:] = False
            t_grade = time.perf_counter()

            returns = objectives.stage_returns(
                stage, rewards, rl.alpha, rl.turn_discount, rl.stage1_first_attempt_credit
            )
            kl_weights = objectives.stage_kl_weights(stage, num_attempts, rl.beta1, rl.beta2)
            batch, sampler_logp = _train_batch(episode, setup)
            if rl.kl_in_reward:
                # The reference scores the batch once; the train step reuses its log-probs.
                ref_logp = score_fn(setup.ref_params, batch["tokens"], batch["positions"], batch["valid"])
                batch["ref_logprobs"] = jax.device_put(ref_logp, batch["valid"].sharding)
                returns = returns - kl_weights[:, None] * _sequence_kl(setup, batch, sampler_logp)
            advantages = global_advantages(
                rl.advantage_estimator, returns, rl.samples_per_prompt, setup.mesh, setup.rules
            )
            batch["advantages"] = distributed.global_batch(
                np.moveaxis(advantages.astype(np.float32), 0, 1), setup.mesh, setup.rules
            )

            if compiling:
                train_steps[key] = step_lib.make_train_step(
                    setup.model_config,
                    setup.ref_config,
                    tx,
                    kl_estimator=rl.kl_estimator,
                    kl_in_loss=not rl.kl_in_reward,
                    num_microbatches=config.optim.num_microbatches,
                    state_shardings=shardings,
                    ref_shardings=ref_shardings,
                    batch_sharding=jax.tree.map(lambda x: x.sharding, batch),
                    logits_chunk_tokens=config.optim.logits_chunk_tokens,
                    temperature=rl.temperature,
                )
            state, step_out = train_steps[key](state, setup.ref_params, batch, jnp.asarray(kl_weights))
            step_out = distributed.to_host(step_out)
            t_train = time.perf_counter()
            if compiling:
                _say(f"compiled and ran step {step + 1} ({stage}) in {t_train - t0:.1f}s")

            step_metrics = _step_metrics(
                setup,
                episode,
                rewards,
                returns,
                advantages,
                step_out,
                times=(t_sample - t0, t_grade - t_sample, t_train - t_grade),
                stage_index=stage_index,
                train_width=int(batch["tokens"].shape[1]),
                online_rows=online_rows,
            )
            step_metrics["learning_rate"] = float(learning_rate(step))
            no_signal_steps = no_signal_steps + 1 if step_metrics["groups/zero_reward_variance"] == 1.0 else 0
            if no_signal_steps == NO_SIGNAL_WARN_STEPS:
                _say(
                    f"warning: for {no_signal_steps} steps every group of rl.samples_per_prompt="
                    f"{rl.samples_per_prompt} episodes got equal rewards (mean {step_metrics['reward/mean']:.3f}): "
                    "the advantages are zero and the policy learns nothing from the reward. Check the reward "
                    "(samples.jsonl shows episodes), the prompt format, or start from a stronger model"
                )
            if config.samples.every_steps and (step + 1 == 1 or (step + 1) % config.samples.every_steps == 0):
                writer.write_samples(
                    step + 1, _sample_records(episode, user_turns, rewards, stage, online_rows, config.samples.count)
                )
            history.append({"step": step + 1, **step_metrics})
            if (step + 1) % config.log_every_steps == 0 or step + 1 == total_steps:
                writer.write(step + 1, step_metrics, prefix="train/")
                progress.update(
                    step + 1,
                    step_metrics,
                    keys=("reward/t1", "reward/t2", "acc_t1", "acc_t2", "kl/t1", "groups/zero_reward_variance"),
                    label=f"train {stage}",
                )

            stage_ends = stage_at(schedule, step + 1)[1] != stage_index or step + 1 == total_steps
            last_step = step + 1 == total_steps  # evaluated after the loop
            if config.eval.every_steps and (step + 1) % config.eval.every_steps == 0 and not last_step:
                eval_metrics = _evaluate(setup, policy(state.params), config)
                writer.write(step + 1, eval_metrics, prefix="eval/")
            # Saves are collective: every process must take the same branch (the metric is global,
            # and a SIGTERM that reached only some processes stops them all).
            preempted = distributed.any_process(preemption.requested)
            saving = (step + 1) % config.checkpoint.every_steps == 0 or stage_ends or preempted
            if config.checkpoint.select_by == "train_reward":
                selection = float(step_metrics["reward/mean"])
            elif saving:  # validation: Acc@t2 on the carved-out training problems, at each save
                validation, _ = evaluate.evaluate(
                    setup, policy(state.params), config, examples=list(setup.task.validation)
                )
                writer.write(step + 1, validation, prefix="validation/")
                selection = validation["acc_t2"]
            else:
                selection = None
            if selection is not None:
                checkpointer.save_if_best(step + 1, state, extra_state(step + 1, stage, step_metrics), selection)
            if saving:
                checkpointer.save(step + 1, state, extra_state(step + 1, stage, step_metrics), force=True)
            if on_step_end is not None:
                on_step_end(step + 1, step_metrics)
            if preempted:
                checkpointer.wait()
                log.warning("preempted: saved step %d; rerun the same command to resume", step + 1)
                writer.close()
                return RunResult({}, state, history, preempted=True)

        checkpointer.wait()
        eval_metrics = _evaluate(setup, policy(state.params), config)
        writer.write(total_steps, eval_metrics, prefix="eval/")
    writer.close()
    checkpointer.close()
    if is_chief:
        with open(os.path.join(workdir, "eval.json"), "w", encoding="utf-8") as f:
            json.dump(eval_metrics, f, indent=2)
        print(metrics.markdown_table({"policy": eval_metrics}, columns=metrics.EVAL_COLUMNS), flush=True)
    return RunResult(eval_metrics, state, history)


def _finished_evaluation(config, workdir: str) -> dict[str, float] | None:
    """The saved evaluation of a run that already trained every step and evaluated, else None."""
    path = os.path.join(workdir, "eval.json")
    latest = run_setup.latest_checkpoint_step(config, workdir)
    if latest is None or latest < run_setup.total_steps(config) or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _sample_records(episode, user_turns, rewards, stage: str, online_rows: int, count: int) -> list[dict]:
    """Up to `count` of this process's online episodes, one per prompt: prompt, attempts, rewards."""
    rows = list(range(0, online_rows, episode.num_samples))[:count]
    num_attempts = len(rewards)
    return [
        {
            "stage": stage,
            "prompt": user_turns[int(episode.prompt_index[r])],
            "attempts": [episode.texts[k][r] for k in range(num_attempts)],
            "rewards": [float(rewards[k][r]) for k in range(num_attempts)],
            "truncated": [bool(episode.truncated[k][r]) for k in range(num_attempts)],
        }
        for r in rows
    ]


def _with_offline_first_attempts(setup: Setup, sampler, params, episode, user_turns, rng):
    """`episode` followed by as many rows whose attempt 1 the base model (the reference) sampled and
    whose attempt 2 the policy samples now (`score_jax.offline_attempts`); prompt indices of the
    added rows continue after the step's prompts."""
    rl = setup.config.rl
    instruction = setup.task.preset.correction_instruction
    first = sampler.sample(
        # The reference through the policy's sampler: its parameters, or under LoRA the policy's with adapters off.
        setup.ref_params if setup.model_config.lora is None else lora.adapters_off(setup.model_config, params),
        user_turns,
        instruction,
        num_samples=rl.samples_per_prompt,
        num_attempts=1,
        rng=jax.random.fold_in(rng, 1),
        batches=rl.sampling_batches,
    )
    offline = offline_attempts.continue_from(sampler, params, first, instruction, jax.random.fold_in(rng, 2))
    return Episode.concatenate([episode, offline], pad_id=setup.tokenizer.pad_id)


def global_advantages(name: str, returns: np.ndarray, group_size: int, mesh, rules) -> np.ndarray:
    """Advantages [K, B] of this process's rows, every baseline taken over the global batch.

    `returns` [K, B] are this process's rows; they are gathered from every process first, so an
    estimator whose baseline spans the batch (``reinforce``) sees the whole of it and the result
    does not depend on the number of hosts (``rloo`` and ``grpo`` group within a prompt, whose
    samples one process holds, and are unaffected).
    """
    whole = distributed.gather_rows(returns, mesh, rules, axis=1)
    index, _ = distributed.batch_slot(mesh, rules)
    rows = returns.shape[1]
    return estimators.advantages(name, whole, group_size)[:, index * rows : (index + 1) * rows]


def _train_batch(episode, setup: Setup) -> tuple[dict, np.ndarray]:
    """Host episode arrays (this process's rows) -> global device arrays, batch split by the mesh rules.

    Cache slots that no row uses (the unused tail of each attempt's token budget) are dropped and
    the width is rounded up (`episodes.train_width`), so the train step sees short, bucketed sequences.
    Dropping slots invalid in every row (of every process) keeps each attempt token's predecessor
    in place. Returns the batch (tokens, positions, valid, attempt_masks; the caller adds the
    advantages) and the sampler's log-probs [B, W] of this process's rows at the same slots.
    """
    used = np.nonzero(distributed.all_gather(np.asarray(episode.valid).any(axis=0)).any(axis=0))[0]
    width = episodes.train_width(len(used))
    cols = np.concatenate([used, np.full(width - len(used), -1)])
    present = cols >= 0

    def take(x, axis=-1, fill=0):
        out = np.take(np.asarray(x), np.where(present, cols, 0), axis=axis)
        shape = [1] * out.ndim
        shape[axis] = width
        return np.where(present.reshape(shape), out, fill)

    host = {
        "tokens": take(episode.tokens).astype(np.int32),
        "positions": take(episode.positions).astype(np.int32),
        "valid": take(episode.valid, fill=False).astype(bool),
        "attempt_masks": np.moveaxis(take(episode.attempt_masks).astype(np.float32), 0, 1),
    }
    batch = {k: distributed.global_batch(v, setup.mesh, setup.rules) for k, v in host.items()}
    return batch, take(episode.logprobs).astype(np.float32)


def _sequence_kl(setup: Setup, batch: dict, sampler_logp: np.ndarray) -> np.ndarray:
    """Per-attempt sequence KL [K, B] of this process's rows for KL-in-reward: k1 summed over each
    attempt's sampled tokens, the sampler's log-probs minus the reference's (``batch["ref_logprobs"]``)."""
    ref_logp = distributed.local_rows(batch["ref_logprobs"], setup.mesh, setup.rules)
    masks = distributed.local_rows(batch["attempt_masks"], setup.mesh, setup.rules)  # [B, K, W]
    return np.einsum("bkt,bt->kb", masks.astype(np.float64), sampler_logp - ref_logp)


def _step_metrics(
    setup: Setup, episode, rewards, returns, advantages, out, times, stage_index, train_width: int, online_rows: int
) -> dict:
    """Metrics of the whole global batch (rows gathered from every process), the same on every process.

    `train_width`: token slots per row in the train step (the episode's used slots, bucketed).
    Rewards, returns, advantages, lengths and self-correction counts describe the policy's own
    episodes, the first `online_rows` of each process (not those after a base-model attempt 1);
    the loss, KL, entropy and throughput describe the whole step.
    """

    def gather(rows, axis=1):
        return distributed.gather_rows(rows, setup.mesh, setup.rules, axis=axis)

    def online(x):
        return gather(np.asarray(x)[:, :online_rows])

    all_lengths = gather(np.asarray(episode.lengths))
    rewards, returns, advantages = online(rewards), online(returns), online(advantages)
    lengths, truncated = online(episode.lengths), online(episode.truncated)
    k = rewards.shape[0]
    m: dict[str, float] = {"stage": float(stage_index), "reward/mean": float(rewards.sum(0).mean())}
    # Groups (one prompt's samples) in which every reward of every attempt is the same: no signal.
    groups = rewards.reshape(k, -1, episode.num_samples)
    m["groups/zero_reward_variance"] = float(np.all(groups.max(-1) == groups.min(-1), axis=0).mean())
    for i in range(k):
        m[f"reward/t{i + 1}"] = float(rewards[i].mean())
        m[f"return/t{i + 1}"] = float(returns[i].mean())
        m[f"kl/t{i + 1}"] = float(out["kl"][i])
        m[f"kl_k1/t{i + 1}"] = float(out["kl_k1"][i])
        m[f"entropy/t{i + 1}"] = float(out["entropy"][i])
        m[f"length/t{i + 1}"] = float(np.mean(lengths[i]))
        m[f"truncated/t{i + 1}"] = float(np.mean(truncated[i]))
        m[f"advantage_mean/t{i + 1}"] = float(advantages[i].mean())
        m[f"advantage_std/t{i + 1}"] = float(advantages[i].std())
        m[f"advantage_abs_max/t{i + 1}"] = float(np.abs(advantages[i]).max())
    if k >= 2:
        answers = [gather([setup.task.answer(t) for t in episode.texts[i][:online_rows]]) for i in range(2)]
        m.update(metrics.self_correction_metrics(rewards > 0.5, answers=answers))
    else:
        m["acc_t1"] = float((rewards[0] > 0.5).mean())
    m["episodes/online"] = float(lengths.shape[1])
    m["episodes/trained"] = float(all_lengths.shape[1])
    m["loss/pg"] = float(out["loss/pg"])
    m["grad_norm"] = float(out["grad_norm"])
    sample_s, grade_s, train_s = times
    tokens = float(np.sum(all_lengths))
    m.update(
        {
            "time/sample_s": sample_s,
            "time/grade_s": grade_s,
            "time/train_s": train_s,
            "throughput/sampled_tok_s": tokens / max(sample_s, 1e-9),
        }
    )
    flops = step_lib.step_flops(setup.model_config, all_lengths.shape[1], train_width)
    m["throughput/train_flops_per_s"] = flops / max(train_s, 1e-9)
    peak = float(setup.config.peak_flops_per_device)
    if peak:
        m["mfu"] = m["throughput/train_flops_per_s"] / (peak * jax.device_count())
    return m


def _evaluate(setup: Setup, params, config) -> dict[str, float]:
    return evaluate.evaluate(setup, params, config)[0]
