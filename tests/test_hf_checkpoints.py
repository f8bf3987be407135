"""HF checkpoint import/export: logits parity with transformers, sharded import, and clear errors."""

import json
import os

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
LENGTHS, SEQ = [12, 9, 5, 1], 12  # left-padded; 12 > the gemma2 sliding window of 4


def _batch(vocab=256, lengths=LENGTHS, seq=SEQ):
    return fx.left_padded_batch(vocab, lengths, seq, seed=1)


def _ours(config, params, batch):
    tokens, valid, positions = batch
    return np.asarray(transformer.forward(config, params, tokens, positions, valid))


def _max_diff(a, b, valid):
    return float(np.abs(a - b)[valid].max())


@pytest.mark.parametrize(
    "family,tied",
    [("gemma", True), ("gemma2", True), ("llama", False), ("llama", True), ("qwen2", True), ("qwen2", False)],
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


@pytest.mark.parametrize("family", ["gemma2", "qwen2"])
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


@pytest.mark.parametrize("rules,mesh_shape", MESHES)
def test_sharded_import(tmp_path, rules, mesh_shape):
    fx.save_tiny_hf_checkpoint(tmp_path, "qwen2", tied=False)
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
    for name in ("gemma_2b", "gemma2_9b", "llama3p2_1b", "llama3p1_8b", "qwen2p5_0p5b", "qwen2p5_7b"):
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


# ---------------------------------------------------------------------------------------------
# Errors: each names what is wrong.


@pytest.fixture
def llama_dir(tmp_path):
    fx.save_tiny_hf_checkpoint(tmp_path / "ckpt", "llama", tied=False)
    return tmp_path / "ckpt"


def _edit_config(directory, **changes):
    cfg = json.loads((directory / "config.json").read_text())
    cfg.update(changes)
    (directory / "config.json").write_text(json.dumps(cfg))


def _edit_tensors(directory, edit):
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def test_error_unsupported_architecture(llama_dir):
    _edit_config(llama_dir, model_type="mistral", architectures=["MistralForCausalLM"])
    with pytest.raises(hf.HFCheckpointError, match="unsupported architecture: model_type='mistral'"):
        hf.load_hf_checkpoint(llama_dir)


def test_error_unsupported_rope(llama_dir):
    _edit_config(llama_dir, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0})
    with pytest.raises(hf.HFCheckpointError, match="RoPE type 'yarn' is not supported"):
        hf.load_hf_checkpoint(llama_dir)


def test_error_missing_tensor(llama_dir):
    _edit_tensors(llama_dir, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(hf.HFCheckpointError, match=r"lacks 1 tensors .*model\.layers\.1\.mlp\.up_proj\.weight"):
        hf.load_hf_checkpoint(llama_dir)


def test_error_unexpected_tensor(llama_dir):
    _edit_tensors(llama_dir, lambda t: t.update({"model.layers.0.mlp.extra.weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(hf.HFCheckpointError, match=r"does not use: model\.layers\.0\.mlp\.extra\.weight"):
        hf.load_hf_checkpoint(llama_dir)


def test_error_tied_config_with_lm_head(llama_dir):
    _edit_config(llama_dir, tie_word_embeddings=True)
    with pytest.raises(hf.HFCheckpointError, match=r"lm_head\.weight with tie_word_embeddings=true"):
        hf.load_hf_checkpoint(llama_dir)


def test_error_shape_mismatch(llama_dir):
    _edit_config(llama_dir, intermediate_size=96)
    with pytest.raises(
        hf.HFCheckpointError,
        match=r"6 tensors have the wrong shape.*model\.layers\.0\.mlp\.down_proj\.weight: "
        r"expected \[64, 96\], found \[64, 128\]",
    ):
        hf.load_hf_checkpoint(llama_dir)


def test_error_missing_config(llama_dir):
    os.remove(llama_dir / "config.json")
    with pytest.raises(hf.HFCheckpointError, match="no config.json in"):
        hf.load_hf_checkpoint(llama_dir)


def test_error_no_safetensors(llama_dir):
    os.rename(llama_dir / "model.safetensors", llama_dir / "pytorch_model.bin")
    with pytest.raises(hf.HFCheckpointError, match=r"no \*\.safetensors files .*pytorch_model\.bin"):
        hf.load_hf_checkpoint(llama_dir)


def test_error_corrupt_safetensors(llama_dir):
    path = llama_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(hf.HFCheckpointError, match="model.safetensors is not a readable safetensors file"):
        hf.load_hf_checkpoint(llama_dir)


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


def test_failed_export_keeps_existing_directory(tmp_path, llama_dir, monkeypatch):
    config, params = hf.load_hf_checkpoint(llama_dir)
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "out"]  # no temporary left behind
