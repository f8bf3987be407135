"""A decoder-only transformer (Gemma 1/2/3, Llama 3, Qwen2/3) with a key/value cache.

One module serves training (full sequences), reference scoring and sampling (prefill and
one-token decode on the same cache), so the sampler never needs a second model.

Batches are left-padded and may hold gaps (rows that finished attempt 1 early wait with invalid
slots before the correction instruction). Every token therefore carries an explicit position id
and a validity flag, and attention is masked by *positions*, not slot indices:
key ``s`` is visible to query ``t`` iff ``valid[s] and pos[s] <= pos[t]`` (and, on local layers,
``pos[t] - pos[s] < sliding_window``).

Shapes: B batch, T new tokens, S cache slots, L layers, H query heads, K key/value heads,
D head width, E model width, V vocabulary.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from score_jax import sharding
from score_jax.model.config import ModelConfig

Array = jax.Array


@flax.struct.dataclass
class KVCache:
    """Key/value cache for all layers. Rows are left-aligned: slot ``index`` is written next.

    ``index`` is one slot for every row ([]), or each row's own next slot ([B]: rows that write at
    different depths, as the slot-pool sampler's do; a chunk's slots past S are then dropped).
    Heads come before slots ([L, B, K, S, D]) so attention contracts a layer's cache as it lies in
    memory, without transposing it every decode step; slice slots on axis 3 (`max_len`).
    """

    k: Array  # [L, B, K, S, D]
    v: Array  # [L, B, K, S, D]
    positions: Array  # [B, S] int32: position id of the token in each slot
    valid: Array  # [B, S] bool: the slot holds a real token
    index: Array  # [] or [B] int32: next slot to write

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype: Any = None) -> KVCache:
    """An empty cache of `max_len` slots (dtype defaults to the compute dtype)."""
    dtype = dtype or config.dtype
    shape = (config.num_layers, batch, config.num_kv_heads, max_len, config.head_dim)
    return KVCache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        positions=jnp.zeros((batch, max_len), jnp.int32),
        valid=jnp.zeros((batch, max_len), bool),
        index=jnp.zeros((), jnp.int32),
    )


def cache_logical_axes() -> KVCache:
    """Logical axis names of each cache field (for shardings)."""
    kv = ("layers", "batch", "kv_heads", "cache_length", "head_dim")
    return KVCache(k=kv, v=kv, positions=("batch", "cache_length"), valid=("batch", "cache_length"), index=())


def write_rows(buffer: Array, chunk: Array, index: Array) -> Array:
    """`buffer` [B, S, ...] with row b of `chunk` [B, T, ...] written at its slots [index[b], index[b] + T)
    (slots past S are dropped)."""
    slots = index[:, None] + jnp.arange(chunk.shape[1])[None, :]
    return buffer.at[jnp.arange(buffer.shape[0])[:, None], slots].set(chunk.astype(buffer.dtype), mode="drop")


def _param(module: nn.Module, name: str, shape, axes, init, config: ModelConfig, dtype: str | None = None) -> Array:
    """A parameter stored in `dtype` (default ``config.param_dtype``), returned in the compute dtype."""
    w = module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.dtype(dtype or config.param_dtype))
    return jnp.asarray(w, config.dtype)


def _dense_init(fan_in: int):
    return nn.initializers.normal(stddev=fan_in**-0.5)


def _lora_delta(module: nn.Module, name: str, x: Array, in_axes: tuple[str, ...], out_shape, out_axes, config):
    """The adapter's term ``(alpha / rank) * (x A) B`` of projection `name`, or 0 where it has none.

    `x` [..., *in] is the projection's input, its last ``len(in_axes)`` axes contracted; the term is
    [..., *out_shape]. A (``{name}_lora_a`` [*in, rank]) starts random and B (``{name}_lora_b``
    [rank, *out]) at zero, so a fresh adapter adds exactly 0. Their axes keep the weight's logical
    names (the rank is ``lora_rank``, which no rule set shards), so the mesh rules split them as
    they split the weight.
    """
    lora = config.lora
    if lora is None or name not in lora.targets:
        return 0
    n = len(in_axes)
    in_shape = x.shape[-n:]
    a = _param(
        module,
        f"{name}_lora_a",
        (*in_shape, lora.rank),
        (*in_axes, "lora_rank"),
        _dense_init(int(np.prod(in_shape))),
        config,
        lora.param_dtype,
    )
    b = _param(
        module,
        f"{name}_lora_b",
        (lora.rank, *out_shape),
        ("lora_rank", *out_axes),
        nn.initializers.zeros,
        config,
        lora.param_dtype,
    )
    return jnp.tensordot(jnp.tensordot(x, a, axes=n), b, axes=1) * jnp.asarray(lora.scale, config.dtype)


class RMSNorm(nn.Module):
    """Normalises the last axis of [..., N]; `axis` is its logical name (``embed``, or ``head_dim`` for q/k norms)."""

    config: ModelConfig
    axis: str = "embed"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        init = nn.initializers.zeros if cfg.norm_scale_plus_one else nn.initializers.ones
        scale = self.param(
            "scale", nn.with_logical_partitioning(init, (self.axis,)), (x.shape[-1],), jnp.dtype(cfg.param_dtype)
        )
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.norm_eps)
        if cfg.norm_scale_plus_one:
            # Gemma scales in fp32 before casting back.
            return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)
        return scale.astype(x.dtype) * normed.astype(x.dtype)


def rope_inv_freq(config: ModelConfig, local: bool = False) -> np.ndarray:
    """Inverse rotary frequencies [D/2] of global layers (scaled where configured) or of local ones.

    Local layers use ``rope_local_theta`` unscaled when it is set (Gemma 3), else the global frequencies.
    """
    d = config.head_dim
    exponents = np.arange(0, d, 2, dtype=np.float64) / d
    if local and config.rope_local_theta is not None:
        return (1.0 / config.rope_local_theta**exponents).astype(np.float32)
    inv = 1.0 / (config.rope_theta**exponents)
    if config.rope_linear_factor is not None:
        inv = inv / config.rope_linear_factor
    if config.rope_llama3_scaling is not None:
        factor, low, high, original = config.rope_llama3_scaling
        wavelen = 2 * np.pi / inv
        low_wavelen, high_wavelen = original / low, original / high
        smooth = (original / wavelen - low) / (high - low)
        scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = np.where(medium, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv.astype(np.float32)


def apply_rope(x: Array, positions: Array, inv_freq: np.ndarray | Array) -> Array:
    """Rotates [B, T, N, D] by positions [B, T] (half-split convention)."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def attention_mask(q_pos: Array, k_pos: Array, k_valid: Array, window: Array | None) -> Array:
    """[B, T, S] visibility of key slots to query tokens (see module docstring)."""
    diff = q_pos[:, :, None] - k_pos[:, None, :]
    mask = k_valid[:, None, :] & (diff >= 0)
    if window is not None:
        mask &= diff < window
    return mask


