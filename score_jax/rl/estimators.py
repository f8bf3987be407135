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


# Per-token KL estimates from the log-probs of sampled tokens (Schulman's k1 / k2 / k3), and where a
# penalty may sit. With x ~ pi, logp = log pi(x), ref = log ref(x), and beta > 0 the penalty weight:
#
#   estimator  placement  expected gradient of the penalty             follows
#   k1         loss       E[grad log pi] = 0                           nothing: refused (no anchor at all)
#   k2         loss       E[(logp - ref) grad log pi]                  reverse KL(pi || ref), per token
#   k3         loss       E[(1 - ref/pi) grad log pi] = -sum ref grad log pi   forward KL(ref || pi), per token
#   k1         reward     E[(sum_t logp_t - ref_t) grad log pi(y)]     reverse KL(pi || ref) of the attempt
#   k2, k3     reward     E[k grad log pi]                             no divergence's gradient: refused
#
# "In the loss" adds beta * sum of per-token estimates over an attempt's tokens to the loss and
# differentiates through log pi; "in the reward" subtracts beta * the attempt's summed k1 from its
# return, so REINFORCE treats it as a (negative) reward. The paper penalises the reverse KL of each
# attempt against the frozen reference inside REINFORCE (its Eq. 2-4): k1 in the reward is exactly
# that in expectation. k2 in the loss follows the reverse KL token by token, given the sampled
# prefix, without the effect of early tokens on later tokens' KL; k3 in the loss (GRPO's) follows
# the forward KL. benchmarks/kl_estimators.py measures each on a two-token model by exact
# enumeration (relative to the attempt's reverse-KL gradient): k1 in the reward, bias 1e-7 and
# variance 2.7 with an RLOO group of 4; k2 in the loss, bias 0.23 and variance 0.75 (mean of 4).
# In training, that variance decides: with beta2 = 1 in Stage I on the trainer test's task, k1 in
# the reward left attempt 2 at chance (reward 0.05 after 30 steps) while k2 in the loss learned it
# (1.0) at the same KL. The default is therefore k2 in the loss, the reverse KL with low variance.


def kl_k1(logp: Array, ref_logp: Array) -> Array:
    return logp - ref_logp


def kl_k2(logp: Array, ref_logp: Array) -> Array:
    return 0.5 * jnp.square(logp - ref_logp)


def kl_k3(logp: Array, ref_logp: Array) -> Array:
    log_ratio = ref_logp - logp
    return jnp.exp(log_ratio) - 1.0 - log_ratio


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}

# (estimator, in the reward?) -> the divergence its penalty's expected gradient follows (accepted
# pairs), or why it is refused.
KL_PLACEMENTS: dict[tuple[str, bool], tuple[bool, str]] = {
    ("k1", False): (False, "k1 in the loss has zero expected gradient (E[grad log pi] = 0): no KL anchor at all"),
    ("k2", False): (True, "reverse KL(pi || ref), token by token"),
    ("k3", False): (True, "forward KL(ref || pi), token by token"),
    ("k1", True): (True, "reverse KL(pi || ref) of each attempt (the paper's)"),
    ("k2", True): (False, "k2 in the reward has an expected gradient that is no divergence's"),
    ("k3", True): (False, "k3 in the reward has an expected gradient that is no divergence's"),
}


def kl_estimator(name: str):
    if name not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {name!r}; known: {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[name]


def kl_divergence_followed(name: str, in_reward: bool) -> str:
    """The divergence a penalty with estimator `name` in the loss or the reward follows.

    Raises:
      ValueError: an unknown estimator, or a pair whose gradient is not a KL's, saying why and
        which pairs are accepted.
    """
    kl_estimator(name)
    accepted, what = KL_PLACEMENTS[name, bool(in_reward)]
    if not accepted:
        ok = ", ".join(f"{n} in the {'reward' if r else 'loss'}" for (n, r), (a, _) in KL_PLACEMENTS.items() if a)
        raise ValueError(f"{what}; accepted: {ok}")
    return what
