"""SCoRe's stage objectives: per-attempt returns and KL weights from per-attempt rewards.

Stage I and Stage II (and the paper's ablations) differ only here: in which attempts earn their
own reward, the reward-shaping bonus, and the KL weight on each attempt's tokens.

All functions take rewards ``[K, B]`` (attempt k of episode b, usually binary) and return arrays
of the same shape, or KL weights ``[K]``.
"""

from __future__ import annotations

import numpy as np

STAGES = ("stage1", "stage2", "naive_multi_turn", "multi_turn", "single_turn")


STAGE1_CREDITS = ("none", "r2")


def stage_returns(
    stage: str,
    rewards: np.ndarray,
    alpha: float = 0.0,
    turn_discount: float = 0.0,
    stage1_first_attempt_credit: str = "none",
) -> np.ndarray:
    """Per-attempt returns [K, B].

    - ``stage1``: the last attempt earns its reward r_K. Earlier attempts are held to the
      reference by the strong KL weight; what they earn is `stage1_first_attempt_credit`:
      ``none`` (0: they move only through beta2 and the parameters they share with the last
      attempt, which keeps attempt 1 where the base model is) or ``r2`` (the last attempt's reward
      r_K, the exact gradient of the paper's Eq. 3, whose expectation samples y1 from the policy
      too, so grad log pi(y1) is weighted by r(y2)).
    - ``stage2``: every attempt earns its reward; attempt k >= 2 adds the shaping bonus
      ``alpha * (r_k - r_{k-1})``, which pays for turning a wrong answer right and charges for
      the reverse.
    - ``naive_multi_turn``: the episode's outcome, the last attempt's reward, credits every
      attempt's tokens (plain multi-turn REINFORCE with no Stage I): improving attempt 1 and
      copying it is the easiest way up, which is the collapse the paper reports.
    - ``multi_turn``: every attempt earns its own reward, no shaping and no Stage I (the paper's
      multi-turn RL baseline with per-attempt rewards).
    - ``single_turn``: one attempt, rewarded by its own reward.

    `turn_discount` (gamma) credits attempt k with ``sum_{j>k} gamma^(j-k) R_j`` of the later
    attempts' rewards too (the paper's per-attempt returns are gamma = 0). The shaping bonus is
    added after discounting, to its own attempt only: whatever gamma, it never reaches an earlier
    attempt (with gamma = 1 and alpha = 10, a wrong first attempt followed by a right one would
    otherwise earn attempt 1 eleven times the reward of a right one).
    """
    rewards = np.asarray(rewards, np.float64)
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [attempts, batch], got shape {rewards.shape}")
    if stage1_first_attempt_credit not in STAGE1_CREDITS:
        raise ValueError(f"stage1_first_attempt_credit={stage1_first_attempt_credit!r}; known: {STAGE1_CREDITS}")
    k = rewards.shape[0]
    out = np.zeros_like(rewards)
    bonus = np.zeros_like(rewards)
    if stage == "stage1":
        out[-1] = rewards[-1]
        if stage1_first_attempt_credit == "r2":
            out[:-1] = rewards[-1]
    elif stage == "naive_multi_turn":
        out[:] = rewards[-1]
    elif stage in ("stage2", "multi_turn"):
        out = rewards.copy()
        if stage == "stage2":
            bonus[1:] = alpha * (rewards[1:] - rewards[:-1])
    elif stage == "single_turn":
        if k != 1:
            raise ValueError(f"single_turn trains one attempt, got rewards for {k}")
        out = rewards.copy()
    else:
        raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")
    if turn_discount:
        for i in range(k - 2, -1, -1):
            out[i] += turn_discount * out[i + 1]
    return out + bonus


def stage_kl_weights(stage: str, num_attempts: int, beta1: float, beta2: float) -> np.ndarray:
    """KL weight on each attempt's tokens [K]: stage I pins early attempts with beta2."""
    if stage == "stage1":
        return np.array([beta2] * (num_attempts - 1) + [beta1], np.float32)
    if stage in ("stage2", "naive_multi_turn", "multi_turn", "single_turn"):
        return np.full((num_attempts,), beta1, np.float32)
    raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")


def num_attempts_trained(stage: str, num_attempts: int) -> int:
    """Attempts sampled for training in `stage` (single-turn RL samples only the first)."""
    return 1 if stage == "single_turn" else num_attempts
