"""HF checkpoint import/export: logits parity with transformers, sharded import, and clear errors."""

import json
import os
import re

import hf_fixtures as fx
import jax
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from test_model import MESHES, check_param_shardings

from score_jax import sharding
from score_jax.checkpoints import hf
from score_jax.model import config as model_config
from score_jax.model import transformer

TOL = 1e-4
LENGTHS, SEQ = [12, 9, 5, 1], 12  # left-padded; 12 > the gemma2 and gemma3 sliding windows of 4


def _batch(vocab=256, lengths=LENGTHS, seq=SEQ):
    return fx.left_padded_batch(vocab, lengths, seq, seed=1)


def _ours(config, params, batch):
    tokens, valid, positions = batch
    return np.asarray(transformer.forward(config, params, tokens, positions, valid))


def _max_diff(a, b, valid):
    return float(np.abs(a - b)[valid].max())


@pytest.mark.parametrize(
    "family,tied",
    [
        ("gemma", True),
        ("gemma2", True),
        ("gemma3", True),
        ("gemma3", False),
        ("llama", False),
        ("llama", True),
        ("qwen2", True),
        ("qwen2", False),
        ("qwen3", True),
        ("qwen3", False),
    ],
)
def test_import_export_matches_transformers(tmp_path, family, tied):
    model = fx.save_tiny_hf_checkpoint(tmp_path / "in", family, tied)
    batch = _batch()
    ref = fx.hf_logits(model, *batch)

    config, params = hf.load_hf_checkpoint(tmp_path / "in")
    assert (config.family, config.tie_embeddings) == (family, tied)
    assert ("lm_head" in params) == (not tied)
    assert _max_diff(_ours(config, params, batch), ref, batch[1]) <= TOL

    hf.save_hf_checkpoint(config, params, tmp_path / "out")
    reloaded = fx.load_hf_model(tmp_path / "out")
    assert _max_diff(fx.hf_logits(reloaded, *batch), ref, batch[1]) <= TOL
    assert hf.load_hf_checkpoint(tmp_path / "out")[0] == config


def test_gemma2_window_and_softcaps_are_exercised(tmp_path):
    """The gemma2 parity case would fail if the window or either softcap were ignored."""
    fx.save_tiny_hf_checkpoint(tmp_path, "gemma2")
    config, params = hf.load_hf_checkpoint(tmp_path)
    assert (config.sliding_window, config.sliding_window_pattern, config.query_pre_attn_scalar) == (4, 2, 24)
    assert (config.attn_logit_softcap, config.final_logit_softcap) == (5.0, 3.0)
    batch = _batch()
    base = _ours(config, params, batch)
    for change in (dict(sliding_window=None), dict(attn_logit_softcap=None), dict(final_logit_softcap=None)):
        assert _max_diff(_ours(config.replace(**change), params, batch), base, batch[1]) > 1e-2, change


def test_gemma3_window_rope_bases_and_qk_norms_are_exercised(tmp_path):
    """The gemma3 parity cases would fail if the window, either RoPE setting or the q/k norms were ignored."""
    fx.save_tiny_hf_checkpoint(tmp_path, "gemma3")
    config, params = hf.load_hf_checkpoint(tmp_path)
    assert (config.sliding_window, config.sliding_window_pattern, config.query_pre_attn_scalar) == (4, 3, 24)
    assert (config.rope_theta, config.rope_linear_factor, config.rope_local_theta) == (1e6, 8.0, 1e4)
    assert config.qk_norm and config.post_norms and config.attn_logit_softcap is None
    batch = _batch()
    base = _ours(config, params, batch)
    changes = (dict(sliding_window=None), dict(rope_local_theta=None), dict(rope_linear_factor=None))
    for change in changes:
        assert _max_diff(_ours(config.replace(**change), params, batch), base, batch[1]) > 1e-2, change
    for norm in ("q_norm", "k_norm"):
        flat = jax.tree.map(np.zeros_like, params["layer_2"]["attn"][norm])  # (1 + 0) * x: no learned scale
        changed = {**params, "layer_2": {**params["layer_2"], "attn": {**params["layer_2"]["attn"], norm: flat}}}
        assert _max_diff(_ours(config, changed, batch), base, batch[1]) > 1e-2, norm


