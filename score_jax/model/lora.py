"""LoRA as two views of one parameter tree: the frozen base, and the base plus adapters.

A ModelConfig with ``lora`` set adds, beside each adapted projection ``W`` (``attn/q``, ``mlp/up``,
...), the leaves ``{name}_lora_a`` and ``{name}_lora_b`` (`score_jax.model.transformer` applies
them). The policy's parameters are the base tree with those leaves in it; the reference is the
base tree itself: the same arrays (`base` takes the leaves out, it copies nothing), run with
``lora=None``. The optimizer holds the adapters only (`adapters`), and the train step rebuilds the
policy inside jit (`merge`) from the adapters it updates and the base it is passed.

Pure functions of nested-dict parameter trees; `init_adapters` and `merged_weights` compile.
"""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import jax.numpy as jnp

from score_jax.model.config import ModelConfig
from score_jax.model.transformer import init_params

SUFFIXES = ("_lora_a", "_lora_b")


def is_adapter(name: str) -> bool:
    """Whether a parameter's name (the last key of its path) is an adapter matrix."""
    return name.endswith(SUFFIXES)


def _filter(tree: dict, keep_adapters: bool) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            sub = _filter(value, keep_adapters)
            if sub or not keep_adapters:
                out[key] = sub
        elif is_adapter(key) == keep_adapters:
            out[key] = value
    return out


def adapters(params: dict) -> dict:
    """The adapter leaves of a policy tree, in their nested dicts (the optimizer's parameters)."""
    return _filter(params, keep_adapters=True)


def base(params: dict) -> dict:
    """The policy tree without its adapters: the frozen base, the same arrays (no copy)."""
    return _filter(params, keep_adapters=False)


def merge(base_params: dict, adapter_params: dict) -> dict:
    """The policy tree: `base_params` with `adapter_params` laid in (arrays shared, not copied)."""
    out = dict(base_params)
    for key, value in adapter_params.items():
        out[key] = merge(base_params[key], value) if isinstance(value, dict) else value
    return out


def trainable(config: ModelConfig, params: Any) -> Any:
    """What the optimizer updates: the adapters under LoRA, else every parameter."""
    return adapters(params) if config.lora is not None else params


def policy_params(config: ModelConfig, base_params: Any, trained: Any) -> Any:
    """The policy's whole tree from what the optimizer holds: under LoRA the adapters over the base
    (the reference's parameters), else `trained` itself."""
    return merge(base_params, trained) if config.lora is not None else trained


def adapters_off(config: ModelConfig, params: dict) -> dict:
    """`params` with every B at zero: the base model's outputs through the policy's own programs
    (e.g. the sampler compiled for the policy, sampling the reference)."""
    if config.lora is None:
        return params
    zeros = jax.tree.map(jnp.zeros_like, adapters(params))
    return merge(base(params), zeros)


def init_adapters(config: ModelConfig, rng: jax.Array, mesh=None, rules="fsdp") -> dict:
    """Fresh adapters (A random, B zero) of `config.lora`, created sharded by the mesh rules; the
    base weights are not computed."""
    if config.lora is None:
        raise ValueError("init_adapters needs a ModelConfig with lora set")
    return init_params(config, rng, mesh, rules, select=adapters)


def merged_weights(config: ModelConfig, params: dict) -> dict:
    """The base tree with each adapted weight replaced by ``W + (alpha / rank) A B`` (in float32,
    stored back in W's dtype): the parameters of ``config.replace(lora=None)`` that compute what
    the policy computes (a merged export)."""
    if config.lora is None:
        return params
    scale = config.lora.scale

    def merge_one(w, a, b):
        contract = lambda a, b: jnp.tensordot(a, b, axes=1)  # noqa: E731
        if a.ndim + b.ndim - 2 > w.ndim:  # stacked layers: one product per layer
            contract = jax.vmap(contract)
        delta = contract(a.astype(jnp.float32), b.astype(jnp.float32))
        return (w.astype(jnp.float32) + scale * delta).astype(w.dtype)

    def walk(tree: dict) -> dict:
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out[key] = walk(value)
            elif not is_adapter(key):
                a, b = tree.get(f"{key}_lora_a"), tree.get(f"{key}_lora_b")
                out[key] = value if a is None else merge_one(value, a, b)
        return out

    shardings = jax.tree.map(lambda x: x.sharding, base(params))
    return jax.jit(walk, out_shardings=shardings)(params)


@jax.jit
def _checksums(tree: Any) -> Any:
    """One uint32 per leaf: its bits, each weighted by an odd function of its position, summed mod 2^32
    (so a changed value or a moved one changes it; the sum is exact on any sharding)."""

    def one(x):
        width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
        bits = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)
        index = jax.lax.broadcasted_iota(jnp.uint32, x.shape, 0)
        for axis in range(1, x.ndim):
            index = index * jnp.uint32(x.shape[axis]) + jax.lax.broadcasted_iota(jnp.uint32, x.shape, axis)
        return jnp.sum(bits * (index * jnp.uint32(2654435761) + jnp.uint32(1)), dtype=jnp.uint32)

    return jax.tree.map(one, tree)


def fingerprint(params: Any) -> str:
    """A SHA-256 (hex) of every leaf's path, shape, dtype and contents checksum: two trees of equal
    fingerprint hold the same weights, however they are sharded or were loaded. One pass over the
    weights on their devices; only the checksums reach the host."""
    sums = jax.tree.leaves(jax.device_get(_checksums(params)))
    digest = hashlib.sha256()
    for (path, x), checksum in zip(jax.tree_util.tree_flatten_with_path(params)[0], sums, strict=True):
        digest.update(f"{jax.tree_util.keystr(path)}:{tuple(x.shape)}:{x.dtype}:{int(checksum)};".encode())
    return digest.hexdigest()
