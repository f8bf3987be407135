"""SCoRe's stage objectives: per-attempt returns and KL weights from per-attempt rewards.

Stage I and Stage II (and the paper's ablations) differ only here: in which attempts earn their
own reward, the reward-shaping bonus, and the KL weight on each attempt's tokens.

All functions take rewards ``[K, B]`` (attempt k of episode b, usually binary) and return arrays
of the same shape, or KL weights ``[K]``.
"""

from __future__ import annotations

import numpy as np

STAGES = ("stage1", "stage2", "naive_multi_turn", "single_turn")


def stage_returns(stage: str, rewards: np.ndarray, alpha: float = 0.0, turn_discount: float = 0.0) -> np.ndarray:
    """Per-attempt returns [K, B].

    - ``stage1``: only the last attempt is rewarded (r_K); earlier attempts earn nothing and are
      held to the reference by the strong KL weight instead.
    - ``stage2``: every attempt earns its reward; attempt k >= 2 adds the shaping bonus
      ``alpha * (r_k - r_{k-1})``, which pays for turning a wrong answer right and charges for
      the reverse.
    - ``naive_multi_turn``: the episode's outcome, the last attempt's reward, credits every
      attempt's tokens (plain multi-turn REINFORCE with no Stage I): improving attempt 1 and
      copying it is the easiest way up, which is the collapse the paper reports.
    - ``single_turn``: one attempt, rewarded by its own reward.

    `turn_discount` (gamma) credits attempt k with ``sum_{j>k} gamma^(j-k) return_j`` too; the
    paper's per-attempt rewards correspond to gamma = 0.
    """
    rewards = np.asarray(rewards, np.float64)
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [attempts, batch], got shape {rewards.shape}")
    k = rewards.shape[0]
    out = np.zeros_like(rewards)
    if stage == "stage1":
        out[-1] = rewards[-1]
    elif stage == "naive_multi_turn":
        out[:] = rewards[-1]
    elif stage == "stage2":
        out = rewards.copy()
        out[1:] += alpha * (rewards[1:] - rewards[:-1])
    elif stage == "single_turn":
        if k != 1:
            raise ValueError(f"single_turn trains one attempt, got rewards for {k}")
        out = rewards.copy()
    else:
        raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")
    if turn_discount:
        for i in range(k - 2, -1, -1):
            out[i] += turn_discount * out[i + 1]
    return out


def stage_kl_weights(stage: str, num_attempts: int, beta1: float, beta2: float) -> np.ndarray:
    """KL weight on each attempt's tokens [K]: stage I pins early attempts with beta2."""
    if stage == "stage1":
        return np.array([beta2] * (num_attempts - 1) + [beta1], np.float32)
    if stage in ("stage2", "naive_multi_turn", "single_turn"):
        return np.full((num_attempts,), beta1, np.float32)
    raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")


def num_attempts_trained(stage: str, num_attempts: int) -> int:
    """Attempts sampled for training in `stage` (single-turn RL samples only the first)."""
    return 1 if stage == "single_turn" else num_attempts