@pytest.mark.parametrize("family", ["gemma2", "gemma3", "qwen2"])
def test_scan_layers_import_and_export(tmp_path, family):
    model = fx.save_tiny_hf_checkpoint(tmp_path / "in", family)
    batch = _batch()
    ref = fx.hf_logits(model, *batch)
    config, params = hf.load_hf_checkpoint(tmp_path / "in", scan_layers=True)
    assert params["layers"]["attn"]["q"].shape == (config.num_layers, 64, 4, 16)
    assert _max_diff(_ours(config, params, batch), ref, batch[1]) <= TOL
    hf.save_hf_checkpoint(config, params, tmp_path / "out")
    assert _max_diff(fx.hf_logits(fx.load_hf_model(tmp_path / "out"), *batch), ref, batch[1]) <= TOL


def test_bfloat16_checkpoint(tmp_path):
    fx.save_tiny_hf_checkpoint(tmp_path / "in", "llama", dtype=torch.bfloat16)
    batch = _batch()
    ref = fx.hf_logits(fx.load_hf_model(tmp_path / "in"), *batch)  # bf16 weights, fp32 compute
    config, params = hf.load_hf_checkpoint(tmp_path / "in")
    assert params["embedding"].dtype == np.float32
    assert _max_diff(_ours(config, params, batch), ref, batch[1]) <= TOL

    config16, params16 = hf.load_hf_checkpoint(tmp_path / "in", param_dtype="bfloat16")
    assert params16["layer_0"]["mlp"]["down"].dtype == jax.numpy.bfloat16
    np.testing.assert_array_equal(np.asarray(params16["embedding"], np.float32), np.asarray(params["embedding"]))
    hf.save_hf_checkpoint(config16, params16, tmp_path / "out")
    with safe_open(tmp_path / "out" / "model.safetensors", "numpy") as f:
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == "BF16"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    assert _max_diff(fx.hf_logits(fx.load_hf_model(tmp_path / "out"), *batch), ref, batch[1]) <= TOL


def test_sharded_files_with_index(tmp_path):
    model = fx.save_tiny_hf_checkpoint(tmp_path / "in", "qwen2", max_shard_size="40KB")
    assert (tmp_path / "in" / hf.INDEX_FILE).exists()
    batch = _batch()
    ref = fx.hf_logits(model, *batch)
    config, params = hf.load_hf_checkpoint(tmp_path / "in")
    assert _max_diff(_ours(config, params, batch), ref, batch[1]) <= TOL

    hf.save_hf_checkpoint(config, params, tmp_path / "out", max_shard_bytes=50_000, source_dir=tmp_path / "in")
    files = sorted(p.name for p in (tmp_path / "out").glob("*.safetensors"))
    assert len(files) > 2 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((tmp_path / "out" / hf.INDEX_FILE).read_text())
    assert set(index["weight_map"].values()) == set(files)
    assert (tmp_path / "out" / "generation_config.json").exists()  # copied from source_dir
    assert _max_diff(fx.hf_logits(fx.load_hf_model(tmp_path / "out"), *batch), ref, batch[1]) <= TOL


@pytest.mark.parametrize("rules,mesh_shape,family", [(*m, "qwen2") for m in MESHES] + [(*MESHES[-1], "gemma3")])
def test_sharded_import(tmp_path, rules, mesh_shape, family):
    fx.save_tiny_hf_checkpoint(tmp_path, family, tied=False)
    config, single = hf.load_hf_checkpoint(tmp_path, scan_layers=True)
    mesh = sharding.make_mesh(mesh_shape)
    config, params = hf.load_hf_checkpoint(tmp_path, mesh, rules, scan_layers=True)
    check_param_shardings(params, rules)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(single), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    batch = _batch(lengths=[12, 9, 5, 1, 12, 3, 7, 12])
    np.testing.assert_allclose(
        _ours(config, params, batch)[batch[1]], _ours(config, single, batch)[batch[1]], atol=1e-5, rtol=0
    )


def test_config_round_trips_for_real_presets():
    names = ("gemma_2b", "gemma2_9b", "gemma3_1b", "gemma3_27b", "llama3p2_1b", "llama3p1_8b", "qwen2p5_7b", "qwen3_8b")
    for name in names:
        preset = model_config.get_preset(name)
        assert hf.model_config_from_hf(hf.hf_config_from_model(preset)) == preset, name


