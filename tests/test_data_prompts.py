"""Prompt presets: the paper's texts, MBPP's 3-shot prompt from the prompt split, the demo's."""

import pathlib

import pytest

from score_jax import data

MBPP = pathlib.Path(__file__).parent / "fixtures" / "data" / "mbpp"

# Kumar et al. 2024 (Training Language Models to Self-Correct via RL), Appendix: the prompts, verbatim.
PAPER_MATH_FIRST = (
    "You are a math expert. When you respond, respond only with the Solution of the final Problem, "
    "thinking step by step. At the end of the Solution, when you give your final answer, write it "
    'in the form "Final Answer: The final answer is $answer$. I hope it is correct."'
)
PAPER_MATH_CORRECTION = (
    "There might be an error in the solution above because of lack of understanding of the "
    "question. Please correct the error, if any, and rewrite the solution. Only output the final "
    "solution! At the end of the Solution, when you give your final answer, write it in the form "
    '"Final Answer: The final answer is $answer$. I hope it is correct."'
)
PAPER_CODE_CORRECTION = (
    "There might be an error in the code above because of lack of understanding of the question. "
    "Please correct the error, if any, and rewrite the solution. Only output the final correct "
    "Python program!"
)


def test_paper_math():
    preset = data.get_preset("paper", "math")
    turn = preset.first_turn({"problem": "What is $1+1$?"})
    assert turn == PAPER_MATH_FIRST + "\n\nProblem:\nWhat is $1+1$?"
    assert preset.correction_instruction == PAPER_MATH_CORRECTION


def test_paper_mbpp_three_shots_from_prompt_split(tmp_path):
    prompt_split = data.load("mbpp", "full", "prompt", data_dir=tmp_path, manual_dir=MBPP)
    test = data.load("mbpp", "full", "test", data_dir=tmp_path, manual_dir=MBPP)
    preset = data.get_preset("paper", "mbpp", shots=prompt_split)
    assert [s["task_id"] for s in preset.shots] == [2, 3, 4]
    assert preset.correction_instruction == PAPER_CODE_CORRECTION
    turn = preset.first_turn(test[0])
    blocks = turn.split("You are an expert Python programmer, and here is your task: ")
    assert blocks[0] == "" and len(blocks) == 5
    assert blocks[1] == (
        "Write a function to add two numbers. Your code should pass these tests:\n\n"
        "assert add(1, 2) == 3\nassert add(0, 0) == 0\nassert add(-1, 1) == 0\n"
        "[BEGIN]\ndef add(a, b):\r\n    return a + b\n[DONE]\n"
    )
    assert blocks[4] == (
        "Write a function to square a number. Your code should pass these tests:\n\n"
        "assert square(3) == 9\nassert square(0) == 0\nassert square(-2) == 4\n"
    )


def test_mbpp_needs_its_shots():
    with pytest.raises(ValueError, match="needs MBPP's prompt split"):
        data.get_preset("paper", "mbpp")
    with pytest.raises(ValueError, match=r"missing \[3, 4\]"):
        data.get_preset("paper", "mbpp", shots=[{"task_id": 2, "text": "", "code": ""}])


def test_paper_humaneval_zero_shot():
    preset = data.get_preset("paper", "humaneval")
    assert preset.first_turn({"prompt": "def f():\n"}) == "def f():\n"
    assert preset.correction_instruction == PAPER_CODE_CORRECTION
    with pytest.raises(ValueError, match="zero-shot"):
        data.get_preset("paper", "humaneval", shots=[])


def test_synthetic():
    preset = data.get_preset("synthetic", "synthetic")
    assert preset.first_turn({"problem": "3x+4=2 mod 7"}) == "3x+4=2 mod 7"
    assert preset.correction_instruction == "Check and fix:"


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match=r"\('paper', 'math'\)"):
        data.get_preset("paper", "gsm8k")
