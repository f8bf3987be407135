"""Supervised fine-tuning on conversations: next-token cross-entropy on the model's turns.

Used to give the offline demo its base model (`score_jax.demo`), and usable for warm-starting
any policy from traces. Sequences are left-padded token ids with a loss mask marking the tokens
the model should learn to produce (its replies, end-of-turn tokens included).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_jax.model import ModelConfig, left_padded_positions
from score_jax.rl.train_step import TrainState, token_logprobs


def pack(
    sequences: Sequence[tuple[Sequence[int], Sequence[bool]]], length: int | None = None, pad_id: int = 0
) -> dict[str, np.ndarray]:
    """Left-pads (token ids, loss mask) pairs into arrays [N, T]: tokens, positions, valid, loss_mask."""
    length = length or max(len(t) for t, _ in sequences)
    n = len(sequences)
    tokens = np.full((n, length), pad_id, np.int32)
    loss_mask = np.zeros((n, length), np.float32)
    valid = np.zeros((n, length), bool)
    for i, (ids, mask) in enumerate(sequences):
        if len(ids) > length:
            raise ValueError(f"sequence {i} has {len(ids)} tokens, more than the packed length {length}")
        tokens[i, length - len(ids) :] = ids
        loss_mask[i, length - len(ids) :] = mask
        valid[i, length - len(ids) :] = True
    positions = np.asarray(left_padded_positions(valid))
    return {"tokens": tokens, "positions": positions, "valid": valid, "loss_mask": loss_mask}


def _loss(params, batch, config):
    logp = token_logprobs(config, params, batch["tokens"], batch["positions"], batch["valid"])
    mask = batch["loss_mask"]
    return -jnp.sum(logp * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@functools.partial(jax.jit, static_argnames=("config", "tx"), donate_argnums=0)
def sft_step(state: TrainState, batch: dict, *, config: ModelConfig, tx: optax.GradientTransformation):
    """One cross-entropy update; returns (state, loss)."""
    loss, grads = jax.value_and_grad(_loss)(state.params, batch, config)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), loss


def train(
    config: ModelConfig,
    params: Any,
    data: dict[str, np.ndarray],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
    log_every: int = 0,
    callback=None,
) -> Any:
    """Trains on packed `data` for `steps` random mini-batches; returns the new parameters."""
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(
            optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(50, steps // 10 + 1), steps), weight_decay=0.01
        ),
    )
    state = TrainState(jnp.zeros((), jnp.int32), params, jax.jit(tx.init)(params))
    rng = np.random.default_rng(seed)
    n = len(data["tokens"])
    for step in range(steps):
        idx = rng.choice(n, size=batch_size, replace=n < batch_size)
        batch = {k: jnp.asarray(v[idx]) for k, v in data.items()}
        state, loss = sft_step(state, batch, config=config, tx=tx)
        if callback is not None and log_every and (step + 1) % log_every == 0:
            callback(step + 1, float(loss))
    return state.params