def test_transformers4_style_config():
    v4 = {
        "model_type": "llama",
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    }
    config = hf.model_config_from_hf(v4, dtype="bfloat16")
    assert (config.head_dim, config.rope_theta, config.tie_embeddings) == (16, 500000.0, False)
    assert config.rope_llama3_scaling == (8.0, 1.0, 4.0, 64) and config.dtype == "bfloat16"
    gemma2_v4 = {
        "model_type": "gemma2",
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "head_dim": 16,
        "sliding_window": 4096,
        "query_pre_attn_scalar": 256,
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
    }
    config = hf.model_config_from_hf(gemma2_v4)
    assert (config.sliding_window, config.sliding_window_pattern, config.tie_embeddings) == (4096, 2, True)
    qwen3_v4 = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 40960,
        "rope_theta": 1000000,
        "rope_scaling": None,
        "sliding_window": None,
        "use_sliding_window": False,
        "max_window_layers": 36,
        "tie_word_embeddings": False,
        "attention_bias": False,
    }
    assert hf.model_config_from_hf(qwen3_v4) == model_config.get_preset("qwen3_8b")


# Gemma 3 as published (transformers 4.5x): 1B text-only; 12B multimodal, whose sparse text_config
# leaves the head counts, head_dim and vocabulary to Gemma3TextConfig's defaults.
GEMMA3_1B = {
    "architectures": ["Gemma3ForCausalLM"],
    "model_type": "gemma3_text",
    "eos_token_id": [1, 106],
    "vocab_size": 262144,
    "hidden_size": 1152,
    "intermediate_size": 6912,
    "num_hidden_layers": 26,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000,
    "rope_local_base_freq": 10000,
    "rope_scaling": None,
    "sliding_window": 512,
    "sliding_window_pattern": 6,
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "hidden_activation": "gelu_pytorch_tanh",
}
GEMMA3_12B = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "eos_token_id": [1, 106],
    "text_config": {
        "hidden_size": 3840,
        "intermediate_size": 15360,
        "model_type": "gemma3_text",
        "num_attention_heads": 16,
        "num_hidden_layers": 48,
        "num_key_value_heads": 8,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
    "vision_config": {"model_type": "siglip_vision_model"},
}


@pytest.mark.parametrize("hf_config,preset", [(GEMMA3_1B, "gemma3_1b"), (GEMMA3_12B, "gemma3_12b")])
def test_published_gemma3_configs(tmp_path, hf_config, preset):
    config = hf.model_config_from_hf(hf_config)
    assert config == model_config.get_preset(preset)
    assert [i for i in range(12) if not config.is_local_layer(i)] == [5, 11]
    written = hf.hf_config_from_model(config, base=hf_config)
    if hf_config is GEMMA3_12B:  # its weights are not read (yet): said at once, not as missing tensors
        (tmp_path / "config.json").write_text(json.dumps(hf_config))
        with pytest.raises(hf.HFCheckpointError, match="multimodal Gemma3ForConditionalGeneration"):
            hf.load_hf_checkpoint(tmp_path)
    assert (written["model_type"], written["eos_token_id"], "vision_config" in written) == (
        "gemma3_text",
        [1, 106],
        False,
    )


# ---------------------------------------------------------------------------------------------
# Errors: each names what is wrong.


@pytest.fixture(params=["llama", "qwen3", "gemma3"])
def ckpt_dir(request, tmp_path):
    """An untied checkpoint of one family, in a directory named for it."""
    fx.save_tiny_hf_checkpoint(tmp_path / request.param, request.param, tied=False)
    return tmp_path / request.param


def _edit_config(directory, **changes):
    cfg = json.loads((directory / "config.json").read_text())
    cfg.update(changes)
    (directory / "config.json").write_text(json.dumps(cfg))


def _edit_tensors(directory, edit):
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def test_error_unsupported_architecture(ckpt_dir):
    _edit_config(ckpt_dir, model_type="mistral", architectures=["MistralForCausalLM"])
    with pytest.raises(hf.HFCheckpointError, match="unsupported architecture: model_type='mistral'"):
        hf.load_hf_checkpoint(ckpt_dir)


