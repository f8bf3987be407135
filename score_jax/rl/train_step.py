"""The jitted, sharded policy-gradient step.

One call: policy log-probs of every sampled token (one full forward over the episode as it sat
in the KV cache), reference log-probs (frozen parameters, no gradient), a per-token KL on each
attempt with its own weight, the REINFORCE loss over each attempt's own tokens, gradient
accumulation over micro-batches, and one optax update. The state is donated.

Under LoRA (``config.lora`` set) the state holds the adapters and their optimizer state only; the
reference's parameters are the frozen base, and the policy is the base with the adapters laid in
(`score_jax.model.lora.merge`, inside the step: the base is an argument, never donated or copied).

Batch arrays (B episodes, K attempts, T slots; the token at slot t is predicted from slot t-1,
which the episode layout guarantees is valid for every attempt token):
  tokens [B, T] int32, positions [B, T] int32, valid [B, T] bool,
  attempt_masks [B, K, T] float32 (1 on attempt k's sampled tokens),
  advantages [B, K] float32.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from score_jax import sharding
from score_jax.model import ModelConfig, Transformer, lora
from score_jax.rl import estimators

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    step: Array  # [] int32: optimizer updates applied
    params: Any  # what the optimizer updates: every parameter, or the adapters under LoRA
    opt_state: Any


def learning_rate_schedule(
    learning_rate: float, warmup_steps: int, total_steps: int, schedule: str = "constant"
) -> optax.Schedule:
    """The learning rate of update ``count`` (0 for the first update).

    Warmup ramps linearly over `warmup_steps` updates and starts above zero: update i < warmup
    uses ``learning_rate * (i + 1) / warmup_steps``, so the first sampled batch already moves the
    policy, and with ``warmup_steps=0`` the first update uses `learning_rate` itself. After warmup:
    ``constant``, or ``cosine`` decay towards 0 over the remaining ``total_steps - warmup_steps``.
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; use 'constant' or 'cosine'")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
    decay_steps = max(total_steps - warmup_steps, 1)

    def rate(count):
        count = jnp.asarray(count, jnp.float32)
        warm = jnp.minimum((count + 1.0) / warmup_steps, 1.0) if warmup_steps else 1.0
        if schedule == "constant":
            return learning_rate * warm
        progress = jnp.clip((count - warmup_steps) / decay_steps, 0.0, 1.0)
        return learning_rate * warm * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

    return rate


def make_optimizer(
    learning_rate: float,
    warmup_steps: int,
    total_steps: int,
    schedule: str = "constant",
    b1: float = 0.9,
    b2: float = 0.999,
    weight_decay: float = 0.0,
    grad_clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """Adam(W) on `learning_rate_schedule`, after global-norm clipping."""
    lr = learning_rate_schedule(learning_rate, warmup_steps, total_steps, schedule)
    parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
    parts.append(optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay))
    return optax.chain(*parts)


def token_logprobs(
    config: ModelConfig,
    params: Any,
    tokens: Array,
    positions: Array,
    valid: Array,
    with_entropy: bool = False,
    logits_chunk_tokens: int = 0,
    temperature: float = 1.0,
):
    """log p(token[t] | tokens[<t]) for every slot, [B, T] float32 (0 at slot 0).

    `temperature`: the log-probs of the tempered distribution softmax(logits / temperature), the
    one training samples from (policy and reference alike, so the KL is between tempered models).

    With `with_entropy`, also the entropy [B, T] of the predictive distribution that produced
    each slot's token.

    `logits_chunk_tokens` > 0 never materialises the [B, T, V] logits: the B * (T - 1) predicting
    positions are flattened, padded to a multiple of the chunk, and each chunk's logits, log-
    normaliser, picked log-prob and entropy are computed in a scan whose body is rematerialised,
    so the backward pass recomputes one chunk's logits at a time instead of storing them all.
    The chunk counts tokens of the whole (global) batch; 0 computes the full logits at once, in
    one such rematerialised chunk. The head is always rematerialised: inside a gradient program
    XLA may otherwise fuse the forward logits with their backward (a soft-cap's tanh, say) and
    round them differently from a plain forward, and the policy's log-probs in the train step must
    equal, to the bit, what the same parameters give in the reference's forward (KL = 0 at step 0).
    """
    if logits_chunk_tokens < 0:
        raise ValueError(f"logits_chunk_tokens={logits_chunk_tokens} must be >= 0")
    hidden, _ = Transformer(config).apply({"params": params}, tokens, positions, valid, return_hidden=True)
    chunk = logits_chunk_tokens or tokens.shape[0] * (tokens.shape[1] - 1)
    logp, entropy = _chunked_logprobs(
        config, params, hidden[:, :-1], tokens[:, 1:], max(chunk, 1), with_entropy, temperature
    )
    logp = jnp.pad(logp, ((0, 0), (1, 0)))
    if not with_entropy:
        return logp
    return logp, jnp.pad(entropy, ((0, 0), (1, 0)))


