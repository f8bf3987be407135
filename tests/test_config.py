"""Config files load and validate; bad settings and missing paths fail with clear messages."""

import importlib.util
import json
import os
import pathlib

import pytest

from score_jax import config as config_lib

CONFIGS = pathlib.Path(__file__).parent.parent / "configs"
REAL = ["stage1_math.py", "stage2_math.py", "stage1_code.py", "stage2_code.py", "ablations_math.py"]


def load(name, arg=None):
    spec = importlib.util.spec_from_file_location(name[:-3], CONFIGS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


@pytest.fixture
def fake_paths(tmp_path):
    ckpt = tmp_path / "model"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "gemma2"}))
    data = tmp_path / "data"
    data.mkdir()
    return str(ckpt), str(data)


@pytest.mark.parametrize("name", REAL)
def test_real_configs_validate_given_their_paths(name, fake_paths):
    c = load(name)
    c.model.hf_checkpoint, c.data.manual_dir = fake_paths
    config_lib.validate(c, num_devices=8)
    assert c.rl.alpha == 10.0 and c.rl.beta1 == 0.01


@pytest.mark.parametrize("name", REAL)
def test_real_configs_stop_at_once_without_a_checkpoint(name):
    with pytest.raises(config_lib.ConfigError, match="--config.model.hf_checkpoint="):
        config_lib.validate(load(name), num_devices=8)


def test_math_config_asks_for_the_data_directory(fake_paths):
    c = load("stage2_math.py")
    c.model.hf_checkpoint = fake_paths[0]
    with pytest.raises(config_lib.ConfigError, match="--config.data.manual_dir="):
        config_lib.validate(c, num_devices=8)


def test_paper_hyperparameters():
    math, code = load("stage2_math.py"), load("stage2_code.py")
    assert (math.optim.learning_rate, math.rl.beta2, code.optim.learning_rate, code.rl.beta2) == (5e-6, 0.1, 1e-5, 0.25)
    assert math.rl.prompts_per_step * math.rl.samples_per_prompt == 512
    assert code.rl.prompts_per_step * code.rl.samples_per_prompt == 128


@pytest.mark.parametrize(
    "variant,schedule,alpha",
    [
        ("single_turn", "single_turn:3000", 10.0),
        ("no_stage1", "stage2:3000", 10.0),
        ("no_shaping", "stage1:1000,stage2:2000", 0.0),
        ("naive_multi_turn", "naive_multi_turn:3000", 10.0),
    ],
)
def test_ablation_variants(variant, schedule, alpha):
    c = load("ablations_math.py", variant)
    assert (c.rl.schedule, c.rl.alpha) == (schedule, alpha)


def tiny():
    c = config_lib.base_config()
    c.mesh.shape = (8, 1, 1)
    return c


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("rl.advantage_estimator", "ppo", "rl.advantage_estimator='ppo' is unknown"),
        ("rl.kl_estimator", "k9", "rl.kl_estimator='k9' is unknown"),
        ("rl.alpha", -1.0, "rl.alpha=-1.0 must be >= 0"),
        ("rl.beta1", -0.1, "rl.beta1=-0.1 must be >= 0"),
        ("rl.beta2", -0.1, "rl.beta2=-0.1 must be >= 0"),
        ("rl.schedule", "stage3:10", "unknown stage 'stage3'"),
        ("rl.schedule", "stage1", "needs a step count"),
        ("mesh.shape", (3, 1, 1), "does not fit the 8 available devices"),
        ("mesh.shape", (-1, -1, 1), "does not fit"),
        ("optim.num_microbatches", 3, "do not divide into optim.num_microbatches=3"),
        ("rl.samples_per_prompt", 1, "needs rl.samples_per_prompt >= 2"),
        ("rl.prompts_per_step", 1, "do not split over the 8 data-parallel devices"),
        ("model.tokenizer", "/nonexistent/tokenizer.model", "does not exist"),
        ("rl.init_from", "/nonexistent/ckpt", "rl.init_from='/nonexistent/ckpt' does not exist"),
        ("model.attention_impl", "flash", "model.attention_impl='flash' is unknown"),
        ("rl.sampling_batches", 3, "rl.sampling_batches=3 must be >= 1 and divide"),
        ("rl.sampling_batches", 0, "rl.sampling_batches=0 must be >= 1"),
        ("rl.prefill_chunk", -1, "rl.prefill_chunk=-1 must be >= 0"),
        ("model.attention_impl", "cudnn", "needs model.dtype='bfloat16'"),
    ],
)
def test_invalid_settings_are_rejected_with_a_message(field, value, message):
    c = tiny()
    group, name = field.split(".")
    setattr(getattr(c, group), name, value)
    with pytest.raises(config_lib.ConfigError, match=_escape(message)):
        config_lib.validate(c, num_devices=8)


def test_prompts_must_divide_over_processes():
    c = tiny()
    c.rl.prompts_per_step = 6
    with pytest.raises(config_lib.ConfigError, match="does not divide over 4 processes"):
        config_lib.validate(c, num_devices=8, process_count=4)


def _escape(text):
    import re

    return re.escape(text)


def test_tiny_default_is_valid():
    config_lib.validate(tiny(), num_devices=8)
    assert os.path.exists(CONFIGS / "stage2_math.py")
