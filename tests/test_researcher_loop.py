"""A researcher's loop (issue 18): one-pass config errors, visible progress, a run's own config for
resume and evaluation, export from a run, strict training rewards, the shared dataset cache."""

import dataclasses
import json
import os
import stat
import subprocess
import sys

import hf_fixtures as fx
import numpy as np
import pytest
from test_train import tiny_config

from score_jax import config as config_lib
from score_jax import export, run_setup, tasks, train
from score_jax.model import transformer
from score_jax.rewards import math as math_rewards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(*args, cwd=ROOT):
    # The environment as the test has it (conftest: the 8-device CPU platform and the session's
    # compilation cache, so the child reuses what the test's own run compiled).
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------------------------------------
# Config validation: every problem, one message, no traceback.


def test_validate_reports_every_problem_at_once():
    c = tiny_config()
    c.rl.alpha, c.optim.learning_rate, c.rl.temperature = -1.0, 0.0, 0.0
    with pytest.raises(config_lib.ConfigError) as err:
        config_lib.validate(c, num_devices=8)
    message = str(err.value)
    assert message.startswith("3 problems in the config:")
    for field in ("rl.alpha=-1.0", "optim.learning_rate=0.0", "rl.temperature=0.0"):
        assert field in message


def test_command_line_mistakes_in_one_message_with_did_you_mean(tmp_path):
    result = command(
        "score_jax.evaluate",
        "--config=configs/stage2_math.py",
        "--config.rl.sample_per_prompt=4",
        "--config.rl.alpha=-1",
        "--config.optim.learning_rate=0",
        f"--workdir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "--config.rl.sample_per_prompt: the config has no field rl.sample_per_prompt; did you mean " in result.stderr
    assert "rl.samples_per_prompt?" in result.stderr
    assert "rl.alpha=-1" in result.stderr and "optim.learning_rate=0" in result.stderr


# ---------------------------------------------------------------------------------------------
# Training: what a run shows, its finished state, and its own config on resume.


def constant_reward(setup, value):
    reward = lambda texts, examples: np.full(len(texts), value, np.float32)  # noqa: E731
    setup.task = dataclasses.replace(setup.task, reward=reward)
    return setup


def test_a_run_shows_its_state_and_keeps_its_config(tmp_path, capsys):
    config = tiny_config("stage2:3", reward_format="strict")
    config.samples.every_steps, config.samples.count = 2, 2
    config.log_every_steps = 1
    workdir = str(tmp_path)
    result = train.run(config, workdir, setup=constant_reward(run_setup.build(config, workdir), 0.0))
    out = capsys.readouterr().out
    assert "compiling stage2 (sampling and the train step) for step 1 ..." in out
    assert "compiled and ran step 1 (stage2) in " in out
    assert "[train stage2] step 3/3" in out
    assert "warning: for 3 steps every group" in out
    assert "edit distance" in out  # the end-of-run table has evaluate's columns
    for h in result.history:
        assert h["groups/zero_reward_variance"] == 1.0 and h["learning_rate"] > 0
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1, 1, 2, 2]
    assert all(len(s["attempts"]) == 2 and len(s["rewards"]) == 2 and s["prompt"] for s in samples)

    # The run's config.json is the run's config, tuples and all.
    assert run_setup.load_run_config(workdir).to_json() == config.to_json()

    # Finished: said so, nothing re-evaluated or appended.
    metrics_lines = (tmp_path / "metrics.jsonl").read_text()
    again = train.run(config, workdir)
    assert again.finished_before and again.eval_metrics == result.eval_metrics
    assert "is finished: all 3 steps trained and evaluated" in capsys.readouterr().out
    assert (tmp_path / "metrics.jsonl").read_text() == metrics_lines

    # A resume that changes training is refused, naming the change; allowed, it is printed.
    changed = tiny_config("stage2:4", reward_format="strict")
    changed.samples.every_steps, changed.samples.count = 2, 2
    changed.optim.learning_rate = 2e-5
    with pytest.raises(config_lib.ConfigError, match=r"optim\.learning_rate: 1e-05 -> 2e-05"):
        train.run(changed, workdir)
    changed.log_every_steps = 1
    train.run(changed, workdir, setup=constant_reward(run_setup.build(changed, workdir), 0.0), allow_config_change=True)
    out = capsys.readouterr().out
    assert "config changed on resume (--allow_config_change): optim.learning_rate: 1e-05 -> 2e-05" in out
    assert "resumed from step 3 of 4" in out and "[train stage2] step 4/4" in out


