"""The policy/reference network: one decoder-only transformer with family presets."""

from score_jax.model.config import FAMILIES, PRESETS, ModelConfig, get_preset
from score_jax.model.transformer import (
    KVCache,
    Transformer,
    abstract_params,
    cache_logical_axes,
    forward,
    init_cache,
    init_params,
    left_padded_positions,
    param_shardings,
)

__all__ = [
    "FAMILIES",
    "PRESETS",
    "ModelConfig",
    "get_preset",
    "KVCache",
    "Transformer",
    "abstract_params",
    "cache_logical_axes",
    "forward",
    "init_cache",
    "init_params",
    "left_padded_positions",
    "param_shardings",
]