class Attention(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, ctx: dict, kv: tuple[Array, Array] | None, layer: Array):
        cfg = self.config
        e, h, k, d = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        wq = _param(self, "q", (e, h, d), ("embed", "heads", "head_dim"), _dense_init(e), cfg)
        wk = _param(self, "k", (e, k, d), ("embed", "kv_heads", "head_dim"), _dense_init(e), cfg)
        wv = _param(self, "v", (e, k, d), ("embed", "kv_heads", "head_dim"), _dense_init(e), cfg)
        wo = _param(self, "o", (h, d, e), ("heads", "head_dim", "embed"), _dense_init(h * d), cfg)
        q = jnp.einsum("bte,ehd->bthd", x, wq) + _lora_delta(
            self, "q", x, ("embed",), (h, d), ("heads", "head_dim"), cfg
        )
        kv_axes = ("kv_heads", "head_dim")
        key = jnp.einsum("bte,ekd->btkd", x, wk) + _lora_delta(self, "k", x, ("embed",), (k, d), kv_axes, cfg)
        value = jnp.einsum("bte,ekd->btkd", x, wv) + _lora_delta(self, "v", x, ("embed",), (k, d), kv_axes, cfg)
        if cfg.qkv_bias:
            q += _param(self, "q_bias", (h, d), ("heads", "head_dim"), nn.initializers.zeros, cfg)
            key += _param(self, "k_bias", (k, d), ("kv_heads", "head_dim"), nn.initializers.zeros, cfg)
            value += _param(self, "v_bias", (k, d), ("kv_heads", "head_dim"), nn.initializers.zeros, cfg)
        if cfg.qk_norm:
            q = RMSNorm(cfg, "head_dim", name="q_norm")(q)
            key = RMSNorm(cfg, "head_dim", name="k_norm")(key)

        # `layer` is traced under scan_layers, so a layer's kind selects among values, not code paths.
        window, inv_freq = None, rope_inv_freq(cfg)
        if cfg.sliding_window is not None:
            is_local = (layer + 1) % cfg.sliding_window_pattern != 0
            window = jnp.where(is_local, cfg.sliding_window, jnp.iinfo(jnp.int32).max)
            if cfg.rope_local_theta is not None:
                inv_freq = jnp.where(is_local, rope_inv_freq(cfg, local=True), inv_freq)
        q = apply_rope(q, ctx["positions"], inv_freq) * jnp.asarray(cfg.query_scale, cfg.dtype)
        key = apply_rope(key, ctx["positions"], inv_freq)
        mask = attention_mask(ctx["positions"], ctx["k_positions"], ctx["k_valid"], window)
        b, t = x.shape[:2]
        if kv is None and cfg.attention_impl == "cudnn":
            # Fused kernel: the [B, N, T, S] scores never reach memory. Queries are already scaled.
            out = jax.nn.dot_product_attention(q, key, value, mask=mask[:, None], scale=1.0, implementation="cudnn")
            out = sharding.constrain(out, ("batch", "length", "heads", "head_dim"))
            return self._output(out, wo), kv

        # Keys and values as the cache holds them, heads before slots: [B, K, T, D].
        key, value = key.transpose(0, 2, 1, 3), value.transpose(0, 2, 1, 3)
        if kv is None:  # full-sequence forward: keys are this chunk
            keys, values = key, value
        else:  # write the chunk into this layer's cache slots, then attend over the whole cache
            cache_k, cache_v = kv
            if ctx["index"].ndim:  # per-row slots: one scatter of [B, T, K, D] at (layer, b, :, slot_b + t)
                rows = jnp.arange(b)[:, None]
                slots = ctx["index"][:, None] + jnp.arange(t)[None, :]
                new_k, new_v = (x.transpose(0, 2, 1, 3).astype(cache_k.dtype) for x in (key, value))
                cache_k = cache_k.at[layer, rows, :, slots].set(new_k, mode="drop")
                cache_v = cache_v.at[layer, rows, :, slots].set(new_v, mode="drop")
            else:
                start = (layer, 0, 0, ctx["index"], 0)
                cache_k = jax.lax.dynamic_update_slice(cache_k, key[None].astype(cache_k.dtype), start)
                cache_v = jax.lax.dynamic_update_slice(cache_v, value[None].astype(cache_v.dtype), start)
            kv = (cache_k, cache_v)
            # Only the first W slots are attended (W = the window the caller asked for; see __call__).
            _, batch, heads, _, dim = cache_k.shape
            size = (1, batch, heads, ctx["k_positions"].shape[1], dim)
            keys = jax.lax.dynamic_slice(cache_k, (layer, 0, 0, 0, 0), size)[0].astype(cfg.dtype)
            values = jax.lax.dynamic_slice(cache_v, (layer, 0, 0, 0, 0), size)[0].astype(cfg.dtype)

        q = q.reshape(b, t, k, h // k, d)
        logits = jnp.einsum("btkgd,bksd->bkgts", q, keys).astype(jnp.float32)
        if cfg.attn_logit_softcap is not None:
            logits = jnp.tanh(logits / cfg.attn_logit_softcap) * cfg.attn_logit_softcap
        logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(cfg.dtype)
        # Heads-major output, then one small transpose: asked for "btkgd" directly, XLA:CPU contracts
        # the values over their slot axis in a plain (non-XNNPACK) dot, ~10x slower per decode step.
        out = jnp.einsum("bkgts,bksd->bkgtd", probs, values).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)
        out = sharding.constrain(out, ("batch", "length", "heads", "head_dim"))
        return self._output(out, wo), kv

    def _output(self, out: Array, wo: Array) -> Array:
        """The output projection [B, T, H, D] -> [B, T, E] (and its adapter)."""
        delta = _lora_delta(self, "o", out, ("heads", "head_dim"), (self.config.d_model,), ("embed",), self.config)
        # One [B, T, H*D] x [H*D, E] product: both reshapes are free (row-major), while contracting
        # (h, d) in an einsum made XLA:CPU copy a transposed wo on every decode step.
        b, t, h, d = out.shape
        return (out.reshape(b, t, h * d) @ wo.reshape(h * d, -1)) + delta


