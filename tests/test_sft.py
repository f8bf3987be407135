"""Supervised fine-tuning: packing, the resumable trace order, and a sharded run that resumes
bit for bit after SIGKILL (the RL trainer's guarantee, tests/test_train.py)."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from score_jax import config as config_lib
from score_jax import run_setup, sft


def tiny_config():
    c = config_lib.base_config()
    c.model.overrides.vocab_size = 261
    c.mesh.shape = (2, 2, 2)
    c.mesh.rules = "fsdp_tensor"
    c.data.synthetic_size = 16
    c.sft.batch_size = 8
    c.sft.learning_rate = 1e-3
    c.sft.warmup_steps = 1
    c.sft.checkpoint_every_steps = 1
    c.checkpoint.async_save = False  # a kill must come after the step's checkpoint is on disk
    c.optim.num_microbatches = 2
    return c


def random_traces(n=12, seed=0):
    rng = np.random.default_rng(seed)
    traces = []
    for _ in range(n):
        length = int(rng.integers(5, 30))
        ids = rng.integers(3, 261, length).tolist()
        mask = (np.arange(length) >= length // 2).tolist()
        traces.append((ids, mask))
    return traces


def fit_tiny(workdir, steps, on_step_end=None):
    """A tiny model fine-tuned on 12 random traces on a (2, 2, 2) fsdp_tensor mesh, checkpointing every step."""
    config = tiny_config()
    setup = run_setup.build(config, str(workdir))
    data = sft.pack(random_traces())
    settings = sft.settings_from_config(config, steps)
    tx = sft.optimizer_from_config(config, steps)
    return sft.fit(setup, data, str(workdir), settings, tx=tx, on_step_end=on_step_end)


def test_pack_left_pads_to_a_bucketed_width_and_unpacks():
    traces = [([5, 6, 7], [False, True, True]), ([8], [True])]
    data = sft.pack(traces, pad_id=0)
    assert data["tokens"].shape == (2, 32)
    np.testing.assert_array_equal(data["tokens"][0, -3:], [5, 6, 7])
    np.testing.assert_array_equal(data["positions"][0, -3:], [0, 1, 2])
    assert not data["valid"][1, :-1].any() and data["loss_mask"].sum() == 3
    assert sft.unpack(data) == [([5, 6, 7], [False, True, True]), ([8], [True])]
    with pytest.raises(ValueError, match="trace 0 has 3 tokens but a loss mask of 2"):
        sft.pack([([1, 2, 3], [True, True])])


def test_trace_batches_resume_the_same_order_and_fill_small_sets():
    from score_jax import sharding

    mesh = sharding.make_mesh((8, 1, 1))
    data = sft.pack(random_traces(20))
    batches = sft.TraceBatches(data, 8, seed=3, mesh=mesh, rules="data_parallel")
    assert batches.steps_per_epoch == 2
    first = [next(batches)["tokens"] for _ in range(3)]
    resumed = sft.TraceBatches(data, 8, seed=3, mesh=mesh, rules="data_parallel")
    next(resumed)
    state = resumed.get_state()
    again = sft.TraceBatches(data, 8, seed=3, mesh=mesh, rules="data_parallel")
    again.set_state(state)
    np.testing.assert_array_equal(next(again)["tokens"], first[1])
    np.testing.assert_array_equal(next(again)["tokens"], first[2])
    few = sft.TraceBatches(sft.pack(random_traces(3)), 8, seed=0, mesh=mesh, rules="data_parallel")
    assert next(few)["tokens"].shape[0] == 8  # three traces repeated to fill one batch


def test_fit_lowers_the_loss_and_writes_metrics(tmp_path):
    result = fit_tiny(tmp_path, 6)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert (tmp_path / "metrics.jsonl").read_text().count("sft/loss") == 6
    spec = jax.tree.leaves(result.params)[0].sharding
    assert spec.mesh.shape == {"data": 2, "fsdp": 2, "tensor": 2}


def fit_in_child(workdir, steps: int, kill_after: int = 0) -> subprocess.CompletedProcess:
    """`fit_tiny` in a fresh process that SIGKILLs itself after step `kill_after` (0: never) or
    else writes its final parameters to ``final.npz`` and the trace order's state to ``data.json``."""
    child = f"""
import json, os, signal, sys
import jax, numpy as np
sys.path.insert(0, {os.path.dirname(__file__)!r})
import test_sft
def on_step_end(step, metrics):
    if step == {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)
result = test_sft.fit_tiny({str(workdir)!r}, {steps}, on_step_end=on_step_end)
np.savez({str(workdir / "final.npz")!r}, *[np.asarray(x) for x in jax.tree.leaves(result.params)])
"""
    # The test's environment (conftest): the 8-device CPU platform and the session's compilation
    # cache, so the resumed and the straight run load what the killed run compiled.
    return subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=600)


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    killed = fit_in_child(tmp_path / "a", 4, kill_after=2)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert max(int(s) for s in os.listdir(tmp_path / "a" / "checkpoints") if s.isdigit()) == 2
    for run in ("a", "b"):  # a resumes after the kill, b runs straight through
        done = fit_in_child(tmp_path / run, 4)
        assert done.returncode == 0, done.stderr[-2000:]
    with np.load(tmp_path / "a" / "final.npz") as resumed, np.load(tmp_path / "b" / "final.npz") as straight:
        assert resumed.files == straight.files and len(resumed.files) > 5
        for name in resumed.files:
            np.testing.assert_array_equal(resumed[name], straight[name])