def test_error_unsupported_rope(ckpt_dir):
    _edit_config(ckpt_dir, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0})
    with pytest.raises(hf.HFCheckpointError, match="RoPE type 'yarn' is not supported"):
        hf.load_hf_checkpoint(ckpt_dir)


def test_error_missing_tensor(ckpt_dir):
    gone = ["model.layers.1.mlp.up_proj.weight"]
    if ckpt_dir.name != "llama":  # and a q/k norm
        gone.append("model.layers.1.self_attn.k_norm.weight")
    _edit_tensors(ckpt_dir, lambda t: [t.pop(name) for name in gone])
    with pytest.raises(hf.HFCheckpointError, match=f"lacks {len(gone)} tensors .*" + ", ".join(map(re.escape, gone))):
        hf.load_hf_checkpoint(ckpt_dir)


def test_error_unexpected_tensor(ckpt_dir):
    _edit_tensors(ckpt_dir, lambda t: t.update({"model.layers.0.mlp.extra.weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(hf.HFCheckpointError, match=r"does not use: model\.layers\.0\.mlp\.extra\.weight"):
        hf.load_hf_checkpoint(ckpt_dir)


def test_error_tied_config_with_lm_head(ckpt_dir):
    _edit_config(ckpt_dir, tie_word_embeddings=True)
    with pytest.raises(hf.HFCheckpointError, match=r"lm_head\.weight with tie_word_embeddings=true"):
        hf.load_hf_checkpoint(ckpt_dir)


def test_error_shape_mismatch(ckpt_dir):
    _edit_config(ckpt_dir, intermediate_size=96)
    mlp_tensors = 3 * fx.HF_CONFIGS[ckpt_dir.name]["num_hidden_layers"]
    with pytest.raises(
        hf.HFCheckpointError,
        match=rf"{mlp_tensors} tensors have the wrong shape.*model\.layers\.0\.mlp\.down_proj\.weight: "
        r"expected \[64, 96\], found \[64, 128\]",
    ):
        hf.load_hf_checkpoint(ckpt_dir)


def test_error_missing_config(ckpt_dir):
    os.remove(ckpt_dir / "config.json")
    with pytest.raises(hf.HFCheckpointError, match="no config.json in"):
        hf.load_hf_checkpoint(ckpt_dir)


def test_error_no_safetensors(ckpt_dir):
    os.rename(ckpt_dir / "model.safetensors", ckpt_dir / "pytorch_model.bin")
    with pytest.raises(hf.HFCheckpointError, match=r"no \*\.safetensors files .*pytorch_model\.bin"):
        hf.load_hf_checkpoint(ckpt_dir)


def test_error_corrupt_safetensors(ckpt_dir):
    path = ckpt_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(hf.HFCheckpointError, match="model.safetensors is not a readable safetensors file"):
        hf.load_hf_checkpoint(ckpt_dir)


def test_error_index_names_absent_file(tmp_path):
    fx.save_tiny_hf_checkpoint(tmp_path, "llama", max_shard_size="40KB")
    victim = sorted(tmp_path.glob("model-*.safetensors"))[1]
    os.remove(victim)
    with pytest.raises(hf.HFCheckpointError, match=f"names {victim.name}, which is not in"):
        hf.load_hf_checkpoint(tmp_path)


def test_export_refuses_config_transformers_cannot_express():
    config = model_config.get_preset("tiny_llama", qkv_bias=True)
    with pytest.raises(hf.HFCheckpointError, match="LlamaForCausalLM cannot express.*qkv_bias"):
        hf.hf_config_from_model(config)


@pytest.mark.parametrize("ckpt_dir", ["llama"], indirect=True)
def test_failed_export_keeps_existing_directory(tmp_path, ckpt_dir, monkeypatch):
    config, params = hf.load_hf_checkpoint(ckpt_dir)
    out = tmp_path / "out"
    hf.save_hf_checkpoint(config, params, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def failing_to_host(x):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return np.asarray(x)

    monkeypatch.setattr(hf, "_to_host", failing_to_host)
    with pytest.raises(OSError, match="disk full"):
        hf.save_hf_checkpoint(config, params, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama", "out"]  # no temporary left behind