def _chunked_logprobs(
    config: ModelConfig,
    params: Any,
    hidden: Array,
    targets: Array,
    chunk: int,
    with_entropy: bool,
    temperature: float = 1.0,
):
    """Picked log-probs and entropies (None without `with_entropy`) [B, L] from final hidden states
    [B, L, E], `chunk` tokens at a time."""
    bsz, length, embed = hidden.shape
    n = bsz * length
    num_chunks = -(-n // chunk)
    pad = num_chunks * chunk - n
    # Token i * num_chunks + c goes to chunk c, row i: each chunk takes rows from the whole batch,
    # so a batch-sharded layout stays sharded along the rows of every chunk.
    h = jnp.pad(hidden.reshape(n, embed), ((0, pad), (0, 0))).reshape(chunk, num_chunks, embed)
    t = jnp.pad(targets.reshape(n), (0, pad)).reshape(chunk, num_chunks)
    h = sharding.constrain(jnp.swapaxes(h, 0, 1), (None, "batch", "embed"))
    t = sharding.constrain(jnp.swapaxes(t, 0, 1), (None, "batch"))
    # Only the output head's parameters enter the scan (the rest would be carried for nothing).
    head = {k: params[k] for k in ("embedding", "lm_head") if k in params}
    model = Transformer(config)

    @jax.checkpoint
    def one_chunk(head_params, h_c, t_c):
        logits = model.apply({"params": head_params}, h_c, method=Transformer.logits)  # [chunk, V] f32
        if temperature != 1.0:
            logits = logits / temperature
        logz = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, t_c[:, None], axis=-1)[:, 0]
        if not with_entropy:
            return picked - logz, None
        return picked - logz, logz - jnp.sum(jax.nn.softmax(logits, axis=-1) * logits, axis=-1)

    _, (logp, entropy) = jax.lax.scan(lambda carry, xs: (carry, one_chunk(head, *xs)), None, (h, t))

    def unchunk(x):
        return jnp.swapaxes(x, 0, 1).reshape(-1)[:n].reshape(bsz, length)

    return unchunk(logp), (unchunk(entropy) if with_entropy else None)


def _microbatch_loss(
    params,
    ref_params,
    mb,
    kl_weights,
    num_tokens,
    *,
    config,
    ref_config,
    kl_name,
    kl_in_loss,
    logits_chunk_tokens=0,
    temperature=1.0,
):
    args = (mb["tokens"], mb["positions"], mb["valid"])
    logp, entropy = token_logprobs(
        config,
        lora.policy_params(config, ref_params, params),
        *args,
        with_entropy=True,
        logits_chunk_tokens=logits_chunk_tokens,
        temperature=temperature,
    )
    if "ref_logprobs" in mb:  # scored before the step (the KL-in-reward pass): not computed twice
        ref_logp = mb["ref_logprobs"]
    else:
        ref_logp = token_logprobs(
            ref_config, ref_params, *args, logits_chunk_tokens=logits_chunk_tokens, temperature=temperature
        )
    ref_logp = jax.lax.stop_gradient(ref_logp)
    masks = mb["attempt_masks"]  # [b, K, T]
    kl_tok = estimators.kl_estimator(kl_name)(logp, ref_logp)  # [b, T]
    pg = -jnp.sum(mb["advantages"][:, :, None] * masks * logp[:, None, :])
    kl_per_attempt = jnp.sum(masks * kl_tok[:, None, :], axis=(0, 2))  # [K]
    loss = pg + (jnp.sum(kl_weights * kl_per_attempt) if kl_in_loss else 0.0)
    stats = {
        "pg_loss": pg,
        "kl_sum": jax.lax.stop_gradient(kl_per_attempt),
        "kl_k1_sum": jax.lax.stop_gradient(jnp.sum(masks * (logp - ref_logp)[:, None, :], axis=(0, 2))),
        "entropy_sum": jax.lax.stop_gradient(jnp.sum(masks * entropy[:, None, :], axis=(0, 2))),
        "tokens": jnp.sum(masks, axis=(0, 2)),
    }
    return loss / num_tokens, stats


