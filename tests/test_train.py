"""The SCoRe trainer on tiny models: gradient direction, KL anchoring, stages, end to end."""

import json
import os

import numpy as np
import pytest

from score_jax import config as config_lib
from score_jax import data, run_setup, tasks, train


def tiny_config(schedule="stage2:2", **rl):
    c = config_lib.base_config()
    c.model.preset = "tiny_llama"
    c.model.overrides.vocab_size = 261  # the byte tokenizer
    c.mesh.shape = (8, 1, 1)
    c.mesh.rules = "data_parallel"
    c.rl.schedule = schedule
    c.rl.prompts_per_step = 4
    c.rl.samples_per_prompt = 4
    c.rl.max_new_tokens = 2
    c.rl.prompt_buckets = (32, 64)
    c.data.synthetic_size = 64
    c.eval.num_examples = 8
    c.eval.batch_size = 8
    c.checkpoint.every_steps = 1000
    c.optim.warmup_steps = 1
    c.log_every_steps = 1000
    for k, v in rl.items():
        setattr(c.rl, k, v)
    return c


def digit_task(setup):
    """Reward 1 when an attempt starts with a digit (about 4% of bytes at random init)."""

    def reward(texts, examples):
        del examples
        return np.array([float(t[:1].isdigit()) for t in texts], np.float32)

    problems = data.generate_synthetic(64, seed=0, difficulty="easy")
    preset = data.get_preset("synthetic", "synthetic")
    setup.task = tasks.Task("digits", problems, problems[:8], preset, preset, reward, lambda t: t[:1])
    return setup


def run_digits(tmp_path, config):
    setup = digit_task(run_setup.build(config, str(tmp_path)))
    return train.run(config, str(tmp_path), setup=setup)


@pytest.mark.parametrize("sampler", ["static", "slots"])
def test_stage2_lifts_reward_from_chance(tmp_path, sampler):
    config = tiny_config("stage2:30", alpha=0.0, beta1=0.0, sampler=sampler)
    config.optim.learning_rate = 3e-3
    config.rl.sampling_batches = 2  # each step's episodes come from two sampling passes
    result = run_digits(tmp_path, config)
    first, last = result.history[0], result.history[-5:]
    assert first["reward/t1"] < 0.3 and first["reward/t2"] < 0.3
    assert np.mean([h["reward/t2"] for h in last]) > 0.9
    assert np.mean([h["reward/t1"] for h in last]) > 0.9


def test_huge_kl_weight_keeps_policy_at_reference(tmp_path):
    # Same run with and without a huge beta1. Adam moves every parameter by about the learning
    # rate per step whatever the loss scale, so "at the reference" means: KL stays small and flat
    # while the unconstrained policy runs away from the reference and learns the task.
    results = {}
    for beta1 in (0.0, 1000.0):
        config = tiny_config("stage2:12", alpha=0.0, beta1=beta1)
        config.optim.learning_rate = 1e-3
        results[beta1] = run_digits(tmp_path / str(beta1), config).history
    free, held = results[0.0], results[1000.0]
    assert max(h["kl/t2"] for h in free[-3:]) > 0.5
    assert np.mean([h["reward/t2"] for h in free[-3:]]) > 0.5
    # Per-batch KL estimates are noisy (one batch of 16 episodes): compare run averages.
    held_kl = np.mean([(h["kl/t1"] + h["kl/t2"]) / 2 for h in held])
    assert held_kl < 0.2 and held_kl < 0.3 * np.mean([h["kl/t2"] for h in free[-3:]])
    assert np.mean([h["reward/t2"] for h in held[-3:]]) < 0.2


def test_stage1_anchors_attempt1_while_attempt2_improves(tmp_path):
    config = tiny_config("stage1:30", beta1=0.0, beta2=1.0)
    config.optim.learning_rate = 3e-3
    history = run_digits(tmp_path, config).history
    assert np.mean([h["reward/t2"] for h in history[-5:]]) > 0.8
    # Attempt 1 earns no reward in Stage I: held by beta2, it keeps the base model's behaviour.
    assert np.mean([h["reward/t1"] for h in history[-10:]]) < 0.2
    assert np.mean([h["kl/t1"] for h in history]) < 0.6


