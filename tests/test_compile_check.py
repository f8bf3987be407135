"""Ahead-of-time compile check: the tiny config on the 8-device CPU mesh, a mesh that does not fit,
a memory limit that is too small, and (where libtpu is installed) a Cloud TPU topology."""

import dataclasses
import importlib.util
import os
import subprocess
import sys

import jax
import pytest
from test_train import tiny_config

from score_jax import compile_check
from score_jax import config as config_lib

_CONFIG_FILE = """
import sys
sys.path.insert(0, {tests!r})
from test_train import tiny_config


def get_config():
    return tiny_config()
"""


@pytest.fixture(scope="module")
def report():
    return compile_check.check(tiny_config(), jax.devices()[:8])


def test_reports_each_program_and_its_memory_per_device(report):
    assert report.mesh == {"data": 8, "fsdp": 1, "tensor": 1} and report.num_devices == 8
    assert [s.name for s in report.steps] == ["train_step", "prefill", "decode"]
    for step in report.steps:
        assert step.argument_bytes > 0 and step.peak_bytes >= step.argument_bytes + step.resident_bytes
    train, prefill, _ = report.steps
    assert "16 episodes x 128 tokens, 2 attempts" in train.shapes  # 4 prompts x 4 samples; 64 + 2x2 + 32 slots
    # Sampling counts the optimizer state (2 Adam moments) and the reference as resident.
    assert prefill.resident_bytes > 0
    table = report.table()
    assert "rules data_parallel" in table and "memory per device: unknown" in table
    assert all(name in table for name in ("train_step", "prefill", "decode", "peak/device"))


def test_lora_compiles_the_adapter_programs(report):
    config = tiny_config()
    config.model.lora.rank = 4
    lora = compile_check.check(config, jax.devices()[:8])
    assert [s.name for s in lora.steps] == ["train_step", "prefill", "decode"]
    assert "LoRA rank 4, alpha 16 on q,k,v,o,gate,up,down" in lora.table()
    assert "every weight" in report.table()
    # One copy of the base (it is the reference) and Adam over the adapters only.
    assert lora.steps[0].argument_bytes < 0.6 * report.steps[0].argument_bytes
    assert lora.steps[1].resident_bytes < 0.1 * report.steps[1].resident_bytes


def test_a_program_over_the_memory_limit_fails_with_the_numbers(report):
    compile_check.enforce_limit(report)  # no limit known on CPU: nothing to enforce
    with pytest.raises(
        compile_check.CompileCheckError,
        match=r"train_step needs .* per device, more than the "
        r"1\.0 KiB available: shard more",
    ):
        compile_check.enforce_limit(dataclasses.replace(report, memory_limit_bytes=1024))


def test_a_mesh_that_does_not_fit_the_devices_fails_before_compiling(tmp_path):
    config = tiny_config()
    config.mesh.shape = (4, 4, 1)
    with pytest.raises(config_lib.ConfigError, match=r"does not fit the 8 available devices"):
        compile_check.check(config, jax.devices()[:8])

    path = tmp_path / "tiny.py"
    path.write_text(_CONFIG_FILE.format(tests=os.path.dirname(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "score_jax.compile_check",
            f"--config={path}",
            "--mesh_devices=8",
            "--config.mesh.shape=(4,4,1)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1
    assert (
        "compile check FAILED: mesh.shape=(4, 4, 1) does not fit the 8 available devices; the product of the "
        "sizes must equal 8"
    ) in done.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="compiling for a TPU topology needs libtpu (pip install jax[tpu])",
)
def test_compiles_for_a_tpu_topology_without_a_tpu():
    config = tiny_config()
    config.mesh.shape = (1, -1, 1)
    config.mesh.rules = "fsdp"
    devices = compile_check.target_devices(topology="v5e:2x2")
    report = compile_check.check(config, devices, compile_check.memory_limit(devices))
    assert report.device_kind == "TPU v5 lite" and report.num_devices == 4
    assert report.memory_limit_bytes == 16 * compile_check.GIB
    assert all(s.peak_bytes > 0 for s in report.steps)
    compile_check.enforce_limit(report)