class MLP(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        e, m = cfg.d_model, cfg.mlp_dim
        gate = _param(self, "gate", (e, m), ("embed", "mlp"), _dense_init(e), cfg)
        up = _param(self, "up", (e, m), ("embed", "mlp"), _dense_init(e), cfg)
        down = _param(self, "down", (m, e), ("mlp", "embed"), _dense_init(m), cfg)
        g = x @ gate + _lora_delta(self, "gate", x, ("embed",), (m,), ("mlp",), cfg)
        g = jax.nn.gelu(g, approximate=True) if cfg.activation == "gelu_tanh" else jax.nn.silu(g)
        u = x @ up + _lora_delta(self, "up", x, ("embed",), (m,), ("mlp",), cfg)
        hidden = sharding.constrain(g * u, ("batch", "length", "mlp"))
        return hidden @ down + _lora_delta(self, "down", hidden, ("mlp",), (e,), ("embed",), cfg)


class Block(nn.Module):
    """One transformer layer. ``(carry, layer) -> (carry, None)`` so it can be scanned."""

    config: ModelConfig

    @nn.compact
    def __call__(self, carry, layer: Array, ctx: dict):
        cfg = self.config
        x, kv = carry
        attn_out, kv = Attention(cfg, name="attn")(RMSNorm(cfg, name="pre_attn_norm")(x), ctx, kv, layer)
        if cfg.post_norms:
            attn_out = RMSNorm(cfg, name="post_attn_norm")(attn_out)
        x = x + attn_out
        mlp_out = MLP(cfg, name="mlp")(RMSNorm(cfg, name="pre_mlp_norm")(x))
        if cfg.post_norms:
            mlp_out = RMSNorm(cfg, name="post_mlp_norm")(mlp_out)
        x = sharding.constrain(x + mlp_out, ("batch", "length", "embed"))
        return (x, kv), None


_REMAT = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Transformer(nn.Module):
    """Decoder-only transformer.

    ``__call__(tokens [B,T], positions [B,T], valid [B,T], cache=None)`` returns
    ``(logits [B,T,V] float32, cache)``. Without a cache, the T tokens attend to each other; with
    one, they are written at slots ``[cache.index, cache.index + T)`` (of each row, when the index
    is per row) and attend to every valid slot, so the same call is both prefill (T = prompt
    length) and decode (T = 1). With ``window=W`` they attend to the first W slots only
    (W >= cache.index + T: slots past the written ones hold nothing valid), which makes a step's
    attention cost grow with the filled prefix rather than the whole cache, without copying it.
    """

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(
                nn.initializers.normal(stddev=1.0 if cfg.scale_embeddings else 0.02), ("vocab", "embed")
            ),
            (cfg.vocab_size, cfg.d_model),
            jnp.dtype(cfg.param_dtype),
        )
        block = Block
        if cfg.remat_policy != "none":
            block = nn.remat(Block, policy=_REMAT[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            self.layers = nn.scan(
                block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(0, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg, name="layers")
        else:
            self.layers = [block(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]
        self.final_norm = RMSNorm(cfg, name="final_norm")
        if not cfg.tie_embeddings:
            self.lm_head = self.param(
                "lm_head",
                nn.with_logical_partitioning(_dense_init(cfg.d_model), ("embed", "vocab")),
                (cfg.d_model, cfg.vocab_size),
                jnp.dtype(cfg.param_dtype),
            )

    def __call__(
        self,
        tokens: Array,
        positions: Array,
        valid: Array,
        cache: KVCache | None = None,
        *,
        return_hidden: bool = False,
        window: int | None = None,
    ):
        cfg = self.config
        x = jnp.take(jnp.asarray(self.embedding, cfg.dtype), tokens, axis=0)
        if cfg.scale_embeddings:
            x = x * jnp.asarray(cfg.d_model**0.5, cfg.dtype)
        x = sharding.constrain(x, ("batch", "length", "embed"))
        positions = positions.astype(jnp.int32)
        ctx = {"positions": positions}
        if cache is None:
            ctx.update(k_positions=positions, k_valid=valid, index=None)
            kv = None
        else:
            if cache.index.ndim:
                k_positions = write_rows(cache.positions, positions, cache.index)
                k_valid = write_rows(cache.valid, valid, cache.index)
            else:
                start = (0, cache.index)
                k_positions = jax.lax.dynamic_update_slice(cache.positions, positions, start)
                k_valid = jax.lax.dynamic_update_slice(cache.valid, valid.astype(bool), start)
            width = cache.max_len if window is None else min(window, cache.max_len)
            ctx.update(k_positions=k_positions[:, :width], k_valid=k_valid[:, :width], index=cache.index)
            kv = (cache.k, cache.v)

        if cfg.scan_layers:
            (x, kv), _ = self.layers((x, kv), jnp.arange(cfg.num_layers), ctx)
        else:
            for i, layer in enumerate(self.layers):
                (x, kv), _ = layer((x, kv), jnp.asarray(i), ctx)

        x = self.final_norm(x)
        if cache is not None:
            cache = KVCache(k=kv[0], v=kv[1], positions=k_positions, valid=k_valid, index=cache.index + tokens.shape[1])
        if return_hidden:
            return x, cache
        return self.logits(x), cache

    def logits(self, hidden: Array) -> Array:
        """Output logits [..., V] in float32 from final hidden states [..., E]."""
        cfg = self.config
        if cfg.tie_embeddings:
            logits = hidden @ jnp.asarray(self.embedding, cfg.dtype).T
        else:
            logits = hidden @ jnp.asarray(self.lm_head, cfg.dtype)
        logits = logits.astype(jnp.float32)
        if cfg.final_logit_softcap is not None:
            logits = jnp.tanh(logits / cfg.final_logit_softcap) * cfg.final_logit_softcap
        return logits


# ---------------------------------------------------------------------------------------------
# Parameter creation, directly sharded.


def _dummy_inputs(batch: int = 1, length: int = 1):
    tokens = jnp.zeros((batch, length), jnp.int32)
    return tokens, jnp.zeros_like(tokens), jnp.ones((batch, length), bool)


def abstract_params(config: ModelConfig) -> Any:
    """Shapes, dtypes and logical axis names of all parameters, without allocating them."""
    model = Transformer(config)
    return jax.eval_shape(lambda rng: model.init(rng, *_dummy_inputs())["params"], jax.random.key(0))


def param_shardings(config: ModelConfig, mesh, rules) -> Any:
    """NamedShardings for the (unboxed) parameter tree under a rule set."""
    boxed = abstract_params(config)
    return sharding.shardings_for_logical(boxed, mesh, sharding.resolve_rules(rules))


def init_params(config: ModelConfig, rng: Array, mesh=None, rules="fsdp", select=None) -> Any:
    """Random parameters, created already sharded on `mesh` (never whole on one device).

    `select` (a function of the parameter tree, e.g. `score_jax.model.lora.adapters`) keeps part of
    it; the rest is never computed.
    """
    model = Transformer(config)
    select = select or (lambda tree: tree)

    def init(key):
        return select(nn.meta.unbox(model.init(key, *_dummy_inputs())["params"]))

    if mesh is None:
        return jax.jit(init)(rng)
    return jax.jit(init, out_shardings=select(param_shardings(config, mesh, rules)))(rng)


@functools.partial(jax.jit, static_argnames=("config",))
def forward(config: ModelConfig, params: Any, tokens: Array, positions: Array, valid: Array) -> Array:
    """Full-sequence logits [B, T, V] (a convenience for tests and scoring)."""
    logits, _ = Transformer(config).apply({"params": params}, tokens, positions, valid)
    return logits


def left_padded_positions(valid: Array) -> Array:
    """Position ids [B, T] for a left-padded (or gapped) batch: count of valid tokens before."""
    valid = valid.astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(valid, axis=-1) - 1, 0)
