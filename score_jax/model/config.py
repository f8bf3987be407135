"""Model configurations: one decoder-only transformer, four families, real and tiny presets."""

from __future__ import annotations

import dataclasses
from typing import Literal

Family = Literal["gemma", "gemma2", "llama", "qwen2"]
FAMILIES = ("gemma", "gemma2", "llama", "qwen2")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ATTENTION_IMPLS = ("xla", "cudnn")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and numerics of a decoder-only transformer (hashable: a static jit argument).

    Family differences are plain fields, so a new family is a new preset, not new model code.
    """

    family: Family
    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    activation: Literal["gelu_tanh", "silu"] = "silu"
    norm_eps: float = 1e-6
    # Gemma's RMSNorm multiplies by (1 + w) instead of w.
    norm_scale_plus_one: bool = False
    # Gemma multiplies input embeddings by sqrt(d_model).
    scale_embeddings: bool = False
    tie_embeddings: bool = False
    # Qwen2 has biases on the q, k and v projections.
    qkv_bias: bool = False
    rope_theta: float = 10_000.0
    # Llama 3 frequency scaling: (factor, low_freq_factor, high_freq_factor, original_max_len).
    rope_llama3_scaling: tuple[float, float, float, int] | None = None
    # Gemma 2: tanh soft-capping of attention logits and of the final logits.
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    # Gemma 2: sliding-window (local) attention on all but every `sliding_window_pattern`-th layer.
    sliding_window: int | None = None
    sliding_window_pattern: int = 2
    # Gemma 2: extra norms after attention and after the MLP (before the residual add).
    post_norms: bool = False
    # Queries are scaled by query_pre_attn_scalar**-0.5 (default head_dim**-0.5).
    query_pre_attn_scalar: float | None = None
    max_seq_len: int = 8192
    # Numerics and compilation.
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat_policy: str = "none"
    scan_layers: bool = False
    # Attention over a whole sequence (training, reference scoring): "xla" (einsums and a softmax) or
    # "cudnn" (cuDNN's fused flash-attention kernel; NVIDIA GPUs, bf16/fp16, no logit soft-cap).
    # Decoding against the KV cache always uses the xla path.
    attention_impl: str = "xla"

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; known: {FAMILIES}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"unknown remat_policy {self.remat_policy!r}; known: {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention_impl {self.attention_impl!r}; known: {ATTENTION_IMPLS}")
        if self.attention_impl == "cudnn" and (self.attn_logit_softcap is not None or self.dtype == "float32"):
            raise ValueError(
                "attention_impl='cudnn' needs dtype bfloat16 or float16 and no attn_logit_softcap "
                f"(got dtype={self.dtype!r}, attn_logit_softcap={self.attn_logit_softcap})"
            )
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"{name}={getattr(self, name)!r}: use float32, bfloat16 or float16")

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @property
    def query_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def is_local_layer(self, layer: int) -> bool:
        return self.sliding_window is not None and (layer + 1) % self.sliding_window_pattern != 0

    def num_params(self) -> int:
        e, h, k, d, m = self.d_model, self.num_heads, self.num_kv_heads, self.head_dim, self.mlp_dim
        attn = e * h * d * 2 + e * k * d * 2 + (self.qkv_bias and (h + 2 * k) * d)
        mlp = 3 * e * m
        norms = (4 if self.post_norms else 2) * e
        embed = self.vocab_size * e * (1 if self.tie_embeddings else 2)
        return self.num_layers * (attn + mlp + norms) + embed + e

    def flops_per_token(self, context_len: int) -> float:
        """Forward FLOPs per token: 2 * matmul params + attention over `context_len` keys."""
        e, h, k, d, m = self.d_model, self.num_heads, self.num_kv_heads, self.head_dim, self.mlp_dim
        matmul_params = self.num_layers * (e * h * d * 2 + e * k * d * 2 + 3 * e * m) + self.vocab_size * e
        attention = self.num_layers * 2 * 2 * h * d * context_len
        return 2.0 * matmul_params + attention


_GEMMA = dict(
    family="gemma",
    activation="gelu_tanh",
    norm_scale_plus_one=True,
    scale_embeddings=True,
    tie_embeddings=True,
    norm_eps=1e-6,
)
_GEMMA2 = dict(
    _GEMMA, family="gemma2", attn_logit_softcap=50.0, final_logit_softcap=30.0, sliding_window=4096, post_norms=True
)
_LLAMA = dict(family="llama", activation="silu", norm_eps=1e-5, rope_theta=500_000.0)
_QWEN2 = dict(family="qwen2", activation="silu", norm_eps=1e-6, qkv_bias=True, rope_theta=1_000_000.0)

PRESETS: dict[str, ModelConfig] = {
    "gemma_2b": ModelConfig(
        **_GEMMA,
        vocab_size=256_000,
        d_model=2048,
        num_layers=18,
        num_heads=8,
        num_kv_heads=1,
        head_dim=256,
        mlp_dim=16_384,
    ),
    "gemma_7b": ModelConfig(
        **_GEMMA,
        vocab_size=256_000,
        d_model=3072,
        num_layers=28,
        num_heads=16,
        num_kv_heads=16,
        head_dim=256,
        mlp_dim=24_576,
    ),
    "gemma2_2b": ModelConfig(
        **_GEMMA2,
        vocab_size=256_000,
        d_model=2304,
        num_layers=26,
        num_heads=8,
        num_kv_heads=4,
        head_dim=256,
        mlp_dim=9216,
        query_pre_attn_scalar=256,
    ),
    "gemma2_9b": ModelConfig(
        **_GEMMA2,
        vocab_size=256_000,
        d_model=3584,
        num_layers=42,
        num_heads=16,
        num_kv_heads=8,
        head_dim=256,
        mlp_dim=14_336,
        query_pre_attn_scalar=256,
    ),
    "llama3p2_1b": ModelConfig(
        **_LLAMA,
        vocab_size=128_256,
        d_model=2048,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        mlp_dim=8192,
        tie_embeddings=True,
        rope_llama3_scaling=(32.0, 1.0, 4.0, 8192),
        max_seq_len=131_072,
    ),
    "llama3p2_3b": ModelConfig(
        **_LLAMA,
        vocab_size=128_256,
        d_model=3072,
        num_layers=28,
        num_heads=24,
        num_kv_heads=8,
        head_dim=128,
        mlp_dim=8192,
        tie_embeddings=True,
        rope_llama3_scaling=(32.0, 1.0, 4.0, 8192),
        max_seq_len=131_072,
    ),
    "llama3p1_8b": ModelConfig(
        **_LLAMA,
        vocab_size=128_256,
        d_model=4096,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        head_dim=128,
        mlp_dim=14_336,
        rope_llama3_scaling=(8.0, 1.0, 4.0, 8192),
        max_seq_len=131_072,
    ),
    "qwen2p5_0p5b": ModelConfig(
        **_QWEN2,
        vocab_size=151_936,
        d_model=896,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        head_dim=64,
        mlp_dim=4864,
        tie_embeddings=True,
        max_seq_len=32_768,
    ),
    "qwen2p5_1p5b": ModelConfig(
        **_QWEN2,
        vocab_size=151_936,
        d_model=1536,
        num_layers=28,
        num_heads=12,
        num_kv_heads=2,
        head_dim=128,
        mlp_dim=8960,
        tie_embeddings=True,
        max_seq_len=32_768,
    ),
    "qwen2p5_7b": ModelConfig(
        **_QWEN2,
        vocab_size=152_064,
        d_model=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        head_dim=128,
        mlp_dim=18_944,
        max_seq_len=32_768,
    ),
    # ~125M Llama-style model used by the benchmarks.
    "llama_125m": ModelConfig(
        **_LLAMA,
        vocab_size=32_000,
        d_model=768,
        num_layers=12,
        num_heads=12,
        num_kv_heads=4,
        head_dim=64,
        mlp_dim=2048,
        max_seq_len=4096,
    ),
    # Tiny models for tests and the CPU demo (one per family).
    "tiny_gemma": ModelConfig(
        **_GEMMA,
        vocab_size=256,
        d_model=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=1,
        head_dim=16,
        mlp_dim=128,
        max_seq_len=512,
    ),
    "tiny_gemma2": ModelConfig(
        **_GEMMA2 | dict(sliding_window=8),
        vocab_size=256,
        d_model=64,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        mlp_dim=128,
        query_pre_attn_scalar=24,
        max_seq_len=512,
    ),
    "tiny_llama": ModelConfig(
        **_LLAMA,
        vocab_size=256,
        d_model=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        mlp_dim=128,
        rope_llama3_scaling=(8.0, 1.0, 4.0, 64),
        max_seq_len=512,
    ),
    "tiny_qwen2": ModelConfig(
        **_QWEN2,
        vocab_size=256,
        d_model=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        mlp_dim=128,
        max_seq_len=512,
    ),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """A preset by name, with field overrides (e.g. ``dtype="bfloat16"``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
