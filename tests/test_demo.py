"""The offline demo and the study, shrunk (configs/demo.py:tiny), plus the pair-sum task and habits."""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from score_jax import demo, demo_report, habit_traces, metrics
from score_jax.data import pair_sum as pair_sum_data
from score_jax.rewards import pair_sum
from score_jax.tokenizer import ByteTokenizer, get_chat_template


def demo_config(options: str):
    path = pathlib.Path(__file__).parent.parent / "configs" / "demo.py"
    spec = importlib.util.spec_from_file_location("demo_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(options)


def test_shrunken_demo_writes_the_report(tmp_path):
    rows = demo.run(demo_config("tiny"), str(tmp_path))
    assert set(rows) == {"base model", "naive multi-turn RL", "SCoRe"}
    report = (tmp_path / "report.md").read_text()
    table = metrics.parse_markdown_table(next(b for b in report.split("\n\n") if b.startswith("| method")))
    assert set(table) == {"base model", "naive multi-turn RL", "SCoRe"}
    for row in table.values():
        assert set(row) >= {"acc_t1", "acc_t2", "delta", "delta_i2c", "delta_c2i", "answer_changed"}
        assert abs(row["delta"] - (row["delta_i2c"] - row["delta_c2i"])) < 2e-3
    assert (tmp_path / "acc_over_training.png").stat().st_size > 1000


def test_a_base_model_made_with_another_recipe_is_refused(tmp_path):
    config = demo_config("tiny")
    config.demo.sft_steps = 2
    setup = demo.build(config, str(tmp_path))
    made = demo.train_base_model(config, setup, str(tmp_path), print)
    again = demo.train_base_model(config, setup, str(tmp_path), print)  # the same recipe: read back
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(made), jax.tree.leaves(again)))
    config.demo.complement_rate = 0.3
    config.demo.revise_digits = (2,)
    with pytest.raises(
        ValueError,
        match=r"demo\.revise_digits: \[1, 4, 7\] there, \[2\] now; demo\.complement_rate: 0\.0 there, 0\.3 now",
    ):
        demo.train_base_model(config, setup, str(tmp_path), print)
    assert (tmp_path / "base").is_dir()  # the saved base is left as it was


@pytest.mark.slow
def test_shrunken_study_reports_every_method_in_the_papers_tables(tmp_path):
    config = demo_config("study,tiny")
    config.demo.seeds = "11"
    demo.run(config, str(tmp_path))
    report = (tmp_path / "report.md").read_text()
    sections = report.split("\n## ")
    table2 = next(s for s in sections if s.startswith("Table 2"))
    table4 = next(s for s in sections if s.startswith("Table 4"))
    for section, names in ((table2, demo_report.TABLE_BASELINES), (table4, demo_report.TABLE_ABLATIONS)):
        rows = _interval_cells(section)
        assert set(rows) == set(names)
        for cells in rows.values():
            assert len(cells) == len(demo_report.COLUMNS) and all(c != "" for c in cells[:6])
    for heading in ("The task, measured before any comparison", "The paper's claims", "Example transcripts"):
        assert heading in report
    for plot in ("acc_over_training.png", "collapse.png", "pair_sft_shift.png", "inference_scaling.png"):
        assert (tmp_path / plot).stat().st_size > 1000, plot
    # The base model's profile at the training temperature: its shares agree with each other.
    sampled = json.loads((tmp_path / "properties.json").read_text())["base_sampled"]
    assert sampled["samples"] == config.demo.probe_problems * config.demo.retry_samples
    wrong = 1 - sampled["acc_t1"]
    assert abs(sampled["delta_i2c"] - sampled["fixes_wrong"] * wrong) < 1e-6
    assert abs(sampled["acc_t2"] - sampled["acc_t1"] - sampled["delta_i2c"] + sampled["delta_c2i"]) < 1e-6
    assert "At the training temperature" in report


def _interval_cells(section: str) -> dict[str, list[str]]:
    lines = [ln for ln in section.splitlines() if ln.startswith("|")][2:]
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for c in cells[1:]:
            if c:
                float(c.split(" ± ")[0])  # every cell parses as "mean" or "mean ± half"
        rows[cells[0]] = cells[1:]
    return rows


