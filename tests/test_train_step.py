"""Chunked log-probs (`logits_chunk_tokens`) agree with the full-logits path: values, entropies,
gradients and a whole train step, on a tiny model, unsharded and on an 8-device fsdp mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from score_jax import sharding
from score_jax.model import get_preset, init_params
from score_jax.model.transformer import param_shardings
from score_jax.rl import train_step as step_lib

B, T, K = 4, 24, 2  # B * (T - 1) = 92 predicting positions

# Llama layout (separate lm_head), and Gemma's tied embeddings with a final-logit softcap.
CONFIGS = {
    "llama": get_preset("tiny_llama"),
    "tied_softcap": get_preset("tiny_llama", tie_embeddings=True, final_logit_softcap=5.0),
}


def _batch(config, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config.vocab_size, (B, T), dtype=np.int32)
    valid = np.ones((B, T), bool)
    valid[1, :3] = False  # a left-padded row
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
    masks = np.zeros((B, K, T), np.float32)
    masks[:, 0, 8:14] = 1.0
    masks[:, 1, 16:T] = 1.0
    return {
        "tokens": jnp.asarray(tokens),
        "positions": jnp.asarray(positions),
        "valid": jnp.asarray(valid),
        "attempt_masks": jnp.asarray(masks),
        "advantages": jnp.asarray(rng.normal(size=(B, K)).astype(np.float32)),
    }


def _params(config, seed=0):
    return init_params(config, jax.random.key(seed))


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("chunk", [1, 7, 92, 1000])  # 7 and 1000 do not divide the 92 tokens
def test_chunked_logprobs_and_entropies_match_full_logits(name, chunk):
    config = CONFIGS[name]
    params, b = _params(config), _batch(config)
    args = (b["tokens"], b["positions"], b["valid"])
    logp, ent = step_lib.token_logprobs(config, params, *args, with_entropy=True)
    logp_c, ent_c = step_lib.token_logprobs(config, params, *args, with_entropy=True, logits_chunk_tokens=chunk)
    assert logp_c.shape == ent_c.shape == (B, T)
    np.testing.assert_allclose(logp_c, logp, atol=1e-5, rtol=0)
    np.testing.assert_allclose(ent_c, ent, atol=1e-5, rtol=0)
    assert float(jnp.abs(logp_c[:, 0]).max()) == 0.0 and float(jnp.abs(ent_c[:, 0]).max()) == 0.0
    only = step_lib.token_logprobs(config, params, *args, logits_chunk_tokens=chunk)
    np.testing.assert_allclose(only, logp, atol=1e-5, rtol=0)


def test_score_fn_chunks_like_token_logprobs():
    config = CONFIGS["tied_softcap"]
    params, b = _params(config), _batch(config)
    args = (b["tokens"], b["positions"], b["valid"])
    np.testing.assert_allclose(
        step_lib.make_score_fn(config, logits_chunk_tokens=13)(params, *args),
        step_lib.make_score_fn(config)(params, *args),
        atol=1e-5,
        rtol=0,
    )


def test_negative_chunk_is_rejected():
    config = CONFIGS["llama"]
    b = _batch(config)
    with pytest.raises(ValueError, match="logits_chunk_tokens"):
        step_lib.token_logprobs(
            config, _params(config), b["tokens"], b["positions"], b["valid"], logits_chunk_tokens=-1
        )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gradient_through_chunked_logprobs_matches_full_logits(name):
    config = CONFIGS[name]
    params, b = _params(config), _batch(config)
    # Per-token mean, as the train step normalises its loss (so fp32 rounding stays far below 1e-5).
    weights = b["attempt_masks"].sum(1) * jnp.linspace(-1.0, 2.0, T) / (B * T)

    def loss(p, chunk):
        logp, ent = step_lib.token_logprobs(
            config, p, b["tokens"], b["positions"], b["valid"], with_entropy=True, logits_chunk_tokens=chunk
        )
        return jnp.sum(weights * logp) + 0.1 * jnp.mean(ent)

    full = jax.jit(jax.grad(lambda p: loss(p, 0)))(params)
    chunked = jax.jit(jax.grad(lambda p: loss(p, 10)))(params)  # 10 does not divide 92
    jax.tree.map(lambda c, f: np.testing.assert_allclose(c, f, atol=1e-5, rtol=0), chunked, full)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(full)) > 1e-2  # a real gradient


def _step(config, params, ref_params, batch, chunk, num_microbatches, shardings=None):
    # Plain SGD: the updated parameters differ exactly as the gradients do (Adam's first step, about
    # lr * sign(g), would turn rounding noise on near-zero gradients into lr-sized differences).
    tx = optax.sgd(1.0)
    state = step_lib.init_train_state(params, tx)
    fn = step_lib.make_train_step(
        config,
        config,
        tx,
        kl_estimator="k3",
        num_microbatches=num_microbatches,
        logits_chunk_tokens=chunk,
        **(shardings or {}),
    )
    return fn(state, ref_params, batch, jnp.asarray([0.1, 0.05], jnp.float32))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_train_step_with_chunking_matches_full_logits(name):
    config = CONFIGS[name]
    params, ref_params, b = _params(config, 0), _params(config, 1), _batch(config)
    s_full, m_full = _step(config, params, ref_params, b, 0, num_microbatches=2)
    s_chunk, m_chunk = _step(config, params, ref_params, b, 9, num_microbatches=2)
    jax.tree.map(lambda c, f: np.testing.assert_allclose(c, f, atol=1e-5, rtol=0), s_chunk.params, s_full.params)
    for k in m_full:
        np.testing.assert_allclose(m_chunk[k], m_full[k], atol=1e-5, rtol=1e-5, err_msg=k)
    moved = max(float(jnp.abs(a - p).max()) for a, p in zip(jax.tree.leaves(s_full.params), jax.tree.leaves(params)))
    assert moved > 1e-4


def test_sharded_train_step_with_chunking_matches_full_logits():
    config = CONFIGS["tied_softcap"]
    mesh = sharding.make_mesh((1, 8, 1), jax.devices()[:8])
    rules = sharding.resolve_rules("fsdp")

    def place(tree, shardings):
        return jax.tree.map(jax.device_put, tree, shardings)

    p_shard = param_shardings(config, mesh, rules)
    params, ref_params = place(_params(config, 0), p_shard), place(_params(config, 1), p_shard)
    b = {k: jax.device_put(v, sharding.data_sharding(mesh, rules, v.shape)) for k, v in _batch(config).items()}
    results = []
    with sharding.use_sharding(mesh, rules):
        for chunk in (0, 12):
            state, _ = _step(config, params, ref_params, b, chunk, num_microbatches=1)
            results.append(jax.device_get(state.params))
    jax.tree.map(lambda c, f: np.testing.assert_allclose(c, f, atol=1e-5, rtol=0), results[1], results[0])
