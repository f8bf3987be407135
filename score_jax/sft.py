"""Supervised fine-tuning on traces: next-token cross-entropy on the model's turns, sharded like RL.

A trace is (token ids, loss mask): a whole conversation, the mask marking the tokens the model
should learn to produce (its replies, end-of-turn tokens included). `pack` left-pads traces into
fixed-shape arrays; `TraceBatches` cuts them into global batches in a seeded per-epoch order that
resumes exactly (each process reads the rows its devices hold); `fit` trains on them with the
run's mesh and shardings (`score_jax.run_setup.Setup`), writes metrics and a progress line, saves
Orbax checkpoints (state + data-iterator state) and resumes from the newest one, so a run killed
at any point and restarted ends with the same parameters, bit for bit, as one never stopped.

Users: the offline demo's base model (`score_jax.demo`), and the STaR and Pair-SFT baselines
(`score_jax.baselines`), which fine-tune on traces they sample and filter.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_jax import distributed, episodes, metrics, sharding
from score_jax.checkpoints import manager as ckpt_lib
from score_jax.data import PromptBatches
from score_jax.model import ModelConfig, left_padded_positions
from score_jax.rl import train_step as step_lib
from score_jax.rl.train_step import TrainState

log = logging.getLogger(__name__)

Trace = tuple[Sequence[int], Sequence[bool]]


def pack(sequences: Sequence[Trace], length: int | None = None, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Left-pads (token ids, loss mask) pairs into arrays [N, T]: tokens, positions, valid, loss_mask.

    `length` defaults to the longest trace rounded up to `episodes.train_width`'s multiple (few
    distinct shapes to compile).
    """
    if not sequences:
        raise ValueError("pack() needs at least one trace")
    length = length or episodes.train_width(max(len(t) for t, _ in sequences))
    n = len(sequences)
    tokens = np.full((n, length), pad_id, np.int32)
    loss_mask = np.zeros((n, length), np.float32)
    valid = np.zeros((n, length), bool)
    for i, (ids, mask) in enumerate(sequences):
        if len(ids) != len(mask):
            raise ValueError(f"trace {i} has {len(ids)} tokens but a loss mask of {len(mask)}")
        if len(ids) > length:
            raise ValueError(f"trace {i} has {len(ids)} tokens, more than the packed length {length}")
        tokens[i, length - len(ids) :] = ids
        loss_mask[i, length - len(ids) :] = mask
        valid[i, length - len(ids) :] = True
    positions = np.asarray(left_padded_positions(valid))
    return {"tokens": tokens, "positions": positions, "valid": valid, "loss_mask": loss_mask}


def unpack(data: dict[str, np.ndarray]) -> list[Trace]:
    """Inverse of `pack`: the (token ids, loss mask) of each packed row."""
    valid = np.asarray(data["valid"], bool)
    return [
        (tokens[row].tolist(), (mask[row] > 0).tolist())
        for tokens, mask, row in zip(data["tokens"], data["loss_mask"], valid)
    ]


