"""LoRA: the policy is the frozen base plus adapters, the reference the same base arrays.

Zero-initialised B gives the base exactly (logits and KL); the reference holds the policy's own
buffers; the optimizer holds adapters only, sharded by the mesh rules; a Stage II run learns and
resumes bit for bit after SIGKILL; a resume on other base weights is refused; the merged HF export
and the PEFT adapter directory (loaded by peft onto the transformers model) reproduce the policy.

Run as a script, it is the SIGKILL test's worker: ``python tests/test_lora.py WORKDIR STEPS [KILL_AFTER]``.
"""

import dataclasses
import os
import subprocess
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # when run as the worker
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from test_train import run_digits, tiny_config  # noqa: E402

from score_jax import config as config_lib  # noqa: E402
from score_jax import run_setup, train  # noqa: E402
from score_jax.model import lora, transformer  # noqa: E402
from score_jax.rl import train_step as step_lib  # noqa: E402


def lora_config(schedule="stage2:2", rank=4, **rl):
    c = tiny_config(schedule, **rl)
    c.model.lora.rank = rank
    c.model.lora.alpha = 2.0 * rank
    return c


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = lora_config()
    config.mesh.shape, config.mesh.rules = (1, 4, 2), "fsdp_tensor"
    return run_setup.build(config, str(tmp_path_factory.mktemp("setup")))


def _batch(vocab: int, rows: int = 8, width: int = 24):
    rng = np.random.default_rng(0)
    masks = np.zeros((rows, 2, width), np.float32)
    masks[:, 0, 6:14], masks[:, 1, 16:] = 1, 1
    return {
        "tokens": jnp.asarray(rng.integers(1, vocab, (rows, width)), jnp.int32),
        "positions": jnp.tile(jnp.arange(width, dtype=jnp.int32), (rows, 1)),
        "valid": jnp.ones((rows, width), bool),
        "attempt_masks": jnp.asarray(masks),
        "advantages": jnp.asarray(rng.normal(size=(rows, 2)), jnp.float32),
    }


def test_fresh_adapters_give_the_base_exactly(setup):
    batch = _batch(setup.model_config.vocab_size)
    args = (batch["tokens"], batch["positions"], batch["valid"])
    policy = transformer.forward(setup.model_config, setup.params, *args)
    base = transformer.forward(setup.ref_config, setup.ref_params, *args)
    np.testing.assert_array_equal(np.asarray(policy), np.asarray(base))
    # The train step's own policy and reference log-probs agree to the bit: KL = 0 on every attempt.
    tx = run_setup.optimizer(setup.config)
    state = step_lib.init_train_state(lora.trainable(setup.model_config, setup.params), tx)
    step = step_lib.make_train_step(setup.model_config, setup.ref_config, tx)
    _, metrics = step(state, setup.ref_params, batch, jnp.asarray([0.1, 0.01]))
    assert np.all(np.asarray(metrics["kl"]) == 0) and np.all(np.asarray(metrics["kl_k1"]) == 0)
    assert float(metrics["grad_norm"]) > 0  # B gets a gradient at once (A's is zero while B is)


def test_the_reference_is_the_policys_own_base_buffers(setup):
    policy, reference = setup.params, setup.ref_params
    flat_ref = jax.tree_util.tree_flatten_with_path(reference)[0]
    assert len(flat_ref) == len(jax.tree.leaves(lora.base(policy)))
    for path, ref_leaf in flat_ref:
        leaf = policy
        for key in path:
            leaf = leaf[key.key]
        assert leaf is ref_leaf, jax.tree_util.keystr(path)
        assert leaf.addressable_shards[0].data.unsafe_buffer_pointer() == (
            ref_leaf.addressable_shards[0].data.unsafe_buffer_pointer()
        )
    assert setup.ref_config.lora is None and setup.model_config.lora.rank == 4


def test_the_optimizer_holds_adapters_only_sharded_by_the_rules(setup):
    tx = run_setup.optimizer(setup.config)
    state = step_lib.init_train_state(lora.trainable(setup.model_config, setup.params), tx)
    names = [str(path[-1].key) for path, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]]
    assert names and all(lora.is_adapter(n) for n in names)
    size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    assert size(state.opt_state) <= 2 * size(state.params) + 8  # Adam's two moments (and counters)
    assert size(state.params) < 0.1 * size(setup.ref_params)
    layer = state.params["layer_0"]
    # A [embed, rank] splits like the weight's input (fsdp); B [rank, heads, head_dim] like its heads (tensor).
    assert spec(layer["attn"]["q_lora_a"]) == ("fsdp", None)
    assert spec(layer["attn"]["q_lora_b"]) == (None, "tensor", None)
    assert spec(layer["mlp"]["down_lora_a"]) == ("tensor", None) and spec(layer["mlp"]["down_lora_b"]) == (None, "fsdp")


