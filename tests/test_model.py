"""The transformer on its own: KV cache consistency, gaps, scanned layers, sharded forward."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_jax import sharding
from score_jax.model import get_preset, transformer

SEQ = 16  # longer than tiny_gemma2's and tiny_gemma3's sliding windows (8)


def _batch(vocab, lengths, gaps=(), seed=0):
    """Left-padded (tokens, positions, valid) [B, SEQ]; `gaps` are (row, start, stop) invalid slots."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, size=(len(lengths), SEQ)).astype(np.int32)
    valid = np.arange(SEQ)[None, :] >= (SEQ - np.asarray(lengths))[:, None]
    for row, start, stop in gaps:
        valid[row, start:stop] = False
    positions = np.asarray(transformer.left_padded_positions(jnp.asarray(valid)))
    return tokens, positions, valid


def _params(config, seed=0):
    """Random parameters on the default device (numpy: compiling `init_params` takes seconds on CPU).

    Norm scales are perturbed too, so a layer that skipped its norm would show.
    """
    rng = np.random.default_rng(seed)
    shapes = nn.meta.unbox(transformer.abstract_params(config))

    def one(path, leaf):
        x = rng.standard_normal(leaf.shape).astype(np.float32)
        if path[-1].key == "scale":
            return 0.2 * x + (0.0 if config.norm_scale_plus_one else 1.0)
        return x * config.d_model**-0.5

    return jax.device_put(jax.tree_util.tree_map_with_path(one, shapes))


