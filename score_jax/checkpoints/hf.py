"""Hugging Face checkpoints (``config.json`` + safetensors) in and out of score_jax parameters.

Import reads one tensor at a time, turns it into our layout and sends each device only its
shard, so host memory peaks near the largest tensor (about twice it, during the transpose), never
the whole model. With ``scan_layers=True`` the per-layer tensors are written one by one into a
stacked ``[L, ...]`` array that already lives, sharded, on the devices.

Export streams the other way: each tensor is gathered, transposed and appended to a safetensors
file whose header is planned up front, inside a temporary directory that replaces the target only
once everything is written.

The tensor-name map for each family is documented in ``third_party/CHECKPOINT_FORMATS.md``.

    config, params = load_hf_checkpoint("/ckpt/gemma-2-2b-it", mesh, rules="fsdp", dtype="bfloat16")
    save_hf_checkpoint(config, params, "/out/policy", dtype="bfloat16", source_dir="/ckpt/gemma-2-2b-it")
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding
from safetensors import safe_open

from score_jax.model import config as model_config
from score_jax.model import transformer

ModelConfig = model_config.ModelConfig

# family -> transformers' architecture class, for every family we read and write.
ARCHITECTURES = {
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
# config.json's model_type where it is not the family's name.
_MODEL_TYPES = {"gemma3": "gemma3_text"}
# Gemma 3 4B and up are published as Gemma3ForConditionalGeneration: this model_type, with the
# decoder's config under "text_config".
_GEMMA3_MULTIMODAL = "gemma3"
# Gemma3TextConfig's defaults, which the published multimodal configs rely on (their text_config
# names only what differs, e.g. 4B's head count and head_dim are absent).
_GEMMA3_DEFAULTS = {
    "vocab_size": 262_208,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "max_position_embeddings": 131_072,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
    "rope_theta": 1_000_000.0,
    "rope_local_base_freq": 10_000.0,
}
# Transformers' default for tie_word_embeddings when config.json leaves it out.
_DEFAULT_TIED = {"gemma": True, "gemma2": True, "gemma3": True, "llama": False, "qwen2": False, "qwen3": False}
# ModelConfig fields config.json does not hold: numerics and compilation, and LoRA adapters (exported
# merged into the weights, or as a PEFT adapter directory: `save_peft_adapters`).
_NUMERICS_FIELDS = ("param_dtype", "dtype", "remat_policy", "scan_layers", "attention_impl", "lora")

_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
_DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
INDEX_FILE = "model.safetensors.index.json"
# Non-weight files copied from `source_dir` on export (tokenizer, generation defaults).
_SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
)


class HFCheckpointError(ValueError):
    """A checkpoint that cannot be read or written as asked; the message names what is wrong."""


# ---------------------------------------------------------------------------------------------
# config.json <-> ModelConfig


def _model_type(family: str) -> str:
    return _MODEL_TYPES.get(family, family)


def _family(hf: dict) -> str:
    model_type = hf.get("model_type")
    by_type = {_model_type(family): family for family in ARCHITECTURES}
    if model_type in by_type:
        return by_type[model_type]
    by_arch = {arch: family for family, arch in ARCHITECTURES.items()}
    for arch in hf.get("architectures") or ():
        if arch in by_arch:
            return by_arch[arch]
    raise HFCheckpointError(
        f"unsupported architecture: model_type={model_type!r}, architectures={hf.get('architectures')!r}; "
        f"supported model types: {sorted(by_type)} ({sorted(ARCHITECTURES.values())})"
    )


def _is_multimodal(hf: dict) -> bool:
    return hf.get("model_type") == _GEMMA3_MULTIMODAL and isinstance(hf.get("text_config"), dict)


def _text_config(hf: dict) -> dict:
    """The decoder's config.json fields: a multimodal Gemma 3's text_config (with its token ids), else `hf`."""
    if not _is_multimodal(hf):
        return hf
    ids = {k: hf[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in hf}
    return ids | {"model_type": _model_type("gemma3")} | hf["text_config"]


def _required(hf: dict, key: str):
    if hf.get(key) is None:
        raise HFCheckpointError(f"config.json has no {key!r}, which a {hf.get('model_type')} model needs")
    return hf[key]


def _one_rope(params: dict, theta: float) -> dict:
    """ModelConfig's rope_theta, rope_llama3_scaling and rope_linear_factor for one RoPE setting."""
    theta = float(params.get("rope_theta", theta))
    rope_type = params.get("rope_type", params.get("type", "default"))
    fields = dict(rope_theta=theta, rope_llama3_scaling=None, rope_linear_factor=None)
    keys = {
        "default": (),
        "linear": ("factor",),
        "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    }
    if rope_type not in keys:
        raise HFCheckpointError(f"RoPE type {rope_type!r} is not supported; supported: {sorted(keys)}")
    absent = [k for k in keys[rope_type] if k not in params]
    if absent:
        raise HFCheckpointError(f"{rope_type} RoPE scaling {params} lacks {absent[0]!r}")
    if rope_type == "linear":
        fields["rope_linear_factor"] = float(params["factor"])
    elif rope_type == "llama3":
        fields["rope_llama3_scaling"] = (
            float(params["factor"]),
            float(params["low_freq_factor"]),
            float(params["high_freq_factor"]),
            int(params["original_max_position_embeddings"]),
        )
    return fields


def _rope(hf: dict) -> dict:
    """ModelConfig's RoPE fields from transformers 5 ``rope_parameters`` (one setting, or one per layer
    type) or 4.x ``rope_theta``/``rope_scaling``/``rope_local_base_freq`` (Gemma 3's local layers)."""
    params = hf.get("rope_parameters")
    theta = hf.get("rope_theta", 10_000.0)
    if params and all(isinstance(v, dict) for v in params.values()):  # one entry per layer type
        unknown = set(params) - {"full_attention", "sliding_attention"}
        if unknown:
            raise HFCheckpointError(f"RoPE settings for layer types {sorted(unknown)} are not supported")
        global_ = params.get("full_attention", params.get("sliding_attention"))
        local = params.get("sliding_attention", global_)
    else:
        global_ = dict(params or hf.get("rope_scaling") or {})
        local = {"rope_theta": hf["rope_local_base_freq"]} if hf.get("rope_local_base_freq") else global_
    fields, local_fields = _one_rope(global_, theta), _one_rope(local, theta)
    if local_fields == fields:
        return fields | {"rope_local_theta": None}
    if local_fields["rope_llama3_scaling"] or local_fields["rope_linear_factor"]:
        raise HFCheckpointError(f"scaled RoPE on sliding-window layers is not supported: {local}")
    return fields | {"rope_local_theta": local_fields["rope_theta"]}


def _sliding_window(hf: dict, family: str, num_layers: int) -> tuple[int | None, int]:
    """(sliding_window, sliding_window_pattern): which layers attend locally, as ModelConfig says it."""
    layer_types = hf.get("layer_types")
    if layer_types is not None:
        if len(layer_types) != num_layers:
            raise HFCheckpointError(f"layer_types has {len(layer_types)} entries for {num_layers} layers")
        unknown = set(layer_types) - {"sliding_attention", "full_attention"}
        if unknown:
            raise HFCheckpointError(f"layer types {sorted(unknown)} are not supported")
        local = [t == "sliding_attention" for t in layer_types]
    elif family == "gemma2":  # transformers 4.x: even layers are local
        local = [i % 2 == 0 for i in range(num_layers)]
    elif family == "gemma3":  # transformers 4.x: every sliding_window_pattern-th layer is global
        pattern = int(hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or 6)
        local = [(i + 1) % pattern != 0 for i in range(num_layers)]
    elif hf.get("use_sliding_window"):
        raise HFCheckpointError("use_sliding_window=true without layer_types is not supported")
    else:
        local = [False] * num_layers
    if not any(local):
        return None, 2
    window = hf.get("sliding_window")
    if window is None:
        raise HFCheckpointError("layer_types has sliding_attention layers but config.json has no sliding_window")
    for pattern in range(2, num_layers + 2):
        if all(is_local == ((i + 1) % pattern != 0) for i, is_local in enumerate(local)):
            return int(window), pattern
    raise HFCheckpointError(
        f"local layers {[i for i, x in enumerate(local) if x]} do not follow a 'every n-th layer is global' "
        "pattern, the only one score_jax supports"
    )


def model_config_from_hf(hf: dict, **overrides) -> ModelConfig:
    """A ModelConfig from a transformers ``config.json`` dict, then `overrides` (any ModelConfig field).

    Raises:
      HFCheckpointError: unsupported architecture or feature, or a missing required field.
    """
    hf = _text_config(hf)
    family = _family(hf)
    if family == "gemma3":
        hf = _GEMMA3_DEFAULTS | {k: v for k, v in hf.items() if v is not None}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise HFCheckpointError(f"unknown ModelConfig fields in overrides: {sorted(unknown)}")
    num_heads = int(_required(hf, "num_attention_heads"))
    d_model = int(_required(hf, "hidden_size"))
    num_layers = int(_required(hf, "num_hidden_layers"))
    act = hf.get("hidden_activation") or hf.get("hidden_act") or ("gelu_pytorch_tanh" if "gemma" in family else "silu")
    if "gemma" in family:
        # Gemma 1 configs say "gelu", but the models were trained with (and HF runs) the tanh approximation.
        if act not in ("gelu_pytorch_tanh", "gelu", "gelu_new"):
            raise HFCheckpointError(f"activation {act!r} is not supported for {family}; expected gelu_pytorch_tanh")
        activation = "gelu_tanh"
    elif act == "silu":
        activation = "silu"
    else:
        raise HFCheckpointError(f"activation {act!r} is not supported for {family}; expected silu")
    if hf.get("mlp_bias"):
        raise HFCheckpointError("mlp_bias=true is not supported (score_jax MLPs have no biases)")
    if family != "qwen2" and hf.get("attention_bias"):
        raise HFCheckpointError(
            f"attention_bias=true is not supported for {family} (it adds an output-projection bias)"
        )
    if hf.get("use_bidirectional_attention"):
        raise HFCheckpointError("use_bidirectional_attention=true is not supported (score_jax decoders are causal)")
    window, pattern = _sliding_window(hf, family, num_layers)
    rope = _rope(hf)
    if window is None:  # no local layers: their RoPE base is moot
        rope["rope_local_theta"] = None
    gemma2_or_3 = family in ("gemma2", "gemma3")
    fields = dict(
        family=family,
        vocab_size=int(_required(hf, "vocab_size")),
        d_model=d_model,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
        head_dim=int(hf.get("head_dim") or d_model // num_heads),
        mlp_dim=int(_required(hf, "intermediate_size")),
        activation=activation,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        norm_scale_plus_one="gemma" in family,
        scale_embeddings="gemma" in family,
        tie_embeddings=bool(hf.get("tie_word_embeddings", _DEFAULT_TIED[family])),
        qkv_bias=family == "qwen2",
        qk_norm=family in ("qwen3", "gemma3"),
        **rope,
        attn_logit_softcap=hf.get("attn_logit_softcapping") if gemma2_or_3 else None,
        final_logit_softcap=hf.get("final_logit_softcapping") if gemma2_or_3 else None,
        sliding_window=window,
        sliding_window_pattern=pattern,
        post_norms=gemma2_or_3,
        query_pre_attn_scalar=hf.get("query_pre_attn_scalar") if gemma2_or_3 else None,
        max_seq_len=int(hf.get("max_position_embeddings") or 8192),
    )
    try:
        return ModelConfig(**(fields | overrides))
    except ValueError as e:
        raise HFCheckpointError(f"config.json does not make a valid ModelConfig: {e}") from e


def _architecture(config: ModelConfig) -> dict:
    """The fields of a config that fix the network (query_pre_attn_scalar compared by its effect)."""
    fields = dataclasses.asdict(config)
    for name in _NUMERICS_FIELDS + ("query_pre_attn_scalar",):
        fields.pop(name)
    fields["query_scale"] = config.query_scale
    if config.sliding_window is None:
        fields.pop("sliding_window_pattern")
    return fields


def hf_config_from_model(config: ModelConfig, base: dict | None = None, dtype: str | None = None) -> dict:
    """A transformers ``config.json`` dict for `config`, over `base` (e.g. the source model's, for token ids).

    Written for both transformers 5 (``rope_parameters``) and 4.x (``rope_theta``/``rope_scaling``).

    Raises:
      HFCheckpointError: `config` uses a feature its family's transformers model does not have.
    """
    c = config
    rope = {"rope_type": "default", "rope_theta": c.rope_theta}
    if c.rope_linear_factor is not None:
        rope.update(rope_type="linear", factor=c.rope_linear_factor)
    if c.rope_llama3_scaling is not None:
        factor, low, high, original = c.rope_llama3_scaling
        rope.update(
            rope_type="llama3",
            factor=factor,
            low_freq_factor=low,
            high_freq_factor=high,
            original_max_position_embeddings=original,
        )
    dtype = dtype or c.param_dtype
    hf = _text_config(dict(base or {}))
    hf.update(
        architectures=[ARCHITECTURES[c.family]],
        model_type=_model_type(c.family),
        vocab_size=c.vocab_size,
        hidden_size=c.d_model,
        intermediate_size=c.mlp_dim,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        rms_norm_eps=c.norm_eps,
        max_position_embeddings=c.max_seq_len,
        tie_word_embeddings=c.tie_embeddings,
        rope_parameters=rope,
        rope_theta=c.rope_theta,
        rope_scaling=None if rope["rope_type"] == "default" else {k: v for k, v in rope.items() if k != "rope_theta"},
        hidden_act="gelu_pytorch_tanh" if c.activation == "gelu_tanh" else "silu",
        dtype=dtype,
        torch_dtype=dtype,
    )
    if "gemma" in c.family:
        hf.update(hidden_activation=hf["hidden_act"], attention_bias=False)
    if c.family in ("llama", "qwen3"):
        hf.update(attention_bias=False, mlp_bias=False)
    if c.family in ("qwen2", "qwen3"):
        hf.update(
            use_sliding_window=False,
            sliding_window=None,
            max_window_layers=c.num_layers,
            layer_types=["full_attention"] * c.num_layers,
        )
    if c.family in ("gemma2", "gemma3"):
        hf.update(
            query_pre_attn_scalar=c.query_pre_attn_scalar or c.head_dim,
            sliding_window=c.sliding_window,
            layer_types=["sliding_attention" if c.is_local_layer(i) else "full_attention" for i in range(c.num_layers)],
            attn_logit_softcapping=c.attn_logit_softcap,
            final_logit_softcapping=c.final_logit_softcap,
        )
    if c.family == "gemma3":  # RoPE per layer type (5.x), and 4.x's local base and layer pattern
        local_theta = c.rope_theta if c.rope_local_theta is None else c.rope_local_theta
        local_rope = rope if c.rope_local_theta is None else {"rope_type": "default", "rope_theta": local_theta}
        hf.update(
            rope_parameters={"full_attention": rope, "sliding_attention": local_rope},
            rope_local_base_freq=local_theta,
            sliding_window_pattern=c.sliding_window_pattern,
            use_bidirectional_attention=False,
        )
    back = _architecture(model_config_from_hf(hf))
    differ = {k: (v, back[k]) for k, v in _architecture(c).items() if back.get(k) != v}
    if differ:
        raise HFCheckpointError(
            f"transformers' {ARCHITECTURES[c.family]} cannot express these ModelConfig fields "
            f"(ours, as written): {differ}"
        )
    return hf


# ---------------------------------------------------------------------------------------------
# Tensor names and layouts.


@dataclasses.dataclass(frozen=True)
class _Tensor:
    """One HF tensor and how it maps onto (a layer of) one of our parameters.

    kind "same": identical layout; "flat": HF stores it flattened (biases [N*D]); "linear": a
    torch Linear weight [out, in], whose `in_axes` leading axes in our layout are the inputs.
    """

    name: str
    kind: str = "same"
    in_axes: int = 1

    def hf_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        if self.kind == "flat":
            return (math.prod(shape),)
        if self.kind == "linear":
            return (math.prod(shape[self.in_axes :]), math.prod(shape[: self.in_axes]))
        return tuple(shape)

    def to_ours(self, x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        if self.kind == "linear":
            x = np.ascontiguousarray(x.T)
        return x.reshape(shape)

    def to_hf(self, x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        hf_shape = self.hf_shape(shape)
        if self.kind == "linear":
            return np.ascontiguousarray(x.reshape(hf_shape[::-1]).T)
        return np.ascontiguousarray(x.reshape(hf_shape))


def _layer_tensors(config: ModelConfig) -> dict[tuple[str, ...], _Tensor]:
    """Our path inside one layer -> the HF tensor name under ``model.layers.{i}.``."""
    out = {
        ("attn", "q"): _Tensor("self_attn.q_proj.weight", "linear"),
        ("attn", "k"): _Tensor("self_attn.k_proj.weight", "linear"),
        ("attn", "v"): _Tensor("self_attn.v_proj.weight", "linear"),
        ("attn", "o"): _Tensor("self_attn.o_proj.weight", "linear", in_axes=2),
        ("mlp", "gate"): _Tensor("mlp.gate_proj.weight", "linear"),
        ("mlp", "up"): _Tensor("mlp.up_proj.weight", "linear"),
        ("mlp", "down"): _Tensor("mlp.down_proj.weight", "linear"),
        ("pre_attn_norm", "scale"): _Tensor("input_layernorm.weight"),
    }
    if config.qkv_bias:
        for p in "qkv":
            out[("attn", f"{p}_bias")] = _Tensor(f"self_attn.{p}_proj.bias", "flat")
    if config.qk_norm:
        for p in "qk":
            out[("attn", f"{p}_norm", "scale")] = _Tensor(f"self_attn.{p}_norm.weight")
    if config.post_norms:  # Gemma 2 and 3 name their four norms differently
        out[("post_attn_norm", "scale")] = _Tensor("post_attention_layernorm.weight")
        out[("pre_mlp_norm", "scale")] = _Tensor("pre_feedforward_layernorm.weight")
        out[("post_mlp_norm", "scale")] = _Tensor("post_feedforward_layernorm.weight")
    else:
        out[("pre_mlp_norm", "scale")] = _Tensor("post_attention_layernorm.weight")
    return out


def tensor_layout(config: ModelConfig) -> dict[tuple[str, ...], list[_Tensor]]:
    """Our parameter path -> the HF tensors it is made of (L of them for a stacked ``layers/...``)."""
    out = {
        ("embedding",): [_Tensor("model.embed_tokens.weight")],
        ("final_norm", "scale"): [_Tensor("model.norm.weight")],
    }
    if not config.tie_embeddings:
        out[("lm_head",)] = [_Tensor("lm_head.weight", "linear")]
    for path, t in _layer_tensors(config).items():
        per_layer = [dataclasses.replace(t, name=f"model.layers.{i}.{t.name}") for i in range(config.num_layers)]
        if config.scan_layers:
            out[("layers",) + path] = per_layer
        else:
            for i, layer_t in enumerate(per_layer):
                out[(f"layer_{i}",) + path] = [layer_t]
    return out


def _leaves(tree: Any) -> dict[tuple[str, ...], Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(str(k.key) for k in path): leaf for path, leaf in flat}


def _abstract_leaves(config: ModelConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
    leaves = _leaves(nn.meta.unbox(transformer.abstract_params(config)))
    layout = tensor_layout(config)
    if set(leaves) != set(layout):  # the model grew a parameter this module does not know
        raise RuntimeError(
            f"tensor_layout out of date: model-only {sorted(set(leaves) - set(layout))}, "
            f"layout-only {sorted(set(layout) - set(leaves))}"
        )
    return leaves


def _per_tensor_shape(path: tuple[str, ...], shape: Sequence[int], config: ModelConfig) -> tuple[int, ...]:
    return tuple(shape[1:]) if config.scan_layers and path[0] == "layers" else tuple(shape)


def _listing(names: Sequence[str], limit: int = 8) -> str:
    names = sorted(names)
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ---------------------------------------------------------------------------------------------
# Import.


class _SafetensorsDir:
    """The tensors of a checkpoint directory, by name, each read on demand."""

    def __init__(self, directory: str, stack: contextlib.ExitStack):
        index_path = os.path.join(directory, INDEX_FILE)
        if os.path.exists(index_path):
            with open(index_path) as f:
                try:
                    weight_map = json.load(f)["weight_map"]
                except (json.JSONDecodeError, KeyError) as e:
                    raise HFCheckpointError(f"{index_path} is not a safetensors index: {e!r}") from e
            files = sorted(set(weight_map.values()))
        else:
            weight_map = None
            files = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
            if not files:
                found = [f for f in os.listdir(directory) if f.endswith((".bin", ".pt", ".pth", ".h5", ".msgpack"))]
                hint = f" (found {found}: convert them to safetensors first)" if found else ""
                raise HFCheckpointError(f"no *.safetensors files in {directory}{hint}")
        self._handles: dict[str, Any] = {}
        self._file_of: dict[str, str] = {}
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                raise HFCheckpointError(f"{INDEX_FILE} names {name}, which is not in {directory}")
            try:
                handle = stack.enter_context(safe_open(path, framework="numpy"))
            except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError and OSError
                raise HFCheckpointError(f"{path} is not a readable safetensors file: {e}") from e
            self._handles[path] = handle
            for key in handle.keys():  # noqa: SIM118 - a safetensors handle is not a mapping
                if key in self._file_of:
                    raise HFCheckpointError(f"tensor {key!r} is in both {self._file_of[key]} and {path}")
                if weight_map is not None and weight_map.get(key) != name:
                    raise HFCheckpointError(
                        f"tensor {key!r} is in {path} but {INDEX_FILE} maps it to {weight_map.get(key)!r}"
                    )
                self._file_of[key] = path
        if weight_map is not None:
            absent = set(weight_map) - set(self._file_of)
            if absent:
                raise HFCheckpointError(f"{INDEX_FILE} lists tensors its files do not hold: {_listing(absent)}")

    def names(self) -> set[str]:
        return set(self._file_of)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._file_of[name]].get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        return self._handles[self._file_of[name]].get_slice(name).get_dtype()

    def read(self, name: str) -> np.ndarray:
        path = self._file_of[name]
        dtype = self.dtype(name)
        try:
            if dtype == "BF16":  # older safetensors cannot give numpy bf16 arrays: read the bytes
                return _read_raw(path, name)
            return self._handles[path].get_tensor(name)
        except Exception as e:  # noqa: BLE001 - a damaged file fails here at the earliest
            raise HFCheckpointError(f"cannot read tensor {name!r} from {path}: {e}") from e


def _read_header(fh) -> tuple[dict, int]:
    """(safetensors header, byte offset of the data section)."""
    n = int.from_bytes(fh.read(8), "little")
    return json.loads(fh.read(n)), 8 + n


def _read_raw(path: str, name: str) -> np.ndarray:
    with open(path, "rb") as fh:
        header, data_start = _read_header(fh)
        info = header[name]
        start, end = info["data_offsets"]
        fh.seek(data_start + start)
        data = fh.read(end - start)
    return np.frombuffer(data, _SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])


def _check_tensors(files: _SafetensorsDir, config: ModelConfig, leaves: dict) -> None:
    """Fails, before reading any data, on missing, unexpected, mis-shaped or non-float tensors."""
    layout = tensor_layout(config)
    expected = {
        t.name: t.hf_shape(_per_tensor_shape(path, leaves[path].shape, config))
        for path, ts in layout.items()
        for t in ts
    }
    present = {n for n in files.names() if not n.endswith("rotary_emb.inv_freq")}  # a buffer older exports kept
    missing, unexpected = set(expected) - present, present - set(expected)
    problems = []
    if missing:
        problems.append(f"lacks {len(missing)} tensors the {config.family} config needs: {_listing(missing)}")
    if unexpected:
        hint = (
            " (lm_head.weight with tie_word_embeddings=true: untie the config)"
            if "lm_head.weight" in unexpected
            else ""
        )
        problems.append(
            f"has {len(unexpected)} tensors the {config.family} config does not use: {_listing(unexpected)}{hint}"
        )
    if problems:
        raise HFCheckpointError("checkpoint " + "; and ".join(problems))
    wrong = [
        f"{n}: expected {list(s)}, found {list(files.shape(n))}" for n, s in expected.items() if files.shape(n) != s
    ]
    if wrong:
        raise HFCheckpointError(f"{len(wrong)} tensors have the wrong shape for config.json: {_listing(wrong)}")
    not_float = [f"{n}: {files.dtype(n)}" for n in expected if files.dtype(n) not in _SAFETENSORS_DTYPES]
    if not_float:
        raise HFCheckpointError(f"tensors of unsupported dtype (quantised?): {_listing(not_float)}")


def _put(x: np.ndarray, sharding) -> jax.Array:
    """A device array from a host array, each device receiving only its own shard."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


@functools.cache
def _layer_writer(sharding):
    def write(stacked, layer_value, i):
        return jax.lax.dynamic_update_index_in_dim(stacked, layer_value, i, 0)

    return jax.jit(write, donate_argnums=0, out_shardings=sharding)


def _without_leading_axis(sharding):
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[1:]))
    return sharding


def load_hf_checkpoint(path: str, mesh=None, rules="fsdp", **overrides) -> tuple[ModelConfig, Any]:
    """Reads a transformers checkpoint directory into sharded score_jax parameters.

    Args:
      path: directory with ``config.json`` and ``*.safetensors`` (with or without an index).
      mesh: the device mesh; None puts everything on the first local device.
      rules: the sharding rule set (name or pairs) mapping logical axes to `mesh`.
      **overrides: ModelConfig fields, e.g. ``param_dtype="bfloat16"``, ``scan_layers=True``.

    Returns:
      (config, params): params in ``config.param_dtype``, each leaf created directly with its
      target sharding.

    Raises:
      HFCheckpointError: a missing or unreadable file, an unsupported architecture, or tensors
        missing, unexpected, or of the wrong shape (all named).
    """
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise HFCheckpointError(f"no config.json in {path!r}: not a transformers checkpoint directory")
    with open(config_path) as f:
        try:
            hf = json.load(f)
        except json.JSONDecodeError as e:
            raise HFCheckpointError(f"{config_path} is not valid JSON: {e}") from e
    config = model_config_from_hf(hf, **overrides)
    if _is_multimodal(hf):
        raise HFCheckpointError(
            f"{config_path} is a multimodal Gemma3ForConditionalGeneration: its config reads (compile_check), but "
            "importing its text weights (language_model.*, beside the vision tower) is not supported yet; "
            "save the text model as Gemma3ForCausalLM first"
        )
    leaves = _abstract_leaves(config)
    if mesh is None:
        device = SingleDeviceSharding(jax.local_devices()[0])
        shardings = {p: device for p in leaves}
    else:
        shardings = _leaves(transformer.param_shardings(config, mesh, rules))
    dtype = jnp.dtype(config.param_dtype)

    params: dict = {}
    with contextlib.ExitStack() as stack:
        files = _SafetensorsDir(path, stack)
        _check_tensors(files, config, leaves)
        for leaf_path, tensors in tensor_layout(config).items():
            shape = _per_tensor_shape(leaf_path, leaves[leaf_path].shape, config)

            def host(t: _Tensor, shape=shape) -> np.ndarray:
                return t.to_ours(files.read(t.name).astype(dtype, copy=False), shape)

            if config.scan_layers and leaf_path[0] == "layers":
                sharding = shardings[leaf_path]
                stacked = jax.jit(
                    functools.partial(jnp.zeros, leaves[leaf_path].shape, dtype), out_shardings=sharding
                )()
                write, layer_sharding = _layer_writer(sharding), _without_leading_axis(sharding)
                for i, t in enumerate(tensors):
                    stacked = write(stacked, _put(host(t), layer_sharding), i)
                value = stacked
            else:
                value = _put(host(tensors[0]), shardings[leaf_path])
            node = params
            for key in leaf_path[:-1]:
                node = node.setdefault(key, {})
            node[leaf_path[-1]] = value
    return config, params


# ---------------------------------------------------------------------------------------------
# Export.


def _to_host(x: jax.Array) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils  # noqa: PLC0415 - only multi-process runs need it

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def _write_safetensors(path: str, tensors: Sequence[tuple[str, str, tuple[int, ...]]], produce) -> None:
    """Streams tensors into one safetensors file: the header first, then `produce(name)` one by one.

    `tensors` are (name, safetensors dtype, shape), in file order.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in tensors:
        size = math.prod(shape) * np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for name, dtype, shape in tensors:
            x = produce(name)
            if x.shape != tuple(shape) or x.dtype != _SAFETENSORS_DTYPES[dtype]:
                raise RuntimeError(f"{name}: produced {x.dtype}{list(x.shape)}, planned {dtype}{list(shape)}")
            f.write(np.ascontiguousarray(x).reshape(-1).view(np.uint8).data)


@contextlib.contextmanager
def _replacing_directory(path: str) -> Iterator[str]:
    """Yields a fresh temporary directory that replaces `path` only if the block succeeds."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise HFCheckpointError(f"{path} exists and is not a directory")
    parent, base = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{base}.tmp-")
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(path):
        old = tempfile.mkdtemp(dir=parent, prefix=f".{base}.old-")
        os.rename(path, os.path.join(old, base))
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)


def _plan(layout: dict, leaves: dict, given: dict, config: ModelConfig, dtype: str):
    """(name, safetensors dtype, shape) of every HF tensor of `layout` in file order, and
    ``produce(name)``: that tensor from the parameters `given` (gathered to the host, in `dtype`)."""
    sf_dtype, np_dtype = _DTYPE_NAMES[dtype], jnp.dtype(dtype)
    plan, sources = [], {}
    for leaf_path, tensors in layout.items():
        shape = _per_tensor_shape(leaf_path, leaves[leaf_path].shape, config)
        stacked = config.scan_layers and leaf_path[0] == "layers"
        for i, t in enumerate(tensors):
            plan.append((t.name, sf_dtype, t.hf_shape(shape)))
            sources[t.name] = (t, given[leaf_path], i if stacked else None, shape)

    def produce(name: str) -> np.ndarray:
        t, value, layer, shape = sources[name]
        x = _to_host(value if layer is None else value[layer])
        return t.to_hf(x.astype(np_dtype, copy=False), shape)

    return plan, produce


def _check_params(given: dict, leaves: dict, what: str) -> None:
    """Fails on parameters missing from, extra to, or shaped unlike `leaves` (the config's)."""
    if set(given) != set(leaves):
        raise HFCheckpointError(
            f"{what} do not match the config: missing {_listing(['/'.join(p) for p in set(leaves) - set(given)])}; "
            f"unexpected {_listing(['/'.join(p) for p in set(given) - set(leaves)])}"
        )
    wrong = [
        f"{'/'.join(p)}: {list(np.shape(given[p]))} != {list(s.shape)}"
        for p, s in leaves.items()
        if tuple(np.shape(given[p])) != tuple(s.shape)
    ]
    if wrong:
        raise HFCheckpointError(f"{what} have the wrong shapes for the config: {_listing(wrong)}")


def save_hf_checkpoint(
    config: ModelConfig,
    params: Any,
    path: str,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = 2 << 30,
    source_dir: str | None = None,
) -> None:
    """Writes `params` as a transformers checkpoint directory that ``from_pretrained`` loads.

    Tensors are gathered and written one at a time; files over `max_shard_bytes` are split as
    ``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``. The directory is
    built under a temporary name and renamed over `path` at the end, so a failed export leaves any
    existing `path` untouched. In a multi-process run every process must call this (to gather);
    process 0 writes.

    Args:
      config: the parameters' config (scan_layers decides their tree layout).
      params: the parameter tree, as `load_hf_checkpoint` or `init_params` returns it.
      path: the output directory (replaced if it exists).
      dtype: the stored dtype ("float32", "bfloat16", "float16"); default config.param_dtype.
      max_shard_bytes: the largest safetensors file to write (one tensor larger gets its own file).
      source_dir: a transformers checkpoint whose config.json fields (token ids, ...) are kept
        under ours, and whose tokenizer and generation files are copied alongside.

    Raises:
      HFCheckpointError: params that do not match `config`, or a config transformers cannot express.
    """
    dtype = dtype or config.param_dtype
    if dtype not in _DTYPE_NAMES:
        raise HFCheckpointError(f"cannot store dtype {dtype!r}; use one of {sorted(_DTYPE_NAMES)}")
    base = None
    if source_dir is not None:
        with open(os.path.join(source_dir, "config.json")) as f:
            base = json.load(f)
    hf = hf_config_from_model(config, base, dtype)

    if config.lora is not None:
        raise HFCheckpointError(
            "save_hf_checkpoint writes plain weights: merge the adapters first (score_jax.model.lora.merged_weights "
            "and config.replace(lora=None)), or write them with save_peft_adapters"
        )
    leaves = _abstract_leaves(config)
    given = _leaves(params)
    _check_params(given, leaves, "params")

    plan, produce = _plan(tensor_layout(config), leaves, given, config, dtype)

    files: list[list] = [[]]
    size = 0
    itemsize = np.dtype(jnp.dtype(dtype)).itemsize
    for entry in sorted(plan, key=lambda e: e[0]):
        nbytes = math.prod(entry[2]) * itemsize
        if files[-1] and size + nbytes > max_shard_bytes:
            files.append([])
            size = 0
        files[-1].append(entry)
        size += nbytes
    names = (
        ["model.safetensors"]
        if len(files) == 1
        else [f"model-{i + 1:05d}-of-{len(files):05d}.safetensors" for i in range(len(files))]
    )

    writer = jax.process_index() == 0
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(_replacing_directory(path)) if writer else None
        for file_name, entries in zip(names, files, strict=True):
            if writer:
                _write_safetensors(os.path.join(out, file_name), entries, produce)
            else:  # still take part in every gather
                for name, _, _ in entries:
                    produce(name)
        if writer:
            with open(os.path.join(out, "config.json"), "w") as f:
                json.dump(hf, f, indent=2, sort_keys=True)
            if len(files) > 1:
                total = sum(math.prod(e[2]) * itemsize for e in plan)
                index = {
                    "metadata": {"total_size": total},
                    "weight_map": {e[0]: n for n, entries in zip(names, files, strict=True) for e in entries},
                }
                with open(os.path.join(out, INDEX_FILE), "w") as f:
                    json.dump(index, f, indent=2, sort_keys=True)
            for name in _SIDE_FILES if source_dir is not None else ():
                if os.path.exists(os.path.join(source_dir, name)):
                    shutil.copy2(os.path.join(source_dir, name), os.path.join(out, name))


# ---------------------------------------------------------------------------------------------
# LoRA adapters as a PEFT adapter directory (third_party/PEFT_ADAPTERS.md).

PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."


def adapter_layout(config: ModelConfig) -> dict[tuple[str, ...], list[_Tensor]]:
    """Our adapter leaf (``.../attn/q_lora_a``) -> its PEFT tensors (``...q_proj.lora_A.weight``).

    PEFT stores A as a Linear [rank, in] and B as a Linear [out, rank], which is ours transposed
    with the weight's input axes (A) or output axes (B) flattened, as the weight itself is.
    """
    if config.lora is None:
        raise HFCheckpointError("the config has no LoRA adapters (ModelConfig.lora is None)")
    out = {}
    for path, tensors in tensor_layout(config.replace(lora=None)).items():
        if path[-1] not in config.lora.targets or path[-2] not in ("attn", "mlp"):
            continue
        for matrix, in_axes in (("a", tensors[0].in_axes), ("b", 1)):
            peft = [
                _Tensor(_PEFT_PREFIX + t.name.replace(".weight", f".lora_{matrix.upper()}.weight"), "linear", in_axes)
                for t in tensors
            ]
            out[path[:-1] + (f"{path[-1]}_lora_{matrix}",)] = peft
    return out


def peft_target_modules(config: ModelConfig) -> list[str]:
    """transformers' module names of the adapted projections (``q_proj``, ``gate_proj``, ...)."""
    names = {t.name.split(".")[-3] for tensors in adapter_layout(config).values() for t in tensors}
    return sorted(names)


def save_peft_adapters(config: ModelConfig, params: Any, path: str, *, base_model: str = "") -> None:
    """Writes the adapters in `params` as a PEFT LoRA directory (``adapter_config.json``,
    ``adapter_model.safetensors``) that ``peft.PeftModel.from_pretrained(base, path)`` loads onto the
    transformers model of the base (the one `save_hf_checkpoint` writes for ``lora=None``).

    `params` is the policy's tree (base plus adapters) or the adapters alone; adapters are stored in
    their own dtype (``config.lora.param_dtype``). `base_model` goes to ``base_model_name_or_path``.
    Like `save_hf_checkpoint`: built in a temporary directory that replaces `path`, process 0 writes.
    """
    from score_jax.model import lora as lora_lib

    layout = adapter_layout(config)
    leaves = {p: s for p, s in _leaves(nn.meta.unbox(transformer.abstract_params(config))).items() if p in layout}
    given = _leaves(lora_lib.adapters(params))
    _check_params(given, leaves, "adapters")
    plan, produce = _plan(layout, leaves, given, config, config.lora.param_dtype)
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model or None,
        "r": config.lora.rank,
        "lora_alpha": config.lora.alpha,
        "lora_dropout": 0.0,
        "target_modules": peft_target_modules(config),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    writer = jax.process_index() == 0
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(_replacing_directory(path)) if writer else None
        entries = sorted(plan, key=lambda e: e[0])
        if writer:
            _write_safetensors(os.path.join(out, PEFT_WEIGHTS), entries, produce)
            with open(os.path.join(out, PEFT_CONFIG), "w") as f:
                json.dump(adapter_config, f, indent=2, sort_keys=True)
        else:  # still take part in every gather
            for name, _, _ in entries:
                produce(name)
