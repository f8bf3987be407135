"""The first update: its learning rate, and a policy that is exactly its reference before it.

Step 1 must move the policy whatever the warmup, and before any update the policy and the frozen
reference must give the same log-probs to the last bit, for every family and every float32 /
bfloat16 combination of parameters, compute and reference: Stage I's KL measures how far attempt
1 moved, so it must read 0 before anything moved, and the KL term must add nothing to the gradient.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from score_jax import config as config_lib
from score_jax import run_setup
from score_jax.model import PRESETS, get_preset, init_params
from score_jax.rl import train_step as step_lib

DTYPES = ("float32", "bfloat16")
FAMILY_PRESETS = sorted(name for name in PRESETS if name.startswith("tiny_"))


@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_schedule_starts_above_zero(warmup):
    rate = step_lib.learning_rate_schedule(1e-3, warmup, total_steps=10)
    rates = [float(rate(i)) for i in range(5)]
    expected = [1e-3 * min((i + 1) / warmup, 1.0) if warmup else 1e-3 for i in range(5)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)


def test_cosine_schedule_warms_up_then_decays():
    rate = step_lib.learning_rate_schedule(1.0, 2, total_steps=6, schedule="cosine")
    rates = [float(rate(i)) for i in range(6)]
    np.testing.assert_allclose(rates[:3], [0.5, 1.0, 1.0], rtol=1e-6)
    assert rates[2] > rates[3] > rates[4] > rates[5] > 0


@pytest.mark.parametrize("warmup", [0, 3])
def test_first_update_changes_the_parameters(warmup):
    tx = step_lib.make_optimizer(1e-3, warmup, total_steps=10)
    params = {"w": jnp.ones((3,))}
    updates, _ = tx.update({"w": jnp.array([1.0, -2.0, 0.5])}, tx.init(params), params)
    moved = np.abs(np.asarray(optax.apply_updates(params, updates)["w"]) - 1.0)
    np.testing.assert_allclose(moved, 1e-3 / (warmup or 1), rtol=1e-3)  # Adam's first step: lr per coordinate


def _batch(vocab: int, b: int = 4, t: int = 20, k: int = 2):
    rng = np.random.default_rng(0)
    valid = np.ones((b, t), bool)
    valid[1, :4] = False  # a left-padded row
    masks = np.zeros((b, k, t), np.float32)
    masks[:, 0, 6:12], masks[:, 1, 14:] = 1.0, 1.0
    return {
        "tokens": jnp.asarray(rng.integers(0, vocab, (b, t)), jnp.int32),
        "positions": jnp.asarray(np.maximum(np.cumsum(valid, axis=1) - 1, 0), jnp.int32),
        "valid": jnp.asarray(valid),
        "attempt_masks": jnp.asarray(masks),
        "advantages": jnp.asarray(rng.normal(size=(b, k)), jnp.float32),
    }


@functools.cache
def _init(preset, param_dtype):
    """A random init in `param_dtype`, compiled once per family and dtype rather than once per case:
    the parameters do not depend on the compute dtype, and `run_setup.policy_and_reference` never
    changes its input."""
    return init_params(get_preset(preset, param_dtype=param_dtype), jax.random.key(1))


def _pair(preset, param_dtype, dtype, reference_dtype):
    """(policy config, reference config, policy params, reference params) as a run builds them."""
    c = config_lib.base_config()
    c.model.param_dtype, c.model.dtype, c.model.reference_dtype = param_dtype, dtype, reference_dtype
    config_lib.validate(c)  # every combination is allowed
    policy_config = get_preset(preset, param_dtype=param_dtype, dtype=dtype)
    policy, reference = run_setup.policy_and_reference(_init(preset, param_dtype), reference_dtype)
    assert {x.dtype for x in jax.tree.leaves(reference)} == {jnp.dtype(reference_dtype)}
    return policy_config, run_setup.reference_config(c, policy_config), policy, reference


COMBINATIONS = list(itertools.product(DTYPES, repeat=3))  # (param, compute, reference)


@pytest.mark.parametrize("preset", FAMILY_PRESETS)
@pytest.mark.parametrize("param_dtype,dtype,reference_dtype", COMBINATIONS)
def test_policy_is_its_reference_at_step_zero(preset, param_dtype, dtype, reference_dtype):
    policy_config, ref_config, policy, reference = _pair(preset, param_dtype, dtype, reference_dtype)
    batch = _batch(policy_config.vocab_size)
    args = (batch["tokens"], batch["positions"], batch["valid"])
    logp = step_lib.token_logprobs(policy_config, policy, *args)
    ref_logp = step_lib.token_logprobs(ref_config, reference, *args)
    np.testing.assert_array_equal(np.asarray(logp), np.asarray(ref_logp))


# The train step compiles per case, so its check runs every family at the paper's setting (float32
# parameters, bfloat16 compute and reference) and every combination on Gemma 2, the family with the
# most ways to round differently (soft-caps, 1 + scale norms, sliding windows).
STEP_CASES = sorted(
    {(p, "float32", "bfloat16", "bfloat16") for p in FAMILY_PRESETS} | {("tiny_gemma2", *d) for d in COMBINATIONS}
)


@pytest.mark.parametrize("preset,param_dtype,dtype,reference_dtype", STEP_CASES)
def test_first_step_gradient_is_plain_reinforce(preset, param_dtype, dtype, reference_dtype):
    # The KL is computed inside the gradient program, where the policy's log-probs must still equal
    # the reference's to the bit: then k3's gradient is exactly 0 and a huge KL weight changes
    # nothing. With plain SGD at rate 1 the update is minus the gradient.
    policy_config, ref_config, policy, reference = _pair(preset, param_dtype, dtype, reference_dtype)
    tx = optax.sgd(1.0)
    statics = ("config", "ref_config", "tx", "kl_name", "kl_in_loss", "num_microbatches")
    step = jax.jit(step_lib.train_step, static_argnames=statics)
    batch = _batch(policy_config.vocab_size)
    updates = []
    for weight in (0.0, 10.0):
        state = step_lib.TrainState(jnp.zeros((), jnp.int32), policy, tx.init(policy))
        new, metrics = step(
            state,
            reference,
            batch,
            jnp.full((2,), weight),
            config=policy_config,
            ref_config=ref_config,
            tx=tx,
            kl_name="k3",
            kl_in_loss=True,
            num_microbatches=1,
        )
        assert np.all(np.asarray(metrics["kl"]) == 0.0) and np.all(np.asarray(metrics["kl_k1"]) == 0.0)
        updates.append(new.params)
    for a, b in zip(jax.tree.leaves(updates[0]), jax.tree.leaves(updates[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_dtype_outside_float32_bfloat16_is_refused():
    c = config_lib.base_config()
    c.model.reference_dtype = "float16"
    with pytest.raises(config_lib.ConfigError, match="model.reference_dtype='float16'"):
        config_lib.validate(c)
