"""A Stage II run sampling with the slot pool (rl.sampler=slots) resumes bitwise after SIGKILL.

This file is also the run's worker: ``python tests/test_slot_resume.py WORKDIR STEPS [KILL_AFTER]``
trains the tiny model for STEPS Stage II steps, SIGKILLing itself after step KILL_AFTER (whose
checkpoint is then on disk).
"""

import os
import signal
import subprocess
import sys

import numpy as np

if __name__ == "__main__":  # the worker: an 8-device CPU platform, as conftest.py sets up for tests
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, os.path.dirname(__file__))

from test_train import _final_params, jax_leaves, tiny_config  # noqa: E402

STEPS = 4


def slot_config(steps: int):
    config = tiny_config(f"stage2:{steps}", sampler="slots")
    config.rl.max_new_tokens = 4
    config.rl.sampling_batches = 2  # a pool of half the rows: slots are refilled within each step
    config.checkpoint.every_steps = 1
    config.checkpoint.async_save = False  # the kill must come after the step's checkpoint is on disk
    config.eval.num_examples = 4
    config.eval.batch_size = 4
    return config


def _worker(workdir: str, steps: int, kill_after: int | None):
    from score_jax import train

    def on_step_end(step, metrics):
        del metrics
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    train.run(slot_config(steps), workdir, on_step_end=on_step_end)


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, __file__, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_slot_sampler_stage2_sigkill_and_resume_is_bitwise_identical(tmp_path):
    killed = _run(tmp_path / "a", STEPS, STEPS // 2)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "a" / "eval.json").exists()
    outputs = {}
    for name in ("a", "b"):
        done = _run(tmp_path / name, STEPS)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs[name] = done.stdout + done.stderr
    assert f"resumed from step {STEPS // 2}" in outputs["a"]
    resumed, extra_a = _final_params(tmp_path / "a", STEPS)
    straight, extra_b = _final_params(tmp_path / "b", STEPS)
    assert extra_a["data"] == extra_b["data"]
    learned = [
        {k: v for k, v in x["metrics"].items() if not k.startswith(("time/", "throughput/"))}
        for x in (extra_a, extra_b)
    ]
    assert learned[0] == learned[1]  # rewards, KL, losses of the last step: the same samples, the same update
    for x, y in zip(jax_leaves(resumed), jax_leaves(straight), strict=True):
        np.testing.assert_array_equal(x, y)


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
