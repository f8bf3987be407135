"""The code-reward sandbox: verdicts, limits, isolation, and programs that try to fool it.

Every attack here is bounded by construction (a capped number of forks, short sleeps), so a
regression in the sandbox fails a test instead of taking the machine down.
"""

import pathlib
import textwrap

import pytest

from score_jax.rewards import code

MBPP_TESTS = ["assert f(2) == 4", "assert f(3) == 6"]
DOUBLE = "def f(x):\n    return 2 * x\n"


# -- verdicts ------------------------------------------------------------------------------------


def test_correct_program_passes_and_wrong_fails(pool):
    good, wrong, half = pool.run(
        [
            code.CodeJob.mbpp(DOUBLE, MBPP_TESTS),
            code.CodeJob.mbpp("def f(x):\n    return x ** 3\n", MBPP_TESTS),
            code.CodeJob.mbpp("def f(x):\n    return x + 2\n", MBPP_TESTS),
        ]
    )
    assert (good.passed, good.status, good.tests_passed, good.tests_total) == (True, "passed", 2, 2)
    assert (wrong.passed, wrong.status, wrong.tests_passed) == (False, "failed", 0)
    assert (half.status, half.tests_passed) == ("failed", 1)
    assert "assert f(3) == 6" in half.error
    assert good.network in ("net-ns", "seccomp", "audit-hook") and good.isolation


def test_check_functions_and_tuple_jobs():
    assert code.check_mbpp(DOUBLE, MBPP_TESTS).passed
    problem = {
        "prompt": 'def add(a, b):\n    """a + b"""\n',
        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
        "entry_point": "add",
    }
    assert code.check_humaneval(problem, "    return a + b\n").passed
    assert not code.check_humaneval(problem, "    return a - b\n").passed
    example = {"test_list": ["assert g([3, 1]) == [1, 3]"], "test_setup_code": "import heapq"}
    program = "def g(xs):\n    heapq.heapify(xs)\n    return [heapq.heappop(xs) for _ in range(len(xs))]\n"
    (result,) = code.run_jobs([("mbpp", example, program)])
    assert result.passed, result.error  # the setup's imports reach the program, as in MBPP


HUMANEVAL = {
    "prompt": textwrap.dedent('''
        import math


        def poly(xs: list, x: float):
            return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


        def find_root(xs: list) -> float:
            """A root of the linear polynomial xs[0] + xs[1] * x."""
    '''),
    "test": textwrap.dedent("""
        METADATA = {}


        def check(candidate):
            import random
            rng = random.Random(7)
            for _ in range(20):
                xs = [rng.randint(-10, 10), rng.choice([-3, -2, -1, 1, 2, 3])]
                assert math.fabs(poly(xs, candidate(xs))) < 1e-6
            assert abs(candidate([1, -2]) - 0.5) < 1e-9
            for a in range(1, 4):
                assert candidate([-a, 1]) == a
            x = random.randint(1, 100)  # unseeded: both phases must draw the same value
            assert candidate([-x, 1]) == x
    """),
    "entry_point": "find_root",
}


def test_humaneval_shape(pool):
    right = "    return -xs[0] / xs[1]\n"
    wrong = "    return xs[0] / xs[1]\n"
    cheat_helper = "    return 0.0\n\n\ndef poly(xs, x):\n    return 0.0\n"  # redefines the trusted helper
    uses_random = "    import random\n    random.random(); random.shuffle([1, 2, 3])\n    return -xs[0] / xs[1]\n"
    results = pool.run([code.CodeJob.humaneval(HUMANEVAL, c) for c in (right, wrong, cheat_helper, uses_random)])
    assert [r.status for r in results] == ["passed", "failed", "failed", "passed"], [r.error for r in results]


def test_real_humaneval_fixture_canonical_solutions_pass(pool):
    import json

    path = pathlib.Path(__file__).parent / "fixtures/data/humaneval/HumanEval.jsonl"
    problems = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    results = pool.run([code.CodeJob.humaneval(p, p["canonical_solution"]) for p in problems])
    assert all(r.passed for r in results), [r.error for r in results]
    results = pool.run([code.CodeJob.humaneval(p, "    return None\n") for p in problems])
    assert not any(r.passed for r in results)


def test_syntax_error_and_program_errors(pool):
    syntax, raises, name_error = pool.run(
        [
            code.CodeJob.mbpp("def f(x) return 2 * x", MBPP_TESTS),
            code.CodeJob.mbpp("raise ValueError('at import')\ndef f(x):\n    return 2 * x\n", MBPP_TESTS),
            code.CodeJob.mbpp("def g(x):\n    return 2 * x\n", MBPP_TESTS),
        ]
    )
    assert syntax.status == "syntax_error" and "SyntaxError" in syntax.error
    assert raises.status == "failed" and "ValueError: at import" in raises.error
    assert name_error.status == "failed" and "NameError" in name_error.error


