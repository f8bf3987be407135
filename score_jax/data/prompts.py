"""User-turn texts for the two attempts: the first-turn prompt and the correction instruction.

An episode is: user turn `preset.first_turn(example)`, the model's attempt 1, user turn
`preset.correction_instruction`, the model's attempt 2. This module gives plain strings; rendering
them with a model family's chat template is score_jax/tokenizer.py's job.

Presets, by (name, task):
  ("paper", "math"), ("paper", "mbpp"), ("paper", "humaneval"): the prompts of Kumar et al. 2024,
    "Training Language Models to Self-Correct via Reinforcement Learning" (arXiv 2409.12917),
    Appendix; MBPP first attempts use the standard 3-shot MBPP prompt of Austin et al. 2021, with
    the tasks 2, 3 and 4 of MBPP's prompt split as the shots; HumanEval is zero-shot.
  ("synthetic", "synthetic"): short prompts for the char-level offline demo.

Self-Refine (the paper's prompting baseline; Madaan et al. 2023, "Self-Refine: Iterative
Refinement with Self-Feedback", arXiv 2303.17651) asks the model for feedback on its answer, then
for a refinement that uses it: `self_refine_instructions(task)` gives the two user turns. Self-Refine's
own prompts are few-shot and task-specific; the zero-shot wording here is ours, following its
two steps (feedback that names the errors without rewriting, then a rewrite from the feedback),
and the refinement asks for the same answer format as the correction instruction so the same
grader reads it.

Where the paper gives the instruction but not the layout around it (how the MATH problem follows
the instruction, the bare HumanEval prompt), the layout here is ours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Example = Mapping[str, Any]

MATH_FIRST_TURN_INSTRUCTION = (
    "You are a math expert. When you respond, respond only with the Solution of the final "
    "Problem, thinking step by step. At the end of the Solution, when you give your final "
    'answer, write it in the form "Final Answer: The final answer is $answer$. I hope it is '
    'correct."'
)
MATH_CORRECTION_INSTRUCTION = (
    "There might be an error in the solution above because of lack of understanding of the "
    "question. Please correct the error, if any, and rewrite the solution. Only output the final "
    "solution! At the end of the Solution, when you give your final answer, write it in the form "
    '"Final Answer: The final answer is $answer$. I hope it is correct."'
)
CODE_CORRECTION_INSTRUCTION = (
    "There might be an error in the code above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. Only output the final correct "
    "Python program!"
)
SYNTHETIC_CORRECTION_INSTRUCTION = "Check and fix:"

# Self-Refine's two user turns (see the module docstring for their source).
MATH_FEEDBACK_INSTRUCTION = (
    "Review the solution above step by step. Point out every error in its understanding of the "
    "problem, its reasoning or its calculations, and say how to fix each one; if it has none, say "
    "so. Do not write a new solution: only give feedback."
)
MATH_REFINE_INSTRUCTION = (
    "Using the feedback above, rewrite the solution to the problem, fixing the errors it found "
    "(if it found none, repeat the solution). Only output the final solution! At the end of the "
    "Solution, when you give your final answer, write it in the form "
    '"Final Answer: The final answer is $answer$. I hope it is correct."'
)
CODE_FEEDBACK_INSTRUCTION = (
    "Review the code above against the task and its tests. Point out every error in its "
    "understanding of the task or in the code, and say how to fix each one; if it has none, say "
    "so. Do not write new code: only give feedback."
)
CODE_REFINE_INSTRUCTION = (
    "Using the feedback above, rewrite the code, fixing the errors it found (if it found none, "
    "repeat the code). Only output the final correct Python program!"
)
SYNTHETIC_FEEDBACK_INSTRUCTION = "Check:"
SYNTHETIC_REFINE_INSTRUCTION = "Fix:"

_SELF_REFINE = {
    "math": (MATH_FEEDBACK_INSTRUCTION, MATH_REFINE_INSTRUCTION),
    "mbpp": (CODE_FEEDBACK_INSTRUCTION, CODE_REFINE_INSTRUCTION),
    "humaneval": (CODE_FEEDBACK_INSTRUCTION, CODE_REFINE_INSTRUCTION),
    "synthetic": (SYNTHETIC_FEEDBACK_INSTRUCTION, SYNTHETIC_REFINE_INSTRUCTION),
}

# MBPP's own few-shot pool is its prompt split (task_ids 1-10); the standard prompt uses these.
MBPP_SHOT_TASK_IDS = (2, 3, 4)


@dataclasses.dataclass(frozen=True)
class PromptPreset:
    """How one task is posed: the first user turn and the fixed correction instruction.

    Attributes:
      name: the preset's name ("paper", "synthetic").
      task: the dataset it poses ("math", "mbpp", "humaneval", "synthetic").
      correction_instruction: the second user turn; it never says whether attempt 1 was right.
      render: (example, shots) -> the first user turn.
      shots: worked examples shown before the problem (MBPP's 3 shots), else empty.
    """

    name: str
    task: str
    correction_instruction: str
    render: Callable[[Example, tuple[Example, ...]], str]
    shots: tuple[Example, ...] = ()

    def first_turn(self, example: Example) -> str:
        """The user turn that asks for attempt 1 on `example`."""
        return self.render(example, self.shots)


def _math_first_turn(example: Example, shots: tuple[Example, ...]) -> str:
    del shots  # Zero-shot.
    return f"{MATH_FIRST_TURN_INSTRUCTION}\n\nProblem:\n{example['problem']}"


def _mbpp_task(example: Example) -> str:
    tests = "\n".join(example["test_list"])
    return (
        "You are an expert Python programmer, and here is your task: "
        f"{example['text']} Your code should pass these tests:\n\n{tests}\n"
    )


def _mbpp_first_turn(example: Example, shots: tuple[Example, ...]) -> str:
    solved = "".join(f"{_mbpp_task(s)}[BEGIN]\n{s['code']}\n[DONE]\n" for s in shots)
    return solved + _mbpp_task(example)


def _humaneval_first_turn(example: Example, shots: tuple[Example, ...]) -> str:
    del shots  # Zero-shot: the signature and docstring, as HumanEval defines the task.
    return example["prompt"]


def _synthetic_first_turn(example: Example, shots: tuple[Example, ...]) -> str:
    del shots
    return example["problem"]


_PRESETS = {
    ("paper", "math"): (_math_first_turn, MATH_CORRECTION_INSTRUCTION),
    ("paper", "mbpp"): (_mbpp_first_turn, CODE_CORRECTION_INSTRUCTION),
    ("paper", "humaneval"): (_humaneval_first_turn, CODE_CORRECTION_INSTRUCTION),
    ("synthetic", "synthetic"): (_synthetic_first_turn, SYNTHETIC_CORRECTION_INSTRUCTION),
}


def get_preset(name: str, task: str, *, shots: Iterable[Example] | None = None) -> PromptPreset:
    """The preset `name` for `task`.

    Args:
      name: "paper" or "synthetic".
      task: "math", "mbpp", "humaneval" or "synthetic".
      shots: for ("paper", "mbpp") only, MBPP's prompt split, e.g.
        `score_jax.data.load("mbpp", "full", "prompt", ...)`; tasks 2, 3, 4 become the shots.

    Raises:
      ValueError: an unknown pair, MBPP without its prompt split, or shots for another task.
    """
    if (name, task) not in _PRESETS:
        raise ValueError(f"No prompt preset {name!r} for task {task!r}; have {sorted(_PRESETS)}.")
    render, correction = _PRESETS[name, task]
    if task != "mbpp":
        if shots is not None:
            raise ValueError(f"Preset {name!r} for {task!r} is zero-shot; it takes no shots.")
        return PromptPreset(name, task, correction, render)
    if shots is None:
        raise ValueError(
            "MBPP's 3-shot prompt needs MBPP's prompt split: get_preset('paper', 'mbpp', "
            "shots=score_jax.data.load('mbpp', 'full', 'prompt', manual_dir=...))."
        )
    by_id = {example["task_id"]: example for example in shots}
    missing = [task_id for task_id in MBPP_SHOT_TASK_IDS if task_id not in by_id]
    if missing:
        raise ValueError(
            f"MBPP shots need task_ids {MBPP_SHOT_TASK_IDS} of the prompt split; missing {missing} "
            f"(given {sorted(by_id)})."
        )
    return PromptPreset(name, task, correction, render, tuple(by_id[i] for i in MBPP_SHOT_TASK_IDS))


def self_refine_instructions(task: str) -> tuple[str, str]:
    """Self-Refine's (feedback, refinement) user turns for `task` ("math", "mbpp", "humaneval",
    "synthetic"): the episode is attempt, feedback, refinement."""
    if task not in _SELF_REFINE:
        raise ValueError(f"No Self-Refine prompts for task {task!r}; have {sorted(_SELF_REFINE)}.")
    return _SELF_REFINE[task]