@pytest.mark.parametrize(
    "preset,scan",
    [
        ("tiny_gemma", False),
        ("tiny_gemma2", False),
        ("tiny_gemma2", True),
        ("tiny_qwen2", False),
        ("tiny_qwen3", False),
        ("tiny_gemma3", False),
        ("tiny_gemma3", True),
    ],
)
def test_prefill_and_decode_through_cache_match_full_forward(preset, scan):
    config = get_preset(preset, scan_layers=scan)
    params = _params(config)
    tokens, positions, valid = _batch(config.vocab_size, [16, 11, 7, 16], gaps=[(3, 4, 7)])
    full = np.asarray(transformer.forward(config, params, tokens, positions, valid))

    model = transformer.Transformer(config)
    step = jax.jit(lambda p, t, pos, v, c: model.apply({"params": p}, t, pos, v, c))
    cache = transformer.init_cache(config, tokens.shape[0], SEQ)
    prefill = 6
    logits, cache = step(params, tokens[:, :prefill], positions[:, :prefill], valid[:, :prefill], cache)
    steps = [np.asarray(logits)]
    for t in range(prefill, SEQ):
        logits, cache = step(params, tokens[:, t : t + 1], positions[:, t : t + 1], valid[:, t : t + 1], cache)
        steps.append(np.asarray(logits))
    assert int(cache.index) == SEQ
    # Gemma's random logits reach ~70, so allow fp32 rounding relative to their size.
    np.testing.assert_allclose(np.concatenate(steps, axis=1)[valid], full[valid], atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("scan", [False, True])
def test_per_row_cache_index_writes_each_row_at_its_own_depth(scan):
    """Rows that take 0, 1 or 3 tokens per call (right-padded chunks) each write compactly at their
    own index, and every valid token's logits equal a full forward over that row's own tokens."""
    config = get_preset("tiny_gemma2", scan_layers=scan)
    params = _params(config)
    rng = np.random.default_rng(1)
    counts = np.asarray([[3, 1, 0], [1, 3, 2], [0, 1, 3], [3, 3, 1], [1, 0, 3]])  # [calls, B]
    own = [rng.integers(1, config.vocab_size, size=n).astype(np.int32) for n in counts.sum(axis=0)]
    model = transformer.Transformer(config)
    step = jax.jit(lambda p, t, pos, v, c: model.apply({"params": p}, t, pos, v, c))
    cache = transformer.init_cache(config, 3, SEQ)
    cache = cache.replace(index=jnp.zeros((3,), jnp.int32))
    done, got = np.zeros(3, np.int32), [[] for _ in own]
    for n in counts:
        cols = np.arange(3)[None, :]
        valid = cols < n[:, None]
        tokens = np.stack([np.resize(row[d : d + 3], 3) for row, d in zip(own, done)])
        logits, cache = step(params, np.where(valid, tokens, 0), done[:, None] + cols, valid, cache)
        for b in range(3):
            got[b].extend(np.asarray(logits)[b, : n[b]])
        done += n
        cache = cache.replace(index=jnp.asarray(done))
    np.testing.assert_array_equal(np.asarray(cache.valid), np.arange(SEQ)[None] < done[:, None])
    for b, row in enumerate(own):
        full = transformer.forward(config, params, row[None], np.arange(len(row))[None], np.ones((1, len(row)), bool))
        np.testing.assert_allclose(np.stack(got[b]), np.asarray(full)[0], atol=1e-5, rtol=1e-6)


def test_gap_is_invisible():
    """A row with invalid slots in the middle gives the logits of the same tokens without them."""
    config = get_preset("tiny_gemma2")
    params = _params(config)
    tokens, positions, valid = _batch(config.vocab_size, [16, 16], gaps=[(0, 5, 9)])
    kept = valid[0]
    compact = np.zeros_like(tokens[:1])
    compact[0, SEQ - kept.sum() :] = tokens[0, kept]
    c_valid = np.arange(SEQ)[None] >= SEQ - kept.sum()
    c_pos = np.asarray(transformer.left_padded_positions(jnp.asarray(c_valid)))
    gapped = np.asarray(transformer.forward(config, params, tokens[:1], positions[:1], valid[:1]))
    packed = np.asarray(transformer.forward(config, params, compact, c_pos, c_valid))
    np.testing.assert_allclose(gapped[0, kept], packed[0, c_valid[0]], atol=1e-5, rtol=0)


def test_scanned_layers_match_unrolled():
    config = get_preset("tiny_qwen2", scan_layers=True, remat_policy="dots")
    scanned = _params(config)
    unrolled = {k: v for k, v in scanned.items() if k != "layers"}
    for i in range(config.num_layers):
        unrolled[f"layer_{i}"] = jax.tree.map(lambda x, i=i: x[i], scanned["layers"])
    tokens, positions, valid = _batch(config.vocab_size, [16, 9])
    a = transformer.forward(config, scanned, tokens, positions, valid)
    b = transformer.forward(config.replace(scan_layers=False, remat_policy="none"), unrolled, tokens, positions, valid)
    np.testing.assert_allclose(np.asarray(a)[valid], np.asarray(b)[valid], atol=1e-5, rtol=0)


# Logical axes of each parameter (by leaf name), and what each rule set maps them to.
_LOGICAL = {
    "embedding": ("vocab", "embed"),
    "lm_head": ("embed", "vocab"),
    "scale": ("embed",),
    "q_norm": ("head_dim",),
    "k_norm": ("head_dim",),
    "q": ("embed", "heads", "head_dim"),
    "k": ("embed", "kv_heads", "head_dim"),
    "v": ("embed", "kv_heads", "head_dim"),
    "o": ("heads", "head_dim", "embed"),
    "q_bias": ("heads", "head_dim"),
    "k_bias": ("kv_heads", "head_dim"),
    "v_bias": ("kv_heads", "head_dim"),
    "gate": ("embed", "mlp"),
    "up": ("embed", "mlp"),
    "down": ("mlp", "embed"),
}
_MESH_AXES = {
    "data_parallel": {},
    "fsdp": {"embed": "fsdp"},
    "fsdp_tensor": {"embed": "fsdp", "vocab": "tensor", "heads": "tensor", "kv_heads": "tensor", "mlp": "tensor"},
}
# Rule sets and 8-device mesh shapes (data, fsdp, tensor); the tiny configs divide every axis.
MESHES = [("data_parallel", (8, 1, 1)), ("fsdp", (2, 4, 1)), ("fsdp_tensor", (2, 2, 2))]


def check_param_shardings(params, rules: str) -> None:
    """Every parameter's PartitionSpec is what the rule set says for its logical axes."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(k.key) for k in path]
        name = keys[-2] if keys[-2:-1] in (["q_norm"], ["k_norm"]) else keys[-1]  # their scales span head_dim
        names = (("layers",) if keys[0] == "layers" else ()) + _LOGICAL[name]
        expected = tuple(_MESH_AXES[rules].get(n) for n in names)
        spec = tuple(leaf.sharding.spec) + (None,) * (leaf.ndim - len(leaf.sharding.spec))
        assert spec == expected, ("/".join(keys), spec, expected)


@pytest.mark.parametrize("rules,mesh_shape", MESHES)
def test_sharded_forward_matches_single_device(rules, mesh_shape):
    config = get_preset("tiny_qwen2", tie_embeddings=False)
    mesh = sharding.make_mesh(mesh_shape)
    single = _params(config)
    # The shardings init_params creates parameters with (it is too slow to compile here on CPU).
    params = jax.device_put(single, transformer.param_shardings(config, mesh, rules))
    check_param_shardings(params, rules)
    tokens, positions, valid = _batch(config.vocab_size, [16, 11, 7, 16, 1, 5, 16, 12])
    ref = np.asarray(transformer.forward(config, single, tokens, positions, valid))

    with sharding.use_sharding(mesh, rules) as ctx:
        data = ctx.sharding(("batch", "length"))
        fwd = jax.jit(lambda p, t, pos, v: transformer.Transformer(config).apply({"params": p}, t, pos, v)[0])
        out = fwd(params, *(jax.device_put(x, data) for x in (tokens, positions, valid)))
    np.testing.assert_allclose(np.asarray(out)[valid], ref[valid], atol=1e-5, rtol=0)


def test_cudnn_attention_needs_half_precision_and_no_softcap():
    with pytest.raises(ValueError, match="attention_impl='cudnn' needs dtype bfloat16"):
        get_preset("tiny_llama", attention_impl="cudnn")
    with pytest.raises(ValueError, match="attn_logit_softcap"):
        get_preset("tiny_gemma2", attention_impl="cudnn", dtype="bfloat16")
    with pytest.raises(ValueError, match="unknown attention_impl"):
        get_preset("tiny_llama", attention_impl="flash")
    assert get_preset("tiny_llama", attention_impl="cudnn", dtype="bfloat16").attention_impl == "cudnn"


_GPUS = [d for d in jax.devices() if d.platform == "gpu"]


@pytest.mark.skipif(not _GPUS, reason="cuDNN attention needs an NVIDIA GPU (run with JAX_PLATFORMS=cuda)")
def test_cudnn_attention_matches_xla_forward_and_gradients():
    """The fused kernel sees the same mask: left padding, a gap, GQA; logits and gradients agree (bf16)."""
    xla = get_preset("tiny_llama", dtype="bfloat16", head_dim=64, num_heads=4, num_kv_heads=2)
    cudnn = xla.replace(attention_impl="cudnn")
    params = _params(xla)
    tokens, positions, valid = _batch(xla.vocab_size, [16, 11, 7, 16], gaps=[(3, 4, 7)])

    def loss(config, p):
        logits = transformer.forward(config, p, tokens, positions, valid).astype(jnp.float32)
        logp = jax.nn.log_softmax(logits)[:, :-1]
        picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
        return jnp.sum(picked * valid[:, 1:]), logits

    (l_x, logits_x), g_x = jax.jit(jax.value_and_grad(functools.partial(loss, xla), has_aux=True))(params)
    (l_c, logits_c), g_c = jax.jit(jax.value_and_grad(functools.partial(loss, cudnn), has_aux=True))(params)
    rows = np.asarray(valid)
    np.testing.assert_allclose(np.asarray(logits_c)[rows], np.asarray(logits_x)[rows], atol=5e-2, rtol=5e-2)
    np.testing.assert_allclose(float(l_c), float(l_x), rtol=1e-2)
    for a, b in zip(jax.tree.leaves(g_c), jax.tree.leaves(g_x)):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        assert np.linalg.norm(a - b) <= 0.05 * np.linalg.norm(b) + 1e-6