def test_crashes(pool):
    segfault, odd_exit, after = pool.run(
        [
            code.CodeJob.mbpp("import ctypes\ndef f(x):\n    return ctypes.string_at(0)\n", MBPP_TESTS),
            code.CodeJob.mbpp("import os\ndef f(x):\n    os._exit(200)\n", MBPP_TESTS),
            code.CodeJob.mbpp(DOUBLE, MBPP_TESTS),
        ]
    )
    assert segfault.status == "crashed" and "signal 11" in segfault.error
    assert odd_exit.status == "crashed" and "exited with 200" in odd_exit.error
    assert after.passed  # the worker survived both


def test_invalid_jobs():
    with pytest.raises(ValueError, match="at least one test"):
        code.CodeJob.mbpp(DOUBLE, [])
    with pytest.raises(ValueError, match="entry_point"):
        code.CodeJob.humaneval({"prompt": "", "test": ""}, "")
    with pytest.raises(ValueError, match="one string"):
        code.CodeJob.mbpp(DOUBLE, "assert f(2) == 4")


def test_tests_that_do_not_compile(pool):
    (result,) = pool.run([code.CodeJob.mbpp(DOUBLE, ["assert f(2) =="])])
    assert result.status == "test_error" and not result.passed


def test_batch_results_keep_job_order(pool):
    expected = [i % 3 != 0 for i in range(24)]
    jobs = [
        code.CodeJob.mbpp(f"def f():\n    return {i if ok else -1}\n", [f"assert f() == {i}"])
        for i, ok in enumerate(expected)
    ]
    assert [r.passed for r in pool.run(jobs)] == expected
    assert [r.passed for r in pool.run(jobs, max_workers=1)] == expected


def test_prepare_tests_finds_the_programs_names():
    tests = code.prepare_tests(["assert f(2) == g(3)", "import math\nassert math.isclose(h(), 1.0)"], "import re")
    assert tests.names == ("f", "g", "h")  # not the tests' own imports, the setup's, or builtins
    with pytest.raises(SyntaxError):
        code.prepare_tests(["assert f(2) =="])


def test_extract_program():
    fenced = "Here:\n```python\ndef f(x):\n    return 2 * x\n```\nShorter:\n```py\ndef f(x):\n    return x + x\n```\n"
    assert code.extract_program(fenced) == "def f(x):\n    return x + x"  # the last block
    assert code.extract_program("[BEGIN]\ndef f(x):\n    return 2 * x\n[DONE]") == "def f(x):\n    return 2 * x"
    assert code.extract_program("[BEGIN] def f(): pass") == "def f(): pass"  # unclosed: up to the end
    assert code.extract_program("\ndef f(x):\n    return x\n\n") == "def f(x):\n    return x"  # no markers: all


# -- limits --------------------------------------------------------------------------------------


def test_timeouts(pool):
    loop, sleep = pool.run(
        [
            code.CodeJob.mbpp("def f(x):\n    while True:\n        pass\n", MBPP_TESTS, timeout_s=1.0),
            code.CodeJob.mbpp("import time\ndef f(x):\n    time.sleep(60)\n", MBPP_TESTS, timeout_s=1.0),
        ]
    )
    for result in (loop, sleep):
        assert result.status == "timeout" and not result.passed
        assert result.duration_s < 5


def test_memory_bomb_is_bounded(pool):
    bomb = "def f(x):\n    block = bytearray(2 * 1024 ** 3)\n    return 2 * x\n"
    (result,) = pool.run([code.CodeJob.mbpp(bomb, MBPP_TESTS, memory_mb=512)])
    assert result.status == "memory" and not result.passed


def test_output_flood_ends_at_the_timeout(pool):
    flood = "import sys\ndef f(x):\n    while True:\n        sys.stdout.write('x' * 4096)\n"
    (result,) = pool.run([code.CodeJob.mbpp(flood, MBPP_TESTS, timeout_s=2)])
    assert result.status == "timeout" and result.duration_s < 5
    assert len(result.stdout) <= 4000  # the rest is read and dropped


# -- the sandbox's surroundings --------------------------------------------------------------------


def test_worker_loads_nothing_but_the_standard_library(pool):
    """The sandbox is a fork of a `python -S` worker that imported this package's worker side only."""
    program = textwrap.dedent("""
        import sys
        def f():
            return sorted({m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names))
    """)
    loaded = "assert f() == ['__candidate__', '__main__', '_score_sandbox']"  # the program, the worker's package
    (result,) = pool.run([code.CodeJob.mbpp(program, [loaded])])
    assert result.passed, result.error


def test_work_dir_is_fresh_and_writable(pool):
    program = textwrap.dedent("""
        import os, tempfile
        def f():
            fresh = os.listdir(".") == []
            with open("scratch.txt", "w") as fh:
                fh.write("ok")
            with tempfile.NamedTemporaryFile() as tmp:
                tmp.write(b"ok")
            return fresh and open("scratch.txt").read() == "ok"
    """)
    first, second = pool.run([code.CodeJob.mbpp(program, ["assert f() is True"])] * 2)
    assert first.passed and second.passed, (first.error, second.error)
