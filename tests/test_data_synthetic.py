"""The synthetic modular-equation task: generator, builder splits, and its grader (problem text, solver,
checker, answer extraction)."""

import pytest

from score_jax import data
from score_jax.data import synthetic
from score_jax.rewards import synthetic as grader


def _moduli(problems):
    return {grader.parse_problem(p["problem"])[0] for p in problems}


def test_deterministic_by_seed():
    assert data.generate_synthetic(50, 3, "medium") == data.generate_synthetic(50, 3, "medium")
    assert data.generate_synthetic(50, 3, "medium") != data.generate_synthetic(50, 4, "medium")
    # A longer draw extends a shorter one: splits are slices of one draw.
    assert data.generate_synthetic(80, 3, "medium")[:50] == data.generate_synthetic(50, 3, "medium")


def test_difficulty_sets_primes_and_terms():
    easy = data.generate_synthetic(300, 0, "easy")
    hard = data.generate_synthetic(300, 0, "hard")
    assert _moduli(easy) == {5, 7}
    assert _moduli(hard) == {11, 13}
    assert all(p["problem"].count("x") == 1 for p in easy)
    assert all(p["problem"].count("x") == 2 for p in hard)
    custom = data.generate_synthetic(20, 0, data.SyntheticDifficulty(primes=(3,), num_terms=(3,)))
    assert _moduli(custom) == {3}


def test_texts_are_short_and_distinct():
    for difficulty in data.DIFFICULTIES:
        problems = data.generate_synthetic(300, 1, difficulty)
        assert max(len(p["problem"]) for p in problems) < 24
        assert len({p["problem"] for p in problems}) == 300
        assert all(p["answer"].isdigit() for p in problems)


@pytest.mark.parametrize("difficulty", list(data.DIFFICULTIES))
def test_gold_is_the_only_solution(difficulty):
    for problem in data.generate_synthetic(100, 2, difficulty):
        p = grader.parse_problem(problem["problem"])[0]
        solutions = [x for x in range(p) if grader.check_synthetic_answer(problem, f"x={x}")]
        assert solutions == [int(problem["answer"])], problem


def test_problem_text_and_solver():
    assert grader.parse_problem("3x+5x+2=1 mod 13") == (13, (3, 5), 2, 1)
    assert grader.format_problem(13, (3, 5), 2, 1) == "3x+5x+2=1 mod 13"
    assert grader.solve(*grader.parse_problem("3x+4=2 mod 7")) == 4  # 3x = -2 = 5 mod 7
    for problem in data.generate_synthetic(50, 5, "medium"):
        params = grader.parse_problem(problem["problem"])
        assert grader.format_problem(*params) == problem["problem"]
        assert str(grader.solve(*params)) == problem["answer"]
    with pytest.raises(ValueError, match="Not a synthetic problem"):
        grader.parse_problem("What is 2+2?")
    with pytest.raises(ValueError):
        grader.solve(7, (3, 4), 0, 1)  # 3x+4x = 0x mod 7: no unique solution


def test_checker_by_substitution():
    problem = {"problem": "3x+4=2 mod 7"}  # 3x = -2 = 5 mod 7 -> x = 4
    assert grader.check_synthetic_answer(problem, "x=4")
    assert grader.check_synthetic_answer(problem, "3*4+4=16=2. x=4")
    assert not grader.check_synthetic_answer(problem, "x=5")
    assert not grader.check_synthetic_answer(problem, "x=11")  # 4 + 7: outside [0, p)
    assert not grader.check_synthetic_answer(problem, "no idea")
    assert grader.check_synthetic_answer({"problem": "2x+3x+1=0 mod 11"}, "x=2")  # 5*2+1 = 11
    with pytest.raises(ValueError, match="Not a synthetic problem"):
        grader.check_synthetic_answer({"problem": "What is 2+2?"}, "4")


def test_extract():
    assert grader.extract_synthetic_answer("x=5") == 5
    assert grader.extract_synthetic_answer("x=5 no, x = 6") == 6
    assert grader.extract_synthetic_answer("12") == 12
    assert grader.extract_synthetic_answer("x=-3") == -3
    assert grader.extract_synthetic_answer("") is None


def test_too_many_or_unknown():
    with pytest.raises(ValueError, match="only 394"):
        data.generate_synthetic(395, 0, "easy")
    with pytest.raises(ValueError, match="Unknown difficulty 'extreme'"):
        data.generate_synthetic(1, 0, "extreme")


def test_builder_splits_disjoint(tmp_path):
    train = data.load("synthetic", "easy", "train", data_dir=tmp_path)
    test = data.load("synthetic", "easy", "test", data_dir=tmp_path)
    config = synthetic.Synthetic.builder_configs["easy"]
    assert (len(train), len(test)) == (config.num_train, config.num_test)
    train_problems = {train[i]["problem"] for i in range(len(train))}
    test_problems = {test[i]["problem"] for i in range(len(test))}
    assert len(train_problems) == len(train) and not train_problems & test_problems
    assert all(grader.check_synthetic_answer(e, "x=" + e["answer"]) for e in test)
    assert test[0] == data.generate_synthetic(config.num_train + 1, config.seed, "easy")[-1]