def spec(x) -> tuple:
    """An array's PartitionSpec, one entry per axis."""
    entries = tuple(x.sharding.spec)
    return entries + (None,) * (x.ndim - len(entries))


def test_merged_weights_compute_what_the_adapters_do(setup):
    moved = jax.tree.map(lambda x: x + 0.05, lora.adapters(setup.params))
    params = lora.merge(setup.ref_params, moved)
    batch = _batch(setup.model_config.vocab_size)
    args = (batch["tokens"], batch["positions"], batch["valid"])
    policy = transformer.forward(setup.model_config, params, *args)
    merged = transformer.forward(setup.ref_config, lora.merged_weights(setup.model_config, params), *args)
    base = transformer.forward(setup.ref_config, setup.ref_params, *args)
    assert np.abs(np.asarray(policy) - np.asarray(base)).max() > 1e-2
    np.testing.assert_allclose(np.asarray(merged), np.asarray(policy), atol=1e-4)


def test_config_refuses_dropout_unknown_targets_and_baselines():
    c = lora_config()
    c.model.lora.dropout, c.model.lora.targets, c.method = 0.1, ("q,k", "ffn"), "star"
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.validate(c)
    message = str(err.value)
    for part in ("model.lora.dropout=0.1", "['ffn']", "method='star'"):
        assert part in message
    c = lora_config()
    c.model.lora.targets = ("q,v",)  # as --config.model.lora.targets=q,v arrives
    assert run_setup.lora_config(c).targets == ("q", "v")


# ---------------------------------------------------------------------------------------------
# Training.


def test_stage2_with_lora_lifts_reward_from_chance(tmp_path):
    config = lora_config("stage2:30", rank=8, alpha=0.0, beta1=0.0)
    # The output head and final norm stay frozen under LoRA, so at width 64 (|h| = 8, head rows of norm 1)
    # no digit can get past p ~ 0.87: width 128 lets the adapters reach the full-training test's 0.9.
    config.model.overrides.d_model = 128
    config.optim.learning_rate = 1e-2  # the adapters start at zero: a larger step than full training's 3e-3
    config.rl.sampling_batches = 2
    result = run_digits(tmp_path, config)
    first, last = result.history[0], result.history[-5:]
    assert first["reward/t1"] < 0.3 and first["reward/t2"] < 0.3
    assert first["kl/t1"] == 0 and first["kl/t2"] == 0  # step 1's policy is the base
    assert np.mean([h["reward/t2"] for h in last]) > 0.9
    assert np.mean([h["reward/t1"] for h in last]) > 0.9
    assert all(lora.is_adapter(str(p[-1].key)) for p, _ in jax.tree_util.tree_flatten_with_path(result.state.params)[0])


def test_offline_first_attempts_come_from_the_base(tmp_path):
    # The reference samples attempt 1 through the policy's sampler with the adapters off.
    config = lora_config("stage1:1,stage2:1", offline_first_attempts=True)
    history = run_digits(tmp_path, config).history
    assert [h["episodes/trained"] for h in history] == [16, 32]


def _worker_config(total: int):
    config = lora_config(f"stage1:{total // 2},stage2:{total - total // 2}")
    config.checkpoint.every_steps = 1
    config.checkpoint.async_save = False  # the kill must come after the step's checkpoint is on disk
    config.eval.num_examples = 4
    config.eval.batch_size = 4
    return config