def test_pair_sum_problems_have_one_answer_and_fixed_splits():
    problems = pair_sum_data.generate_pair_sum(300)
    assert pair_sum_data.generate_pair_sum(100) == problems[:100]  # splits are slices of one draw
    assert len({p["problem"] for p in problems}) == 300
    for p in problems:
        numbers, target = pair_sum.parse_problem(p["problem"])
        pairs = [(a, b) for i, a in enumerate(numbers) for b in numbers[i + 1 :] if a + b == target]
        assert len(pairs) == 1
        assert pair_sum.check_pair_sum_answer(p, p["answer"])


@pytest.mark.parametrize(
    "response, right",
    [
        ("7+15=22", True),
        ("15+7=22", True),  # either order
        (" 7+15=22 ", True),
        ("7+15=21", False),  # wrong arithmetic on the right pair
        ("7+15", False),  # no sum: not the answer format
        ("so 7+15=22", False),  # loose text around the answer
        ("7+15=22 8+14=22", False),  # two answers
        ("11+11=22", False),  # one number twice
        ("1+21=22", False),  # numbers outside the list
        ("7+1", False),  # truncated
        ("", False),
    ],
)
def test_pair_sum_grader_is_strict(response, right):
    problem = {"problem": pair_sum.format_problem((8, 21, 33, 7, 15), 22), "answer": "7+15=22"}
    assert pair_sum.check_pair_sum_answer(problem, response) is right


