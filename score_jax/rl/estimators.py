"""Advantage and KL estimators, chosen by name in the config.

Advantages are computed per attempt over groups: rows ``[i*n, (i+1)*n)`` of a batch are the n
samples of prompt i (the episode builder's order).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _groups(returns: np.ndarray, group_size: int) -> np.ndarray:
    """[..., B] -> [..., B/n, n]."""
    if returns.shape[-1] % group_size:
        raise ValueError(f"batch of {returns.shape[-1]} episodes is not a multiple of group size {group_size}")
    return returns.reshape(*returns.shape[:-1], returns.shape[-1] // group_size, group_size)


def rloo(returns: np.ndarray, group_size: int) -> np.ndarray:
    """Leave-one-out baseline: R_i - mean_{j != i} R_j within each prompt's n samples."""
    if group_size < 2:
        raise ValueError("rloo needs at least 2 samples per prompt (config.rl.samples_per_prompt)")
    g = _groups(returns, group_size)
    baseline = (g.sum(-1, keepdims=True) - g) / (group_size - 1)
    return (g - baseline).reshape(returns.shape)


def reinforce(returns: np.ndarray, group_size: int) -> np.ndarray:
    """Batch-mean baseline: R_i - mean_j R_j over the whole batch (per attempt)."""
    del group_size
    return returns - returns.mean(-1, keepdims=True)


def grpo(returns: np.ndarray, group_size: int, eps: float = 1e-6) -> np.ndarray:
    """Group-normalised: (R_i - mean_group) / (std_group + eps)."""
    g = _groups(returns, group_size)
    centred = g - g.mean(-1, keepdims=True)
    return (centred / (g.std(-1, keepdims=True) + eps)).reshape(returns.shape)


ADVANTAGE_ESTIMATORS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "rloo": rloo,
    "reinforce": reinforce,
    "grpo": grpo,
}


def advantages(name: str, returns: np.ndarray, group_size: int) -> np.ndarray:
    """Advantages [K, B] from per-attempt returns [K, B] with the named estimator."""
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; known: {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[name](np.asarray(returns, np.float64), group_size).astype(np.float32)


# Per-token KL(pi || ref) estimates from log-probs of the sampled tokens (Schulman's k1/k2/k3).


def kl_k1(logp: Array, ref_logp: Array) -> Array:
    return logp - ref_logp


def kl_k2(logp: Array, ref_logp: Array) -> Array:
    return 0.5 * jnp.square(logp - ref_logp)


def kl_k3(logp: Array, ref_logp: Array) -> Array:
    log_ratio = ref_logp - logp
    return jnp.exp(log_ratio) - 1.0 - log_ratio


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_estimator(name: str):
    if name not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {name!r}; known: {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[name]
