"""Each baseline's runlocal config (configs/baselines_{math,code}.py:VARIANT,runlocal) end to end:
the real data, prompts and grader, a tiny random model, and the evaluation table written."""

import os
import zlib

import numpy as np
import pytest
from test_runlocal import load_config

from score_jax import baselines, metrics, run_setup


def with_parity_reward(setup):
    """`setup` whose grader also pays for about half the texts (by a checksum's parity): a tiny
    random model is never right, and the SFT baselines need right and wrong attempts to learn from."""
    real = setup.task.reward

    def reward(texts, examples):
        return np.maximum(real(texts, examples), [float(zlib.crc32(t.encode()) % 2) for t in texts]).astype(np.float32)

    setup.task = setup.task.__class__(**{**setup.task.__dict__, "reward": reward})
    return setup


@pytest.mark.parametrize(
    "name, variant, rows, sft_dirs",
    [
        ("baselines_math", "self_refine", ["base model", "Self-Refine"], []),
        ("baselines_math", "star", ["base model", "STaR"], ["round_1", "round_2"]),
        ("baselines_math", "pair_sft", ["base model", "Pair-SFT"], ["sft"]),
        ("baselines_math", "star_stage2", ["base model", "Stage I (RL)", "STaR in Stage II"], ["round_1"]),
        ("baselines_code", "self_refine", ["base model", "Self-Refine"], []),
        ("baselines_code", "pair_sft", ["base model", "Pair-SFT"], ["sft"]),
    ],
)
def test_baseline_runlocal_writes_the_table(name, variant, rows, sft_dirs, tmp_path, capsys):
    config = load_config(name, f"{variant},runlocal")
    setup = run_setup.build(config, str(tmp_path))
    if sft_dirs:
        setup = with_parity_reward(setup)
    result = baselines.run(config, str(tmp_path), setup=setup)
    assert list(result) == rows
    table = metrics.parse_markdown_table((tmp_path / "eval_table.md").read_text())
    assert list(table) == rows
    for row in table.values():
        assert set(row) >= {"acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i"}
        assert abs(row["delta"] - (row["delta_i2c"] - row["delta_c2i"])) < 2e-3
    assert "| method | Acc@t1 | Acc@t2 |" in capsys.readouterr().out
    for sub in sft_dirs:  # traces were kept and fine-tuned on, with checkpoints and metrics
        assert (tmp_path / sub / "traces.npz").exists()
        assert "2" in os.listdir(tmp_path / sub / "checkpoints")
        assert "loss" in (tmp_path / sub / "metrics.jsonl").read_text()
    # A rerun reads everything back (results, Stage I, traces, finished fine-tuning): the same table.
    assert baselines.run(config, str(tmp_path), setup=setup) == result
    if variant == "self_refine":
        problems = int(result["Self-Refine"]["num_problems"])  # MATH: 8; the HumanEval fixture has 2
        assert problems > 0 and (tmp_path / "self_refine_records.jsonl").read_text().count('"attempt3"') == problems


@pytest.mark.parametrize("name", ["baselines_math", "baselines_code"])
def test_multi_turn_rl_baseline_is_an_rl_schedule(name):
    config = load_config(name, "multi_turn")
    assert config.method == "rl" and config.rl.schedule.startswith("multi_turn:")