@pytest.mark.parametrize("reward_format", ["strict", "lenient"])
def test_only_strict_rewards_take_truncated_attempts_to_zero(tmp_path, reward_format):
    # Every attempt "right", nearly all cut at max_new_tokens=2.
    config = tiny_config("stage2:1", reward_format=reward_format)
    result = train.run(config, str(tmp_path), setup=constant_reward(run_setup.build(config, str(tmp_path)), 1.0))
    h = result.history[0]
    assert h["truncated/t1"] > 0.5
    assert h["reward/t1"] == (1.0 - h["truncated/t1"] if reward_format == "strict" else 1.0)


def test_evaluate_with_only_the_workdir_uses_the_run_settings(tmp_path):
    config = tiny_config("stage2:1")
    config.eval.num_examples = 4  # not the default 8: evaluate must read it from config.json
    train.run(config, str(tmp_path))
    result = command("score_jax.evaluate", f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"settings: the run's {tmp_path}/config.json" in result.stdout
    records = (tmp_path / "eval_records.jsonl").read_text().splitlines()
    assert len(records) == 4


# ---------------------------------------------------------------------------------------------
# Export.


def test_export_of_a_scan_layers_run_reloads_in_transformers(tmp_path):
    fx.save_tiny_hf_checkpoint(tmp_path / "base", "qwen2", tied=True, vocab_size=261)  # biases, tied
    config = tiny_config("stage2:1")
    config.model.hf_checkpoint = str(tmp_path / "base")
    config.model.scan_layers, config.model.remat_policy = True, "full"
    config.optim.logits_chunk_tokens = 32
    config.optim.learning_rate = 1e-2  # the exported weights must differ from the base's
    workdir = str(tmp_path / "run")
    result = train.run(config, workdir)
    step = export.export(workdir, str(tmp_path / "out"))
    assert step == 1
    tokens, valid, positions = fx.left_padded_batch(261, [12, 9, 5, 1], 12, seed=1)
    setup_config = run_setup.policy_config(config, run_setup.build_tokenizer(config))
    ours = np.asarray(transformer.forward(setup_config, result.state.params, tokens, positions, valid))
    theirs = fx.hf_logits(fx.load_hf_model(str(tmp_path / "out")), tokens, valid, positions)
    base = fx.hf_logits(fx.load_hf_model(str(tmp_path / "base")), tokens, valid, positions)
    assert np.abs(ours - theirs)[valid].max() < 1e-4
    assert np.abs(base - theirs)[valid].max() > 1e-3
    for root, _, files in os.walk(tmp_path / "out"):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o755
        assert all(stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o644 for f in files)


# ---------------------------------------------------------------------------------------------
# Strict training rewards (the truncation rule: test_only_strict_rewards_take_truncated_attempts_to_zero).


def strict_reward(text, gold):
    return math_rewards.grade(tasks.formatted_math_answer(text) or "", gold)


@pytest.mark.parametrize(
    "text,strict",
    [
        ("Final Answer: The final answer is $12$. I hope it is correct.", 1.0),
        ("so the sum is \\boxed{12}.", 1.0),
        ("adding them up gives 12", 0.0),  # right, but not in the prompt's format
        ("and so 3 + 9 = 12", 0.0),  # the grader's last-number fallback
        ("so it is \\boxed{12", 0.0),  # a box the attempt never closed
    ],
)
def test_strict_format_pays_only_formatted_answers(text, strict):
    assert math_rewards.grade(text, "12") == 1.0  # lenient: the evaluation grader
    assert strict_reward(text, "12") == strict


def test_paper_configs_train_on_strict_rewards():
    assert config_lib.paper_config("math").rl.reward_format == "strict"
    assert config_lib.base_config().rl.reward_format == "lenient"


# ---------------------------------------------------------------------------------------------
# Datasets: one shared cache by default.


def test_datasets_go_to_the_shared_cache_by_default(tmp_path):
    c = config_lib.base_config()
    assert run_setup.dataset_dir(c, str(tmp_path)) is None  # score_jax.data.load's shared default
    c.data.data_dir = "workdir"
    assert run_setup.dataset_dir(c, str(tmp_path)) == str(tmp_path / "tfds")