def train_step(
    state: TrainState,
    ref_params: Any,
    batch: dict,
    kl_weights: Array,
    *,
    config: ModelConfig,
    ref_config: ModelConfig,
    tx: optax.GradientTransformation,
    kl_name: str,
    kl_in_loss: bool,
    num_microbatches: int,
    logits_chunk_tokens: int = 0,
    temperature: float = 1.0,
):
    """One policy update on a batch; see the module docstring for shapes. Returns (state, metrics).

    `logits_chunk_tokens`, `temperature`: see `token_logprobs`. A batch may carry the reference's
    log-probs as ``ref_logprobs`` [B, T] (computed for a KL in the reward); the reference
    parameters are then not run again.
    """
    bsz = batch["tokens"].shape[0]
    if bsz % num_microbatches:
        raise ValueError(f"batch of {bsz} episodes does not split into {num_microbatches} micro-batches")
    num_tokens = jnp.maximum(jnp.sum(batch["attempt_masks"]), 1.0)
    micro = jax.tree.map(lambda x: x.reshape(num_microbatches, bsz // num_microbatches, *x.shape[1:]), batch)
    grad_fn = jax.grad(
        functools.partial(
            _microbatch_loss,
            config=config,
            ref_config=ref_config,
            kl_name=kl_name,
            kl_in_loss=kl_in_loss,
            logits_chunk_tokens=logits_chunk_tokens,
            temperature=temperature,
        ),
        has_aux=True,
    )

    def accumulate(carry, mb):
        grads, stats = carry
        g, s = grad_fn(state.params, ref_params, mb, kl_weights, num_tokens)
        return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, stats, s)), None

    k = batch["attempt_masks"].shape[1]
    zero_stats = {
        "pg_loss": jnp.zeros(()),
        **{n: jnp.zeros((k,)) for n in ("kl_sum", "kl_k1_sum", "entropy_sum", "tokens")},
    }
    zero_grads = jax.tree.map(jnp.zeros_like, state.params)
    (grads, stats), _ = jax.lax.scan(accumulate, (zero_grads, zero_stats), micro)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    per_attempt = jnp.maximum(stats["tokens"], 1.0)
    metrics = {
        "loss/pg": stats["pg_loss"] / num_tokens,
        "grad_norm": optax.global_norm(grads),
        "kl": stats["kl_sum"] / per_attempt,  # [K] mean per token, chosen estimator
        "kl_k1": stats["kl_k1_sum"] / per_attempt,
        "entropy": stats["entropy_sum"] / per_attempt,
    }
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def step_flops(config: ModelConfig, batch: int, seq: int) -> float:
    """Model FLOPs of one train step on [batch, seq] tokens: policy forward and backward (3x the
    forward) plus the reference forward (1x); causal attention over seq / 2 keys on average.
    Rematerialised recomputation is not counted (MFU convention)."""
    return 4.0 * config.flops_per_token(seq / 2) * batch * seq


def make_train_step(
    config: ModelConfig,
    ref_config: ModelConfig,
    tx: optax.GradientTransformation,
    *,
    kl_estimator: str = "k2",
    kl_in_loss: bool = True,
    num_microbatches: int = 1,
    state_shardings: Any = None,
    ref_shardings: Any = None,
    batch_sharding: Any = None,
    logits_chunk_tokens: int = 0,
    temperature: float = 1.0,
):
    """The jitted step ``(state, ref_params, batch, kl_weights) -> (state, metrics)``, state donated.

    `logits_chunk_tokens` > 0 computes the log-probs that many tokens at a time; `temperature`:
    the sampling temperature the log-probs follow (see `token_logprobs`). With `kl_in_loss` the
    estimator/placement pair must follow a KL (`estimators.kl_divergence_followed`).
    """
    if kl_in_loss:
        estimators.kl_divergence_followed(kl_estimator, in_reward=False)
    else:
        estimators.kl_estimator(kl_estimator)  # the in-loss estimate is still logged
    fn = functools.partial(
        train_step,
        config=config,
        ref_config=ref_config,
        tx=tx,
        kl_name=kl_estimator,
        kl_in_loss=kl_in_loss,
        num_microbatches=num_microbatches,
        logits_chunk_tokens=logits_chunk_tokens,
        temperature=temperature,
    )
    if state_shardings is None:
        return jax.jit(fn, donate_argnums=0)
    return jax.jit(
        fn,
        donate_argnums=0,
        in_shardings=(state_shardings, ref_shardings, batch_sharding, None),
        out_shardings=(state_shardings, None),
    )


def init_train_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
    """A fresh state; the optimizer state is created where the parameters live."""
    return make_init_fn(tx, jax.tree.map(lambda x: x.sharding, params))(params)


def make_init_fn(tx: optax.GradientTransformation, param_shardings: Any):
    """The jitted ``params -> TrainState`` for parameters laid out as `param_shardings`.

    The optimizer's copies of the parameters (Adam's moments) are sharded like the parameters:
    left to the compiler, zeros come out replicated, which on an fsdp mesh puts two whole
    float32 copies of the model on every device.
    """

    def like_params(x, sharding):
        return jax.lax.with_sharding_constraint(x, sharding) if isinstance(sharding, NamedSharding) else x

    def init(p):
        opt_state = optax.tree_map_params(tx, like_params, tx.init(p), param_shardings)
        return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=opt_state)

    # One jit, so the step counter lives on the same devices as the parameters.
    return jax.jit(init)


def make_score_fn(config: ModelConfig, logits_chunk_tokens: int = 0, temperature: float = 1.0):
    """Jitted token log-probs of a batch under `config` (reference scoring for KL-in-reward)."""
    return jax.jit(
        functools.partial(token_logprobs, config, logits_chunk_tokens=logits_chunk_tokens, temperature=temperature)
    )
