"""A benchmark as the trainer sees it: train and eval examples, prompts, and a reward.

``build_task(config)`` picks, from ``config.data``: the data (MATH, MBPP/HumanEval, or the
synthetic task generated in memory), the prompt preset, and the grader (sympy-based MATH grading,
the code sandbox, or substitution for the synthetic equations).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from score_jax import data, distributed
from score_jax.rewards import pair_sum
from score_jax.rewards import synthetic as synthetic_rewards
from score_jax.rewards.code import extract_program

Example = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    train: Sequence[Example]
    eval: Sequence[Example]
    preset: data.PromptPreset  # prompts for training (first turn + correction instruction)
    eval_preset: data.PromptPreset  # prompts for evaluation (HumanEval is zero-shot, MBPP 3-shot)
    # (texts [N], examples [N]) -> rewards [N] in [0, 1]
    reward: Callable[[Sequence[str], Sequence[Example]], np.ndarray]
    # text -> its final answer (None when there is none), to count attempts that change it
    answer: Callable[[str], str | None]
    # problems carved out of the training split (never trained on) to select checkpoints by
    validation: Sequence[Example] = ()
    # the training reward where it differs from `reward` (rl.reward_format="strict"); evaluation uses `reward`
    train_reward: Callable[[Sequence[str], Sequence[Example]], np.ndarray] | None = None

    def training_reward(self, texts: Sequence[str], examples: Sequence[Example]) -> np.ndarray:
        """Rewards [N] of training attempts: `train_reward` where set, else `reward`."""
        return (self.train_reward or self.reward)(texts, examples)


class Subset(Sequence):
    """The examples of `source` at `indices`, in that order (a view: nothing is copied)."""

    def __init__(self, source: Sequence[Example], indices: np.ndarray):
        self._source, self._indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> Example:
        return self._source[int(self._indices[index])]


# Fixed, so every run (whatever its seed) carves the same validation problems.
VALIDATION_SEED = 0


def carve_validation(task: Task, size: int) -> Task:
    """`task` with `size` training problems, drawn at random with `VALIDATION_SEED`, moved to
    ``task.validation``: checkpoints are selected on them and they are never trained on (the eval
    split stays untouched until the final evaluation)."""
    n = len(task.train)
    if not 0 < size < n:
        raise ValueError(f"data.validation_size={size} must be between 1 and the {n - 1} training problems left")
    order = np.random.default_rng(VALIDATION_SEED).permutation(n)
    held, kept = np.sort(order[:size]), np.sort(order[size:])
    return dataclasses.replace(task, train=Subset(task.train, kept), validation=Subset(task.train, held))


def parse_split_spec(spec: str) -> tuple[str, str | None, str]:
    """'math/prm800k:train' -> ('math', 'prm800k', 'train'); 'humaneval:test' -> ('humaneval', None, 'test')."""
    name_config, sep, split = spec.partition(":")
    if not sep or not split:
        raise ValueError(f"data split {spec!r} must look like 'name/config:split' or 'name:split'")
    name, _, config = name_config.partition("/")
    return name, (config or None), split


def build_task(config, data_dir: str | None = None) -> Task:
    """The task of ``config.data`` (loading or building datasets as needed), with
    ``data.validation_size`` training problems carved out for checkpoint selection."""
    cfg = config.data
    builders = {
        "synthetic": lambda: _synthetic_task(cfg, seed=config.seed),
        "math": lambda: _math_task(cfg, data_dir, strict=config.rl.reward_format == "strict"),
        "code": lambda: _code_task(cfg, data_dir),
    }
    if cfg.benchmark not in builders:
        raise ValueError(f"data.benchmark={cfg.benchmark!r} is unknown; use math, code or synthetic")
    if cfg.benchmark != "synthetic":
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()  # its bars fill logs with escape codes; builds are short and one-off
    task = builders[cfg.benchmark]()
    return carve_validation(task, cfg.validation_size) if cfg.validation_size else task


def build_task_on_all_processes(config, data_dir: str | None = None) -> Task:
    """`build_task` on every process of a multi-process job, building datasets once.

    Process 0 builds (or finds) the datasets first and the others load them afterwards, so
    processes never write one shared data directory (a run directory on GCS or NFS) at the same
    time; where each host has its own disk, the others then build their own copies. Collective:
    when process 0 fails, every process raises instead of waiting for it.
    """
    if jax.process_count() == 1:
        return build_task(config, data_dir)
    task, error = None, None
    if jax.process_index() == 0:
        try:
            task = build_task(config, data_dir)
        except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other processes
            error = e
    if distributed.any_process(error is not None):
        if error is not None:
            raise error
        raise data.DataError("process 0 could not build the datasets (its log says why); stopping here too")
    return task if task is not None else build_task(config, data_dir)


def _load(spec: str, cfg, data_dir) -> data.Source:
    name, builder_config, split = parse_split_spec(spec)
    return data.load(name, builder_config, split, data_dir=cfg.data_dir or data_dir, manual_dir=cfg.manual_dir or None)


def _synthetic_task(cfg, seed: int) -> Task:
    num_test = max(cfg.synthetic_size // 4, 1)
    if cfg.synthetic_difficulty in data.PAIR_SUM_DIFFICULTIES:
        return _pair_sum_task(cfg.synthetic_size, num_test, cfg.synthetic_difficulty)
    problems = data.generate_synthetic(
        cfg.synthetic_size + num_test, seed=1000 + seed, difficulty=cfg.synthetic_difficulty
    )
    preset = data.get_preset("synthetic", "synthetic")

    def reward(texts, examples):
        return np.array(
            [float(synthetic_rewards.check_synthetic_answer(ex, t)) for t, ex in zip(texts, examples)], np.float32
        )

    def answer(text):
        value = synthetic_rewards.extract_synthetic_answer(text)
        return None if value is None else str(value)

    return Task(
        "synthetic", problems[: cfg.synthetic_size], problems[cfg.synthetic_size :], preset, preset, reward, answer
    )


def _pair_sum_task(num_train: int, num_test: int, difficulty: str) -> Task:
    # One problem set for every training seed (data.pair_sum.PROBLEM_SEED): the test split is
    # the same held-out set for every run and method.
    problems = data.generate_pair_sum(num_train + num_test, difficulty=difficulty)
    preset = data.get_preset("synthetic", "synthetic")

    def reward(texts, examples):
        return np.array([float(pair_sum.check_pair_sum_answer(ex, t)) for t, ex in zip(texts, examples)], np.float32)

    return Task("pair_sum", problems[:num_train], problems[num_train:], preset, preset, reward, pair_sum.answer_key)


# The paper's answer sentence (its prompts ask for it) and the opening of a box, as the prompts spell them.
_FINAL_ANSWER_SENTENCE_RE = re.compile(
    r"Final Answer:\s*The final answer is\s*\S.{0,1000}?I hope it is correct", re.IGNORECASE | re.DOTALL
)
_BOX_OPEN_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def formatted_math_answer(text: str) -> str | None:
    """The part of `text` that gives its answer in the prompt's format, or None when there is none.

    The format: the paper's "Final Answer: The final answer is $answer$. I hope it is correct.",
    or a closed ``\\boxed{...}``; the later one wins. Strict training rewards grade only this
    part, so an answer the grader would otherwise dig out of loose text (its last number) earns 0.
    """
    found = [(m.start(), m.group(0)) for m in _FINAL_ANSWER_SENTENCE_RE.finditer(text)]
    for m in _BOX_OPEN_RE.finditer(text):
        depth = 0
        for i in range(m.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                found.append((m.start(), text[m.start() : i + 1]))
                break
    return max(found)[1] if found else None


def _math_task(cfg, data_dir, strict: bool = False) -> Task:
    from score_jax.rewards import math as math_rewards

    def reward(texts, examples):
        return np.asarray(math_rewards.grade_batch(list(texts), [ex["answer"] for ex in examples]), np.float32)

    def strict_reward(texts, examples):
        # Unformatted texts are graded as "" (no answer: 0), keeping one batched grader call.
        return reward([formatted_math_answer(t) or "" for t in texts], examples)

    preset = data.get_preset(cfg.prompt_preset, "math")
    return Task(
        "math",
        _load(cfg.train, cfg, data_dir),
        _load(cfg.eval, cfg, data_dir),
        preset,
        preset,
        reward,
        math_rewards.extract_answer,
        train_reward=strict_reward if strict else None,
    )


def _code_task(cfg, data_dir) -> Task:
    from score_jax.rewards import code as code_rewards

    train_name, train_config, _ = parse_split_spec(cfg.train)
    shots = data.load(
        train_name, train_config, "prompt", data_dir=cfg.data_dir or data_dir, manual_dir=cfg.manual_dir or None
    )
    eval_name = parse_split_spec(cfg.eval)[0]

    def reward(texts, examples):
        jobs = []
        for text, ex in zip(texts, examples):
            program = extract_program(text)
            if "entry_point" in ex:  # HumanEval
                jobs.append(("humaneval", ex, program))
            else:
                jobs.append(("mbpp", ex, program))
        results = code_rewards.run_jobs(jobs)
        return np.array([float(r.passed) for r in results], np.float32)

    train_preset = data.get_preset(cfg.prompt_preset, "mbpp", shots=shots)
    eval_preset = data.get_preset(
        cfg.prompt_preset,
        "humaneval" if eval_name == "humaneval" else "mbpp",
        **({} if eval_name == "humaneval" else {"shots": shots}),
    )
    return Task(
        "code",
        _load(cfg.train, cfg, data_dir),
        _load(cfg.eval, cfg, data_dir),
        train_preset,
        eval_preset,
        reward,
        extract_program,
    )
