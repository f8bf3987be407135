"""Stage objectives and estimators against hand-computed values."""

import numpy as np
import pytest

from score_jax.rl import estimators, objectives


def test_stage2_shaping_bonus_is_alpha_times_improvement():
    rewards = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], float)  # [K=2, B=4]
    out = objectives.stage_returns("stage2", rewards, alpha=10.0)
    np.testing.assert_allclose(out[0], [0, 1, 1, 0])
    # r2 + 10 * (r2 - r1): wrong->right pays 11, right->right 1, right->wrong -10, wrong->wrong 0.
    np.testing.assert_allclose(out[1], [11, 1, -10, 0])


def test_stage1_rewards_only_the_last_attempt():
    rewards = np.array([[1, 0], [0, 1]], float)
    np.testing.assert_allclose(objectives.stage_returns("stage1", rewards, alpha=10.0), [[0, 0], [0, 1]])


def test_stage1_kl_weights_pin_first_attempt_with_beta2():
    np.testing.assert_allclose(objectives.stage_kl_weights("stage1", 2, beta1=0.01, beta2=0.1), [0.1, 0.01])
    np.testing.assert_allclose(objectives.stage_kl_weights("stage2", 2, beta1=0.01, beta2=0.1), [0.01, 0.01])


def test_naive_multi_turn_credits_every_attempt_with_the_outcome():
    rewards = np.array([[1, 0, 1], [0, 1, 1]], float)
    np.testing.assert_allclose(objectives.stage_returns("naive_multi_turn", rewards), [[0, 1, 1], [0, 1, 1]])


def test_turn_discount_credits_earlier_attempts():
    rewards = np.array([[0.0], [1.0]])
    out = objectives.stage_returns("stage2", rewards, alpha=0.0, turn_discount=0.5)
    np.testing.assert_allclose(out[:, 0], [0.5, 1.0])


def test_unknown_stage_is_rejected():
    with pytest.raises(ValueError, match="unknown stage 'stage3'"):
        objectives.stage_returns("stage3", np.zeros((2, 2)))


def test_rloo_matches_hand_computation():
    returns = np.array([[1.0, 0.0, 0.0, 3.0, 1.0, 2.0]])  # two prompts x three samples
    adv = estimators.advantages("rloo", returns, group_size=3)
    expected = [1 - 0, 0 - 0.5, 0 - 0.5, 3 - 1.5, 1 - 2.5, 2 - 2]
    np.testing.assert_allclose(adv[0], expected, rtol=1e-6)


def test_reinforce_uses_the_batch_mean():
    returns = np.array([[1.0, 0.0, 0.0, 3.0]])
    np.testing.assert_allclose(estimators.advantages("reinforce", returns, 2)[0], [0, -1, -1, 2])


def test_grpo_normalises_each_group():
    returns = np.array([[1.0, 0.0, 5.0, 5.0]])
    adv = estimators.advantages("grpo", returns, 2)[0]
    np.testing.assert_allclose(adv, [1, -1, 0, 0], atol=1e-5)


def test_rloo_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        estimators.advantages("rloo", np.zeros((1, 4)), 1)


def test_kl_estimators():
    logp, ref = np.log(np.array([0.5])), np.log(np.array([0.25]))
    np.testing.assert_allclose(estimators.kl_k1(logp, ref), [np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(estimators.kl_k2(logp, ref), [0.5 * np.log(2) ** 2], rtol=1e-6)
    np.testing.assert_allclose(estimators.kl_k3(logp, ref), [0.5 - 1 + np.log(2)], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        estimators.kl_estimator("k4")