def test_habit_traces_second_guess_by_target_and_write_true_sums():
    tok, template = ByteTokenizer(), get_chat_template("compact")
    problems = pair_sum_data.generate_pair_sum(400)
    habits = habit_traces.Habits(first_wrong=0.3, revise_digits=(1, 4, 7))
    traces = habit_traces.make_traces(problems, habits, template, tok, "Check and fix:", 5, np.random.default_rng(0))
    assert len(traces) == 400 * 5
    right_first, changed = [], {True: [], False: []}
    for i, (ids, mask) in enumerate(traces):
        ex = problems[i // 5]
        numbers, target = pair_sum.parse_problem(ex["problem"])
        text = tok.decode(ids)
        first, second = (s.split("<end_of_turn>")[0] for s in text.split(ex["problem"])[1].split("Check and fix:"))
        first = first.replace("<end_of_turn>", "").replace("<start_of_turn>", "").strip()
        second = second.replace("<start_of_turn>", "").strip()
        for attempt in (first, second):
            a, b, s = pair_sum.parse_answer(attempt)
            assert a + b == s and a in numbers and b in numbers and a != b  # true sums, list numbers
        right_first.append(pair_sum.check_pair_sum_answer(ex, first))
        changed[habit_traces.revises(target, habits)].append(first != second)
        assert sum(mask) > 0
    assert 0.64 < np.mean(right_first) < 0.76  # first_wrong = 0.3
    assert np.mean(changed[True]) == 1.0 and np.mean(changed[False]) == 0.0


def test_research_revision_fixes_wrong_answers_and_breaks_right_ones():
    problems = pair_sum_data.generate_pair_sum(600)
    habits = habit_traces.Habits(first_wrong=0.3, revise_digits=(1, 4, 7), revision="research")
    rng = np.random.default_rng(0)
    fixed, broken = [], []
    for ex in problems:
        numbers, target = pair_sum.parse_problem(ex["problem"])
        first, second = habit_traces.attempts(ex, habits, rng)
        if not habit_traces.revises(target, habits):
            assert second == first
            continue
        assert pair_sum.answer_key(second) != pair_sum.answer_key(first)  # always another pair
        a, b, s = pair_sum.parse_answer(second)
        assert a + b == s and a in numbers and b in numbers and a != b
        right1, right2 = (pair_sum.check_pair_sum_answer(ex, t) for t in (first, second))
        if right1:
            broken.append(not right2)
        else:
            fixed.append(right2)
    assert np.mean(broken) == 1.0  # another pair than the right one is wrong
    assert 0.55 < np.mean(fixed) < 0.85  # a fresh search succeeds 1 - first_wrong = 0.7 of the time
    with pytest.raises(ValueError, match="revision"):
        habit_traces.Habits(revision="sometimes")


def test_complement_habit_fixes_near_misses_keeps_right_answers_and_is_a_minority():
    problems = pair_sum_data.generate_pair_sum(2000)
    habits = habit_traces.Habits(first_wrong=0.5, revise_digits=(1, 4, 7), complement_rate=0.2)
    rng = np.random.default_rng(0)
    outcomes = {"fixed": 0, "wrong_first": 0, "broken": 0, "right_first": 0}
    for ex in problems:
        numbers, target = pair_sum.parse_problem(ex["problem"])
        first, second = habit_traces.attempts(ex, habits, rng)
        right1, right2 = (pair_sum.check_pair_sum_answer(ex, t) for t in (first, second))
        a, b, s = pair_sum.parse_answer(second)
        assert a + b == s and a in numbers and b in numbers and a != b
        if right1:
            outcomes["right_first"] += 1
            outcomes["broken"] += not right2
        else:
            outcomes["wrong_first"] += 1
            outcomes["fixed"] += right2
    # Only the complement fixes (the "next" swap fixes by chance, rarely), at about its rate...
    fix_rate = outcomes["fixed"] / outcomes["wrong_first"]
    assert 0.17 < fix_rate < 0.30
    # ...and it never breaks: right answers break only by the second-guess rule (30% of targets,
    # of the 80% of problems the complement leaves to the rule).
    assert 0.17 < outcomes["broken"] / outcomes["right_first"] < 0.31
    assert habit_traces.complete((3, 9), (9, 14), 23) == (9, 14)
    assert habit_traces.complete((9, 14), (9, 14), 23) == (9, 14)
    with pytest.raises(ValueError, match="shares no number"):
        habit_traces.complete((3, 5), (9, 14), 23)
    with pytest.raises(ValueError, match="complement_rate"):
        habit_traces.Habits(complement_rate=1.5)
    # Without the habit, a trace draws what it drew before the habit existed (one draw here: is
    # attempt 1 a near miss?), so bases made without it are reproduced exactly.
    without = habit_traces.Habits(first_wrong=0.0, revise_digits=())
    used, fresh = np.random.default_rng(3), np.random.default_rng(3)
    habit_traces.attempts(problems[0], without, used)
    fresh.random()
    assert used.random() == fresh.random()


def test_visible_errors_tells_written_true_sums_from_copied_targets():
    from score_jax import demo_probes

    examples = [{"problem": "3 5 9 12 20 to 17"}] * 4
    records = [
        {"attempt1": "5+12=17", "correct1": True},  # right
        {"attempt1": "3+12=15", "correct1": False},  # wrong, and its sum shows it
        {"attempt1": "3+12=17", "correct1": False},  # wrong, hidden: the target copied after "="
        {"attempt1": "no answer", "correct1": False},  # not an answer: not counted
    ]
    seen = demo_probes.visible_errors(records, examples)
    assert seen["writes_true_sum"] == pytest.approx(2 / 3)
    assert seen["wrong_visibly_wrong"] == pytest.approx(1 / 2)


def test_study_budgets_are_equal_across_methods():
    config = demo_config("study")
    d = config.demo
    n = d.stage1_steps + d.stage2_steps
    episodes = n * config.rl.prompts_per_step * config.rl.samples_per_prompt
    for name, method in demo.METHODS.items():
        c = demo.method_config(config, method, seed=11)
        if method.kind == "rl":
            from score_jax import config as config_lib

            steps = sum(s for _, s in config_lib.stage_schedule(c))
            assert steps == n, name
        elif method.kind == "pair_sft":
            assert c.baseline.num_problems * c.baseline.samples_per_prompt == episodes
            assert c.sft.steps == n
        elif method.kind == "star":
            rl_steps = c.baseline.star_stage1_steps
            sampled = c.baseline.num_problems * c.baseline.samples_per_prompt * c.baseline.star_iterations
            rl_episodes = rl_steps * config.rl.prompts_per_step * config.rl.samples_per_prompt
            assert sampled + rl_episodes == episodes, name
            assert c.sft.steps * c.baseline.star_iterations + rl_steps == n, name


def test_intervals_use_students_t():
    mean, half = demo_report.interval([0.5, 0.6, 0.7, 0.4, 0.55])
    assert mean == pytest.approx(0.55)
    assert half == pytest.approx(2.776 * np.std([0.5, 0.6, 0.7, 0.4, 0.55], ddof=1) / np.sqrt(5))
    assert np.isnan(demo_report.interval([0.5])[1])
