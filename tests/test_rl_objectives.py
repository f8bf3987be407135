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


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("stage", ["stage2", "multi_turn"])
def test_shaping_never_reaches_an_earlier_attempt(stage, gamma):
    rewards = np.array([[0, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 0]], float)  # K = 3
    base = objectives.stage_returns(stage, rewards, alpha=0.0, turn_discount=gamma)
    shaped = objectives.stage_returns(stage, rewards, alpha=10.0, turn_discount=gamma)
    np.testing.assert_allclose(shaped[0], base[0])  # attempt 1 is the same whatever alpha
    if stage == "stage2":  # each later attempt gains exactly its own bonus
        np.testing.assert_allclose(shaped[1:] - base[1:], 10.0 * (rewards[1:] - rewards[:-1]))
    else:
        np.testing.assert_allclose(shaped, base)  # multi_turn: no shaping at all


def test_discount_with_shaping_credits_attempt1_with_rewards_only():
    # gamma = 1, alpha = 10: episode (wrong, right) credits attempt 1 with r2 = 1, not 1 + 10.
    out = objectives.stage_returns("stage2", np.array([[0.0, 1.0], [1.0, 1.0]]), alpha=10.0, turn_discount=1.0)
    np.testing.assert_allclose(out[0], [1.0, 2.0])
    np.testing.assert_allclose(out[1], [11.0, 1.0])


@pytest.mark.parametrize("credit,expected_t1", [("none", [0, 0, 0]), ("r2", [1, 0, 1])])
def test_stage1_first_attempt_credit(credit, expected_t1):
    rewards = np.array([[1, 1, 0], [1, 0, 1]], float)
    out = objectives.stage_returns("stage1", rewards, stage1_first_attempt_credit=credit)
    np.testing.assert_allclose(out[0], expected_t1)
    np.testing.assert_allclose(out[1], rewards[1])
    with pytest.raises(ValueError, match="stage1_first_attempt_credit='r1'"):
        objectives.stage_returns("stage1", rewards, stage1_first_attempt_credit="r1")


def _categorical_gradients(estimator, in_reward):
    """The expected gradient of a beta = 1 penalty w.r.t. the logits of pi, by exact enumeration over
    the 5 outcomes of a categorical pi (no gradient through the sampling itself), and the analytic
    gradients of the reverse KL(pi || ref) and forward KL(ref || pi)."""
    import jax
    import jax.numpy as jnp

    theta = jnp.array([0.3, -1.2, 0.8, 0.0, 2.0])
    ref_logp = jax.nn.log_softmax(jnp.array([1.0, 0.5, -0.4, 0.2, 0.1]))
    f = estimators.kl_estimator(estimator)

    def penalty(t):
        logp = jax.nn.log_softmax(t)
        p = jax.lax.stop_gradient(jnp.exp(logp))
        if in_reward:  # REINFORCE: the sampled value times grad log pi
            return jnp.sum(p * jax.lax.stop_gradient(f(logp, ref_logp)) * logp)
        return jnp.sum(p * f(logp, ref_logp))  # differentiated through log pi at fixed samples

    def reverse(t):
        logp = jax.nn.log_softmax(t)
        return jnp.sum(jnp.exp(logp) * (logp - ref_logp))

    def forward(t):
        return jnp.sum(jnp.exp(ref_logp) * (ref_logp - jax.nn.log_softmax(t)))

    return [np.asarray(jax.grad(g)(theta)) for g in (penalty, reverse, forward)]


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("in_reward", [False, True])
def test_each_accepted_kl_placement_follows_the_divergence_it_names(estimator, in_reward):
    got, reverse, forward = _categorical_gradients(estimator, in_reward)
    accepted, what = estimators.KL_PLACEMENTS[estimator, in_reward]
    if accepted:
        assert estimators.kl_divergence_followed(estimator, in_reward) == what
        expected = reverse if what.startswith("reverse") else forward
        np.testing.assert_allclose(got, expected, atol=1e-6)
        return
    with pytest.raises(ValueError, match="accepted: k2 in the loss, k3 in the loss, k1 in the reward"):
        estimators.kl_divergence_followed(estimator, in_reward)
    if (estimator, in_reward) == ("k1", False):
        np.testing.assert_allclose(got, 0.0, atol=1e-7)  # no anchor at all
    else:  # a gradient, but no KL's
        assert min(np.abs(got - reverse).max(), np.abs(got - forward).max()) > 1e-2


def test_config_refuses_kl_pairs_that_are_no_kl():
    from score_jax import config as config_lib

    c = config_lib.base_config()
    c.rl.kl_estimator, c.rl.kl_in_reward = "k1", False
    with pytest.raises(config_lib.ConfigError, match="zero expected gradient"):
        config_lib.validate(c)
    c.rl.kl_estimator, c.rl.kl_in_reward = "k3", True
    with pytest.raises(config_lib.ConfigError, match="no divergence"):
        config_lib.validate(c)
    c.rl.kl_estimator, c.rl.kl_in_reward = "k3", False
    config_lib.validate(c)  # the named forward-KL option


def test_config_refuses_truncated_training_sampling():
    from score_jax import config as config_lib

    c = config_lib.base_config()
    c.rl.top_k = 40
    with pytest.raises(config_lib.ConfigError, match="rl.top_k=40"):
        config_lib.validate(c)