def save_packed(path: str, data: dict[str, np.ndarray]) -> None:
    """Writes packed traces (`pack`'s arrays) to `path` (.npz) atomically."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **data)
    os.replace(tmp, path)


def load_packed(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


class TraceBatches:
    """Global batches of packed traces, this process's rows of each, in a resumable order.

    Epoch e visits the traces in the permutation seeded by (seed, e) (`score_jax.data.PromptBatches`
    over trace indices); fewer traces than one global batch are repeated to fill it. `get_state` /
    `set_state` resume at the next batch.
    """

    def __init__(self, data: dict[str, np.ndarray], global_batch: int, *, seed: int, mesh, rules):
        n = len(data["tokens"])
        slot, slots = distributed.batch_slot(mesh, rules)
        if global_batch % slots:
            raise ValueError(
                f"sft.batch_size={global_batch} does not split into the {slots} blocks of rows the mesh puts "
                f"on different processes; make it a multiple of {slots}"
            )
        self._data = data
        indices = np.arange(max(n, global_batch)) % n
        self._order = PromptBatches(indices, global_batch // slots, seed=seed, process_index=slot, process_count=slots)
        self.steps_per_epoch = self._order.steps_per_epoch

    def __next__(self) -> dict[str, np.ndarray]:
        rows = np.asarray(next(self._order))
        return {k: v[rows] for k, v in self._data.items()}

    def get_state(self) -> dict:
        return self._order.get_state()

    def set_state(self, state: dict) -> None:
        self._order.set_state(state)


def _loss(params, batch, num_tokens, *, config: ModelConfig, logits_chunk_tokens: int):
    logp = step_lib.token_logprobs(
        config, params, batch["tokens"], batch["positions"], batch["valid"], logits_chunk_tokens=logits_chunk_tokens
    )
    return -jnp.sum(logp * batch["loss_mask"]) / num_tokens


def sft_step(
    state: TrainState,
    batch: dict,
    *,
    config: ModelConfig,
    tx: optax.GradientTransformation,
    num_microbatches: int = 1,
    logits_chunk_tokens: int = 0,
):
    """One cross-entropy update (mean over the batch's learned tokens), gradients accumulated over
    micro-batches; returns (state, metrics: loss, grad_norm, tokens)."""
    bsz = batch["tokens"].shape[0]
    if bsz % num_microbatches:
        raise ValueError(f"a batch of {bsz} traces does not split into {num_microbatches} micro-batches")
    num_tokens = jnp.maximum(jnp.sum(batch["loss_mask"]), 1.0)
    micro = jax.tree.map(lambda x: x.reshape(num_microbatches, bsz // num_microbatches, *x.shape[1:]), batch)
    grad_fn = jax.value_and_grad(functools.partial(_loss, config=config, logits_chunk_tokens=logits_chunk_tokens))

    def accumulate(carry, mb):
        loss, grads = carry
        mb_loss, g = grad_fn(state.params, mb, num_tokens)
        return (loss + mb_loss, jax.tree.map(jnp.add, grads, g)), None

    zero = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
    (loss, grads), _ = jax.lax.scan(accumulate, zero, micro)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads), "tokens": num_tokens}


@dataclasses.dataclass(frozen=True)
class Settings:
    """How `fit` trains: steps, batch, checkpoints, logging."""

    steps: int  # updates in all
    batch_size: int  # traces per update, across all processes
    seed: int = 0  # seeds the trace order
    num_microbatches: int = 1  # gradient accumulation
    logits_chunk_tokens: int = 0  # see score_jax.rl.train_step.token_logprobs
    log_every: int = 1  # metric-writing and progress interval
    checkpoint_every: int = 50  # save interval (and at the end)
    max_to_keep: int = 2  # latest checkpoints kept
    async_save: bool = True  # write checkpoints in the background


def settings_from_config(config, steps: int) -> Settings:
    """`Settings` from ``config.sft`` and ``config.optim`` for a run of `steps` updates."""
    return Settings(
        steps=steps,
        batch_size=config.sft.batch_size,
        seed=config.seed,
        num_microbatches=config.optim.num_microbatches,
        logits_chunk_tokens=config.optim.logits_chunk_tokens,
        log_every=config.log_every_steps,
        checkpoint_every=config.sft.checkpoint_every_steps,
        max_to_keep=config.checkpoint.max_to_keep,
        async_save=config.checkpoint.async_save,
    )


def optimizer_from_config(config, steps: int) -> optax.GradientTransformation:
    """Adam(W) for supervised fine-tuning: ``config.sft``'s learning rate and warmup, then
    ``config.optim.schedule`` over `steps`, with ``config.optim``'s betas, decay and clipping."""
    o = config.optim
    clip = o.grad_clip_norm or None
    return step_lib.make_optimizer(
        config.sft.learning_rate, config.sft.warmup_steps, steps, o.schedule, o.b1, o.b2, o.weight_decay, clip
    )


def epoch_steps(config, num_traces: int) -> int:
    """``sft.steps``, or else the updates of ``sft.epochs`` passes over `num_traces` traces (at least 1)."""
    if config.sft.steps:
        return config.sft.steps
    return max(config.sft.epochs * (num_traces // config.sft.batch_size), 1)


@dataclasses.dataclass
class Result:
    params: Any  # the fine-tuned parameters (sharded like the starting ones)
    history: list[dict[str, float]]  # per-step metrics of the steps this call ran
    state: TrainState  # the final state


def fit(
    setup,
    data: dict[str, np.ndarray],
    workdir: str | None,
    settings: Settings,
    *,
    tx: optax.GradientTransformation,
    params: Any = None,
    label: str = "sft",
    on_step_end: Callable[[int, dict], None] | None = None,
) -> Result:
    """Fine-tunes `params` (default ``setup.params``) on packed traces `data` for ``settings.steps``.

    `setup` gives the mesh, rules and model (`score_jax.run_setup.Setup`). With a `workdir`, metrics
    go to ``workdir/metrics.jsonl`` and TensorBoard, checkpoints to ``workdir/checkpoints``, and a
    call on a workdir that holds checkpoints resumes from the newest (a finished run returns its
    final parameters at once). `on_step_end(step, metrics)` runs after each step's checkpoint.
    """
    params = setup.params if params is None else params
    mesh, rules = setup.mesh, setup.rules
    state = step_lib.init_train_state(params, tx)
    batches = TraceBatches(data, settings.batch_size, seed=settings.seed, mesh=mesh, rules=rules)
    is_chief = jax.process_index() == 0
    checkpointer = writer = None
    start = 0
    if workdir is not None:
        checkpointer = ckpt_lib.Checkpointer(
            os.path.join(workdir, "checkpoints"), settings.max_to_keep, settings.async_save
        )
        restored = checkpointer.restore_latest(ckpt_lib.abstract_like(state))
        if restored is not None:
            start, state, extra = restored
            batches.set_state(extra["data"])
            log.info("%s: resumed from step %d in %s", label, start, workdir)
        writer = metrics.MetricWriter(workdir, enabled=is_chief)
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
    progress = metrics.Progress(settings.steps, label=label, enabled=is_chief)
    step_fn, history = None, []
    with sharding.use_sharding(mesh, rules):
        for step in range(start, settings.steps):
            batch = {k: distributed.global_batch(v, mesh, rules) for k, v in next(batches).items()}
            if step_fn is None:
                step_fn = jax.jit(
                    functools.partial(
                        sft_step,
                        config=setup.model_config,
                        tx=tx,
                        num_microbatches=settings.num_microbatches,
                        logits_chunk_tokens=settings.logits_chunk_tokens,
                    ),
                    donate_argnums=0,
                    in_shardings=(state_shardings, jax.tree.map(lambda x: x.sharding, batch)),
                    out_shardings=(state_shardings, None),
                )
            state, out = step_fn(state, batch)
            step_metrics = {k: float(v) for k, v in distributed.to_host(out).items()}
            history.append({"step": step + 1, **step_metrics})
            last = step + 1 == settings.steps
            if (step + 1) % settings.log_every == 0 or last:
                progress.update(step + 1, step_metrics, keys=("loss", "grad_norm"))
                if writer is not None:
                    writer.write(step + 1, step_metrics, prefix=f"{label}/")
            if checkpointer is not None and ((step + 1) % settings.checkpoint_every == 0 or last):
                extra = {"data": batches.get_state(), "step": step + 1, "seed": settings.seed, "metrics": step_metrics}
                checkpointer.save(step + 1, state, extra, force=True)
            if on_step_end is not None:
                on_step_end(step + 1, step_metrics)
    if checkpointer is not None:
        checkpointer.close()
        writer.close()
    return Result(state.params, history, state)


def warmup_cosine_adamw(learning_rate: float, steps: int, weight_decay: float = 0.01) -> optax.GradientTransformation:
    """The demo base model's optimizer: clipped AdamW, linear warmup (a tenth of the steps, at most
    50) from 0, then cosine decay to 0."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(50, steps // 10 + 1), steps)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=weight_decay))
