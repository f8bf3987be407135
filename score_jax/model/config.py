"""Model configurations: one decoder-only transformer, six families, real and tiny presets."""

from __future__ import annotations

import dataclasses
from typing import Literal

Family = Literal["gemma", "gemma2", "gemma3", "llama", "qwen2", "qwen3"]
FAMILIES = ("gemma", "gemma2", "gemma3", "llama", "qwen2", "qwen3")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
ATTENTION_IMPLS = ("xla", "cudnn")
# Projections LoRA can adapt: attention's query, key, value and output, the MLP's three.
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters on projections (Hu et al. 2021): ``W x + (alpha / rank) * B (A x)``.

    A is [inputs..., rank] (random), B is [rank, outputs...] (zeros), so a fresh adapter changes
    nothing. No dropout: the trained log-probs must be the ones the sampler drew from.
    """

    rank: int
    alpha: float
    targets: tuple[str, ...] = LORA_TARGETS
    param_dtype: str = "float32"  # the adapters' stored dtype (the base keeps ModelConfig.param_dtype)

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoRA rank={self.rank} must be >= 1")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha={self.alpha} must be > 0")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets:
            raise ValueError(f"LoRA targets {self.targets}: choose some of {LORA_TARGETS}")
        if self.param_dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"LoRA param_dtype={self.param_dtype!r}: use float32, bfloat16 or float16")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


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
    # Qwen3, Gemma 3: an RMSNorm over each query and key head (width head_dim) before RoPE.
    qk_norm: bool = False
    rope_theta: float = 10_000.0
    # Llama 3 frequency scaling: (factor, low_freq_factor, high_freq_factor, original_max_len).
    rope_llama3_scaling: tuple[float, float, float, int] | None = None
    # Linear RoPE scaling (Gemma 3 4B and up, global layers): positions are divided by this factor.
    rope_linear_factor: float | None = None
    # Gemma 3: the RoPE base of local (sliding-window) layers, unscaled; None = they rotate as global ones.
    rope_local_theta: float | None = None
    # Gemma 2: tanh soft-capping of attention logits and of the final logits.
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    # Gemma 2/3: sliding-window (local) attention on all but every `sliding_window_pattern`-th layer.
    sliding_window: int | None = None
    sliding_window_pattern: int = 2
    # Gemma 2/3: extra norms after attention and after the MLP (before the residual add).
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
    # Low-rank adapters on top of the (then frozen) weights; None = every weight is trained.
    lora: LoraConfig | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; known: {FAMILIES}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"unknown remat_policy {self.remat_policy!r}; known: {REMAT_POLICIES}")
        if self.rope_llama3_scaling is not None and self.rope_linear_factor is not None:
            raise ValueError("rope_llama3_scaling and rope_linear_factor are two RoPE scalings: set one")
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
        norms = (4 if self.post_norms else 2) * e + (self.qk_norm and 2 * d)
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
    vocab_size=256_000,
)
_GEMMA2 = dict(
    _GEMMA,
    family="gemma2",
    attn_logit_softcap=50.0,
    final_logit_softcap=30.0,
    sliding_window=4096,
    post_norms=True,
    query_pre_attn_scalar=256,
)
# Five local layers (window 1024, RoPE base 10k) to each global one (base 1M, scaled 8x from 4B up).
_GEMMA3 = dict(
    _GEMMA,
    family="gemma3",
    post_norms=True,
    query_pre_attn_scalar=256,
    qk_norm=True,
    sliding_window=1024,
    sliding_window_pattern=6,
    rope_theta=1_000_000.0,
    rope_local_theta=10_000.0,
    rope_linear_factor=8.0,
    vocab_size=262_208,
    max_seq_len=131_072,
)
_LLAMA = dict(
    family="llama", activation="silu", norm_eps=1e-5, rope_theta=500_000.0, vocab_size=128_256, max_seq_len=131_072
)
_LLAMA32_ROPE = (32.0, 1.0, 4.0, 8192)
_QWEN2 = dict(
    family="qwen2", activation="silu", norm_eps=1e-6, qkv_bias=True, rope_theta=1_000_000.0, vocab_size=151_936
)
_QWEN3 = dict(_QWEN2, family="qwen3", qkv_bias=False, qk_norm=True, max_seq_len=40_960)
# Tiny models for tests and the CPU demo (one per family): sizes that divide an 8-device mesh.
_TINY = dict(vocab_size=256, max_seq_len=512)
_TINY_SIZES = (64, 2, 4, 2, 16, 128)
_SIZES = ("d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "mlp_dim")


def _preset(family: dict, sizes: tuple[int, ...], **fields) -> ModelConfig:
    """A family's fields, then (d_model, num_layers, num_heads, num_kv_heads, head_dim, mlp_dim), then `fields`."""
    return ModelConfig(**(family | dict(zip(_SIZES, sizes, strict=True)) | fields))