def _saved(workdir, total: int):
    """(adapters, extra) of a worker run's checkpoint at step `total`."""
    config = _worker_config(total)
    setup = run_setup.build(config, str(workdir))
    step, params, extra = run_setup.restore_policy(
        config, setup.model_config, setup.params, str(workdir / "checkpoints"), step=total
    )
    assert step == total
    return jax.tree.map(np.asarray, lora.adapters(params)), extra


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    steps = 4
    worker = [sys.executable, os.path.abspath(__file__)]
    killed = subprocess.run(
        [*worker, str(tmp_path / "a"), str(steps), "2"], capture_output=True, text=True, timeout=900
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    for run in ("a", "b"):
        done = subprocess.run([*worker, str(tmp_path / run), str(steps)], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
    resumed, extra_a = _saved(tmp_path / "a", steps)
    straight, extra_b = _saved(tmp_path / "b", steps)
    assert extra_a["data"] == extra_b["data"] and extra_a["lora_base"] == extra_b["lora_base"]
    for x, y in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight), strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(np.abs(x).max() > 0 for x in jax.tree.leaves(resumed))  # the adapters moved


def test_resume_on_other_base_weights_is_refused(tmp_path):
    import hf_fixtures as fx

    fx.save_tiny_hf_checkpoint(tmp_path / "base", "qwen3", vocab_size=261)
    config = lora_config("stage2:2")
    config.model.hf_checkpoint = str(tmp_path / "base")
    config.checkpoint.every_steps = 1
    config.eval.num_examples = 4
    train.run(config, str(tmp_path / "run"))
    setup = run_setup.build(config, str(tmp_path / "run"))
    _, _, extra = run_setup.restore_policy(config, setup.model_config, setup.params, str(tmp_path / "run/checkpoints"))
    assert extra["lora_base"]["path"] == str(tmp_path / "base") and len(extra["lora_base"]["fingerprint"]) == 64
    fx.save_tiny_hf_checkpoint(tmp_path / "base", "qwen3", seed=1, vocab_size=261)  # same path, other weights
    config.rl.schedule = "stage2:3"
    with pytest.raises(config_lib.ConfigError, match="LoRA adapters trained on other base weights"):
        train.run(config, str(tmp_path / "run"), allow_config_change=True)


# ---------------------------------------------------------------------------------------------
# Export: merged HF checkpoint and PEFT adapters, both against transformers.


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_merged_and_peft_exports_reproduce_the_policy(tmp_path, family):
    import hf_fixtures as fx
    import peft
    import torch

    from score_jax import export

    fx.save_tiny_hf_checkpoint(tmp_path / "base", family, vocab_size=261)
    config = lora_config("stage2:1")
    config.model.hf_checkpoint = str(tmp_path / "base")
    config.model.lora.targets = ("q", "k", "v", "o", "gate", "up", "down") if family == "qwen3" else ("q", "o", "up")
    config.model.scan_layers, config.model.remat_policy = family == "qwen3", "full"
    config.optim.learning_rate = 3e-2  # the adapters must move far enough to show in the logits
    config.eval.num_examples = 4
    workdir = str(tmp_path / "run")
    setup = run_setup.build(config, workdir)
    # Rewards that differ within every group (the byte's parity), so the step has a gradient.
    setup.task = dataclasses.replace(
        setup.task, reward=lambda texts, examples: np.array([float(ord(t[:1] or "a") % 2) for t in texts], np.float32)
    )
    result = train.run(config, workdir, setup=setup)
    export.export(workdir, str(tmp_path / "merged"), fmt="hf")
    export.export(workdir, str(tmp_path / "adapters"), fmt="peft")
    assert sorted(os.listdir(tmp_path / "adapters")) == ["adapter_config.json", "adapter_model.safetensors"]

    params = lora.merge(setup.ref_params, result.state.params)
    tokens, valid, positions = fx.left_padded_batch(261, [12, 9, 5, 1], 12, seed=1)
    ours = np.asarray(transformer.forward(setup.model_config, params, tokens, positions, valid))
    base = fx.load_hf_model(str(tmp_path / "base"))
    theirs_base = fx.hf_logits(base, tokens, valid, positions)
    assert np.abs(ours - theirs_base)[valid].max() > 1e-3  # training moved the policy off the base
    merged = fx.hf_logits(fx.load_hf_model(str(tmp_path / "merged")), tokens, valid, positions)
    assert np.abs(ours - merged)[valid].max() < 1e-4
    with_adapters = peft.PeftModel.from_pretrained(base, str(tmp_path / "adapters"), torch_dtype=torch.float32)
    adapted = fx.hf_logits(with_adapters.eval(), tokens, valid, positions)
    assert np.abs(ours - adapted)[valid].max() < 1e-4


def test_peft_export_of_a_full_fine_tuning_run_is_refused(tmp_path):
    from score_jax import export

    config = tiny_config("stage2:1")
    run_setup.write_run_config(config, str(tmp_path))
    with pytest.raises(config_lib.ConfigError, match="no LoRA adapters to export"):
        export.export(str(tmp_path), str(tmp_path / "out"), fmt="peft")


def main():
    """The SIGKILL test's worker: trains `_worker_config(STEPS)` in WORKDIR, killing itself after KILL_AFTER."""
    import signal

    workdir, total = sys.argv[1], int(sys.argv[2])
    kill_after = int(sys.argv[3]) if len(sys.argv) > 3 else None

    def on_step_end(step, metrics):
        del metrics
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    train.run(_worker_config(total), workdir, on_step_end=on_step_end)


if __name__ == "__main__":
    main()
