"""Generation: parity with full forwards and with transformers, raggedness, sharding, sampling law."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from score_jax import sampling, sharding
from score_jax.model import forward, get_preset, init_params

CONFIG = get_preset("tiny_llama")
GREEDY = sampling.SamplingConfig(max_new_tokens=16, greedy=True, length_buckets=(8, 16), attention_block=None)


@pytest.fixture(scope="module")
def params():
    return init_params(CONFIG, jax.random.key(0))


def _prompts(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [[1] + rng.integers(5, CONFIG.vocab_size, n - 1).tolist() for n in lengths]


def _greedy_reference(params, prompt, steps, width=32):
    """Greedy continuation by full forwards (no cache) over a right-padded buffer of `width`."""
    seq = np.zeros((1, width), np.int32)
    seq[0, : len(prompt)] = prompt
    positions = jnp.arange(width)[None]
    for n in range(len(prompt), len(prompt) + steps):
        logits = forward(CONFIG, params, jnp.asarray(seq), positions, jnp.asarray(np.arange(width) < n)[None])
        seq[0, n] = int(jnp.argmax(logits[0, n - 1]))
    return seq[0, len(prompt) : len(prompt) + steps].tolist()


def test_greedy_matches_uncached_forward_and_logprobs(params):
    prompts = _prompts([5, 13, 16, 9])
    gen = sampling.Sampler(CONFIG).generate(params, prompts, GREEDY, jax.random.key(1))
    for i, p in enumerate(prompts):
        assert gen.tokens[i].tolist() == _greedy_reference(params, p, GREEDY.max_new_tokens)
        seq = jnp.asarray([p + gen.tokens[i].tolist() + [0] * (32 - len(p) - GREEDY.max_new_tokens)])
        logits = forward(CONFIG, params, seq, jnp.arange(32)[None], jnp.ones_like(seq, bool))
        logp = jax.nn.log_softmax(logits[0, len(p) - 1 : len(p) - 1 + GREEDY.max_new_tokens])
        want = np.take_along_axis(np.asarray(logp), gen.tokens[i][:, None], axis=1)[:, 0]
        np.testing.assert_allclose(gen.logprobs[i], want, atol=1e-4)
    assert gen.mask.all() and gen.truncated.all() and (gen.lengths == GREEDY.max_new_tokens).all()
    assert gen.start == 16 and gen.steps == GREEDY.max_new_tokens


def test_attention_windows_do_not_change_results(params):
    prompts = _prompts([3, 9, 14, 16])
    whole = sampling.Sampler(CONFIG).generate(params, prompts, GREEDY, jax.random.key(0))
    windowed = sampling.Sampler(CONFIG).generate(params, prompts, GREEDY.replace(attention_block=12), jax.random.key(0))
    np.testing.assert_array_equal(whole.tokens, windowed.tokens)
    np.testing.assert_allclose(whole.logprobs, windowed.logprobs, atol=1e-5)


def test_prefill_in_sub_chunks_equals_one_pass(params):
    """A ragged, left-padded 16-token prefill run 4 tokens at a time: same logits, same cache."""
    prompts = _prompts([3, 9, 14, 16])
    tokens, valid = sampling.pad_left(prompts, 16, 0)
    positions = sampling.chunk_positions(valid, np.zeros((4,), np.int32))
    sampler = sampling.Sampler(CONFIG)
    out = {}
    for sub_chunk in (None, 4):
        for last_col in (15, 6):  # the last column, and one inside an earlier sub-chunk
            cache = sampler.new_cache(4, 24)
            logits, cache = sampler.prefill(
                params, cache, tokens, positions, valid, last_col=last_col, sub_chunk=sub_chunk
            )
            out[sub_chunk, last_col] = (np.asarray(logits), jax.tree.map(np.asarray, cache))
    for last_col in (15, 6):
        (whole, whole_cache), (chunked, chunked_cache) = out[None, last_col], out[4, last_col]
        rows = valid[:, last_col]  # a padding column's hidden state is whatever a query that sees nothing computes
        np.testing.assert_allclose(chunked[rows], whole[rows], atol=1e-5)
        np.testing.assert_array_equal(chunked_cache.valid, whole_cache.valid)
        np.testing.assert_array_equal(chunked_cache.positions, whole_cache.positions)
        assert int(chunked_cache.index) == int(whole_cache.index) == 16
        filled = whole_cache.valid
        for a, b in ((chunked_cache.k, whole_cache.k), (chunked_cache.v, whole_cache.v)):
            a, b = (x.transpose(0, 1, 3, 2, 4)[:, filled] for x in (a, b))  # [L, B, K, S, D] -> [L, n, K, D]
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(out[4, 15][0], out[4, 6][0])  # last_col picks a different column


def test_ragged_rows_match_rows_alone(params):
    prompts = _prompts([2, 7, 12, 16])
    sampler = sampling.Sampler(CONFIG)
    batch = sampler.generate(params, prompts, GREEDY, jax.random.key(0))
    for i, p in enumerate(prompts):
        alone = sampler.generate(params, [p], GREEDY, jax.random.key(0))
        np.testing.assert_array_equal(batch.tokens[i], alone.tokens[0])


def test_stop_tokens_masks_and_truncation(params):
    prompts = _prompts([4, 6, 9, 11, 14])
    sampler = sampling.Sampler(CONFIG)
    free = sampler.generate(params, prompts, GREEDY, jax.random.key(0))
    stop = int(free.tokens[0, 3])  # row 0 emits it at step 3 (or earlier)
    gen = sampler.generate(params, prompts, GREEDY.replace(stop_token_ids=(stop,)), jax.random.key(0))
    for i in range(len(prompts)):
        hits = np.flatnonzero(free.tokens[i] == stop)
        if hits.size:
            n = hits[0] + 1
            assert gen.lengths[i] == n and not gen.truncated[i] and gen.tokens[i, n - 1] == stop
            np.testing.assert_array_equal(gen.tokens[i, :n], free.tokens[i, :n])
        else:
            assert gen.lengths[i] == GREEDY.max_new_tokens and gen.truncated[i]
        np.testing.assert_array_equal(gen.mask[i], np.arange(GREEDY.max_new_tokens) < gen.lengths[i])
        assert (gen.tokens[i, gen.lengths[i] :] == GREEDY.pad_id).all()
        assert (gen.logprobs[i, gen.lengths[i] :] == 0).all()
    assert gen.lengths[0] <= 4
    assert gen.steps == gen.lengths.max()  # the loop stops once every row is done


def test_one_compile_per_bucket(params):
    sampler = sampling.Sampler(CONFIG)
    sampler.generate(params, _prompts([9, 12, 13, 15]), GREEDY, jax.random.key(0))
    before = sampling.trace_counts()
    sampler.generate(params, _prompts([16, 11, 10, 9]), GREEDY, jax.random.key(1))  # new lengths, same bucket
    assert sampling.trace_counts() == before
    sampler.generate(params, _prompts([3, 5, 8, 2]), GREEDY, jax.random.key(2))  # a new bucket
    after = sampling.trace_counts()
    assert after["prefill"] == before["prefill"] + 1 and after["decode"] == before["decode"] + 1


def test_sharded_equals_unsharded(params):
    """fsdp_tensor here; test_episodes runs data_parallel."""
    rules, mesh = "fsdp_tensor", sharding.make_mesh((2, 2, 2))
    prompts = _prompts([3, 5, 8, 9, 12, 14, 15, 16], seed=3)
    want = sampling.Sampler(CONFIG).generate(params, prompts, GREEDY, jax.random.key(0))
    sharded = sampling.Sampler(CONFIG, mesh=mesh, rules=rules)
    # The sharded run prefills its 16-token prompts 4 tokens at a time (a scan over sub-chunks).
    got = sharded.generate(
        init_params(CONFIG, jax.random.key(0), mesh, rules), prompts, GREEDY.replace(prefill_chunk=4), jax.random.key(0)
    )
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-4)
    cache = sharded.new_cache(8, 24)
    ctx = sharding.ShardingContext(mesh, sharding.resolve_rules(rules))
    assert cache.k.sharding.is_equivalent_to(
        ctx.sharding(("layers", "batch", "kv_heads", "cache_length", "head_dim"), cache.k.shape), cache.k.ndim
    )


# ---------------------------------------------------------------------------------------------
# The sampling law, on a model whose next-token logits are a known vector whatever the context.

TARGET = np.log(np.arange(1, 33, dtype=np.float64))  # p(i) proportional to i + 1
KNOWN = get_preset("tiny_llama", vocab_size=32)


@pytest.fixture(scope="module")
def known_params():
    return known_model_params()


def known_model_params():
    """Attention and MLP outputs zeroed; every token embeds to 8 e_0, which the final norm maps to
    sqrt(E) e_0; so the logits are sqrt(E) * lm_head[0] = TARGET."""
    p = jax.tree.map(np.asarray, init_params(KNOWN, jax.random.key(0)))
    for name in ("layer_0", "layer_1"):
        p[name]["attn"]["o"] = np.zeros_like(p[name]["attn"]["o"])
        p[name]["mlp"]["down"] = np.zeros_like(p[name]["mlp"]["down"])
    p["embedding"] = np.zeros_like(p["embedding"])
    p["embedding"][:, 0] = 8.0
    p["lm_head"] = np.zeros_like(p["lm_head"])
    p["lm_head"][0] = TARGET / np.sqrt(KNOWN.d_model)
    p = jax.tree.map(jnp.asarray, p)
    logits = forward(KNOWN, p, jnp.asarray([[1, 5, 7]]), jnp.arange(3)[None], jnp.ones((1, 3), bool))
    np.testing.assert_allclose(np.asarray(logits[0]), np.broadcast_to(TARGET, (3, 32)), atol=1e-3)
    return p


def _draw(params, settings, seed=0, rows=64):
    gen = sampling.Sampler(KNOWN).generate(params, [[1, 2, 3]] * rows, settings, jax.random.key(seed))
    assert gen.mask.all()
    return gen.tokens.ravel(), gen.logprobs.ravel()


def _law(logits, top_k=None, top_p=None):
    """The distribution the sampler should follow, computed independently in float64."""
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    if top_k is not None:  # keep the k most likely, renormalised
        p = np.where(np.isin(np.arange(len(p)), order[:top_k]), p, 0.0)
        p /= p.sum()
    if top_p is not None:  # then the smallest most-likely set with mass >= top_p
        mass = np.cumsum(p[order]) - p[order]
        p = np.where(np.isin(np.arange(len(p)), order[mass < top_p]), p, 0.0)
    return p / p.sum()


def _chi2_pvalue(tokens, law):
    counts = np.bincount(tokens, minlength=len(law))
    support = law > 0
    assert counts[~support].sum() == 0, f"sampled outside the support: {np.flatnonzero(counts * ~support)}"
    return stats.chisquare(counts[support], law[support] * len(tokens)).pvalue


SAMPLE = sampling.SamplingConfig(max_new_tokens=64, temperature=1.0, length_buckets=(8,), attention_block=None)


@pytest.mark.parametrize(
    "settings",
    [
        SAMPLE,
        SAMPLE.replace(top_k=5),
        SAMPLE.replace(top_p=0.5),
        SAMPLE.replace(top_k=20, top_p=0.4, temperature=0.7),
    ],
    ids=["t1", "top_k", "top_p", "combined"],
)
def test_sampling_follows_the_law(known_params, settings):
    tokens, logprobs = _draw(known_params, settings)  # 4096 draws
    law = _law(TARGET / settings.temperature, settings.top_k, settings.top_p)
    assert _chi2_pvalue(tokens, law) > 1e-3
    if settings.top_k or settings.top_p:
        assert set(tokens.tolist()) == set(np.flatnonzero(law).tolist())
    np.testing.assert_allclose(logprobs, np.log(law[tokens]), atol=1e-4)
    if settings == SAMPLE:  # the test has power: a slightly different temperature is rejected
        assert _chi2_pvalue(tokens, _law(TARGET / 1.3)) < 1e-3


# ---------------------------------------------------------------------------------------------
# Parity with transformers on a checkpoint imported by score_jax.checkpoints.hf.


# Qwen3 and Gemma 3 (window 4, shorter than prompt + 20 steps) come from hf_fixtures' perturbed models.
@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3"])
def test_greedy_matches_transformers_generate(tmp_path, family):
    if importlib.util.find_spec("score_jax.checkpoints.hf") is None:
        pytest.skip("score_jax.checkpoints.hf (the HF importer) is not there yet")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import hf_fixtures  # noqa: PLC0415 - needs torch and transformers, checked just above

    from score_jax.checkpoints.hf import load_hf_checkpoint

    torch.manual_seed(0)
    if family == "llama":
        hf_config = transformers.LlamaConfig(
            vocab_size=256,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            rms_norm_eps=1e-5,
            rope_theta=10_000.0,
            tie_word_embeddings=False,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        model = transformers.LlamaForCausalLM(hf_config).eval()
    else:
        model = hf_fixtures.tiny_hf_model(family)
    model.save_pretrained(tmp_path)
    config, params = load_hf_checkpoint(str(tmp_path))

    prompts = _prompts([4, 9, 15, 6], seed=7)
    steps = 20
    width = max(map(len, prompts))
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=steps,
            min_new_tokens=steps,
            eos_token_id=None,
            pad_token_id=0,
        )
    want = out[:, width:].numpy()

    settings = GREEDY.replace(max_new_tokens=steps)
    got = sampling.Sampler(config).generate(params, prompts, settings, jax.random.key(0))
    np.testing.assert_array_equal(got.tokens, want)