PRESETS: dict[str, ModelConfig] = {
    "gemma_2b": _preset(_GEMMA, (2048, 18, 8, 1, 256, 16_384)),
    "gemma_7b": _preset(_GEMMA, (3072, 28, 16, 16, 256, 24_576)),
    "gemma2_2b": _preset(_GEMMA2, (2304, 26, 8, 4, 256, 9216)),
    "gemma2_9b": _preset(_GEMMA2, (3584, 42, 16, 8, 256, 14_336)),
    # Gemma 3 1B is text-only: a smaller vocabulary, window and context, and no RoPE scaling.
    "gemma3_1b": _preset(
        _GEMMA3,
        (1152, 26, 4, 1, 256, 6912),
        vocab_size=262_144,
        sliding_window=512,
        rope_linear_factor=None,
        max_seq_len=32_768,
    ),
    # 4B, 12B and 27B: the text decoder of Gemma3ForConditionalGeneration.
    "gemma3_4b": _preset(_GEMMA3, (2560, 34, 8, 4, 256, 10_240)),
    "gemma3_12b": _preset(_GEMMA3, (3840, 48, 16, 8, 256, 15_360)),
    "gemma3_27b": _preset(_GEMMA3, (5376, 62, 32, 16, 128, 21_504), query_pre_attn_scalar=168),
    "llama3p2_1b": _preset(_LLAMA, (2048, 16, 32, 8, 64, 8192), tie_embeddings=True, rope_llama3_scaling=_LLAMA32_ROPE),
    "llama3p2_3b": _preset(
        _LLAMA, (3072, 28, 24, 8, 128, 8192), tie_embeddings=True, rope_llama3_scaling=_LLAMA32_ROPE
    ),
    "llama3p1_8b": _preset(_LLAMA, (4096, 32, 32, 8, 128, 14_336), rope_llama3_scaling=(8.0, 1.0, 4.0, 8192)),
    "qwen2p5_0p5b": _preset(_QWEN2, (896, 24, 14, 2, 64, 4864), tie_embeddings=True, max_seq_len=32_768),
    "qwen2p5_1p5b": _preset(_QWEN2, (1536, 28, 12, 2, 128, 8960), tie_embeddings=True, max_seq_len=32_768),
    "qwen2p5_7b": _preset(_QWEN2, (3584, 28, 28, 4, 128, 18_944), vocab_size=152_064, max_seq_len=32_768),
    "qwen3_0p6b": _preset(_QWEN3, (1024, 28, 16, 8, 128, 3072), tie_embeddings=True),
    "qwen3_1p7b": _preset(_QWEN3, (2048, 28, 16, 8, 128, 6144), tie_embeddings=True),
    "qwen3_4b": _preset(_QWEN3, (2560, 36, 32, 8, 128, 9728), tie_embeddings=True),
    "qwen3_8b": _preset(_QWEN3, (4096, 36, 32, 8, 128, 12_288)),
    "qwen3_14b": _preset(_QWEN3, (5120, 40, 40, 8, 128, 17_408)),
    # ~125M Llama-style model used by the benchmarks.
    "llama_125m": _preset(_LLAMA, (768, 12, 12, 4, 64, 2048), vocab_size=32_000, max_seq_len=4096),
    "tiny_gemma": _preset(_GEMMA | _TINY, (64, 2, 4, 1, 16, 128)),
    "tiny_gemma2": _preset(_GEMMA2 | _TINY, (64, 4, 4, 2, 16, 128), sliding_window=8, query_pre_attn_scalar=24),
    # Every third layer global (local, local, global, local), window 8: both RoPE settings in play.
    "tiny_gemma3": _preset(
        _GEMMA3 | _TINY, (64, 4, 4, 2, 16, 128), sliding_window=8, sliding_window_pattern=3, query_pre_attn_scalar=24
    ),
    "tiny_llama": _preset(_LLAMA | _TINY, _TINY_SIZES, rope_llama3_scaling=(8.0, 1.0, 4.0, 64)),
    "tiny_qwen2": _preset(_QWEN2 | _TINY, _TINY_SIZES),
    "tiny_qwen3": _preset(_QWEN3 | _TINY, _TINY_SIZES),
}


def get_preset(name: str, **overrides) -> ModelConfig:
    """A preset by name, with field overrides (e.g. ``dtype="bfloat16"``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