def test_end_to_end_stage1_then_stage2_on_8_device_mesh(tmp_path, capsys):
    config = tiny_config("stage1:2,stage2:2")
    config.mesh.shape = (2, 2, 2)
    config.mesh.rules = "fsdp_tensor"
    config.rl.max_new_tokens = 4
    config.checkpoint.every_steps = 2
    config.log_every_steps = 1
    result = train.run(config, str(tmp_path))
    assert set(result.eval_metrics) >= {"acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i"}
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "train/reward/t2" in x] == [1, 2, 3, 4]
    assert any("eval/acc_t2" in x for x in lines)
    assert [x["train/stage"] for x in lines if "train/stage" in x] == [0, 0, 1, 1]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
    assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == [2, 4]
    out = capsys.readouterr().out
    assert "| method | Acc@t1 | Acc@t2 |" in out and "[train stage2] step 4/4" in out


def _final_params(workdir, step):
    import jax

    from score_jax.checkpoints import manager

    config = tiny_config()
    setup = run_setup.build(config, str(workdir))
    from score_jax.rl import train_step

    state = train_step.init_train_state(setup.params, train_step.make_optimizer(1e-3, 1, 2))
    got_step, state, extra = manager.restore_from_path(
        str(workdir / "checkpoints"), manager.abstract_like(state), step=step
    )
    assert got_step == step
    return jax.tree.map(np.asarray, state.params), extra


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    import subprocess
    import sys

    worker = os.path.join(os.path.dirname(__file__), "train_worker.py")
    steps = 4
    killed = subprocess.run(
        [sys.executable, worker, str(tmp_path / "a"), str(steps), str(steps // 2)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "a" / "eval.json").exists()
    for args in ([str(tmp_path / "a"), str(steps)], [str(tmp_path / "b"), str(steps)]):
        done = subprocess.run([sys.executable, worker, *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    resumed, extra_a = _final_params(tmp_path / "a", steps)
    straight, extra_b = _final_params(tmp_path / "b", steps)
    assert extra_a["data"] == extra_b["data"]
    for x, y in zip(jax_leaves(resumed), jax_leaves(straight)):
        np.testing.assert_array_equal(x, y)


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def test_corrupted_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    import jax.numpy as jnp

    from score_jax.checkpoints import manager

    ckpt = manager.Checkpointer(str(tmp_path), max_to_keep=3, async_save=False)
    for step in (1, 2):
        ckpt.save(step, {"w": jnp.full((4,), float(step))}, {"data": {"position": step}})
    ckpt.wait()
    for root, _, files in os.walk(tmp_path / "2" / "state"):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    restored = ckpt.restore_latest({"w": jnp.zeros((4,))})
    assert restored is not None
    step, state, extra = restored
    assert step == 1 and extra["data"]["position"] == 1
    np.testing.assert_array_equal(state["w"], np.ones(4))
    assert "step 2" in caplog.text and "falling back" in caplog.text


def test_kl_in_reward_subtracts_nothing_at_the_reference(tmp_path):
    # Step 1 samples from parameters equal to the reference, so beta * sequence KL must vanish even
    # with a huge beta: the returns of attempt 1 (Stage I: no reward of its own) stay at 0.
    config = tiny_config("stage1:1", kl_in_reward=True, kl_estimator="k1", beta2=1000.0)
    first = train.run(config, str(tmp_path)).history[0]
    assert abs(first["return/t1"]) < 1e-2
    assert first["return/t2"] == pytest.approx(first["reward/t2"], abs=1e-4)


def test_checkpoint_selection_on_carved_validation_problems(tmp_path):
    config = tiny_config("stage1:1,stage2:1")
    config.data.validation_size = 8
    config.checkpoint.select_by = "validation"
    config.checkpoint.every_steps = 1
    setup = run_setup.build(config, str(tmp_path))
    train_problems = {setup.task.train[i]["problem"] for i in range(len(setup.task.train))}
    validation = [ex["problem"] for ex in setup.task.validation]
    assert len(validation) == 8 and not train_problems & set(validation)
    assert len(train_problems) == config.data.synthetic_size - 8
    train.run(config, str(tmp_path), setup=setup)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "validation/acc_t2" in x] == [1, 2]
    assert os.listdir(tmp_path / "checkpoints" / "best")


def test_validation_selection_needs_a_validation_split():
    config = tiny_config()
    config.checkpoint.select_by = "validation"
    with pytest.raises(config_lib.ConfigError, match="data.validation_size"):
        config_lib.validate(config)


def test_offline_first_attempts_add_stage2_rows(tmp_path):
    config = tiny_config("stage1:1,stage2:1", offline_first_attempts=True)
    history = run_digits(tmp_path, config).history
    assert [h["episodes/online"] for h in history] == [16, 16]
    assert [h["episodes/trained"] for h in history] == [16, 32]  # Stage II: one base-model attempt 1 per row
