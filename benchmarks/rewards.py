"""Reward latency and throughput: the MATH grader and the code sandbox.

Usage:
  python benchmarks/rewards.py [--workers 2] [--rounds 3] [--math-pairs 1000]

MATH: `grade(response, gold)` on distinct synthetic MATH-style pairs (the paper's "Final Answer:
The final answer is $x$" and `\\boxed{}` forms; equal and unequal answers: integers, fractions,
radicals, pi, decimals, intervals, tuples, sets, polynomials, percents, text; fresh numbers in
each, so the grader's caches do not flatter it), one call at a time after a warm-up pass (the
first calls import sympy and the LaTeX parser; its slowest call is reported): median, p99 and
max latency per call and answers/s, plus `grade_batch` throughput. Targets: median <= 5 ms,
p99 <= 100 ms.

Sandbox: 50 synthetic HumanEval-shaped problems (a prompt with a signature and docstring, a
completion, a test defining `check(candidate)`), each with a right and a wrong completion, run
on a pool of `--workers` workers (2 = the 2-core target) after a warm-up round. Target: >= 40
programs/s. Besides wall-clock throughput (which other load on a shared machine drags down), the
CPU time per program over every process involved, and the throughput 2 idle cores would give.

The last line printed is one JSON object with every number, and the load average at start.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time

from score_jax.rewards import code

# -- MATH ------------------------------------------------------------------------------------------


def _answer_pairs(rng: random.Random) -> list[tuple[str, str, float]]:
    """One (prediction, gold, expected grade) per template, fresh numbers each call, so the
    grader's parse caches do not make repeated strings look fast."""
    a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(1, 999)
    return [
        (str(a), str(a), 1.0),
        (str(a + 1), str(a), 0.0),
        (f"\\frac{{{2 * a}}}{{{2 * b}}}", f"\\frac{{{a}}}{{{b}}}", 1.0),
        (f"\\dfrac{{{a + 1}}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}", 0.0),
        (f"{b}\\sqrt{{{c + 1}}}", f"\\sqrt{{{b * b * (c + 1)}}}", 1.0),
        (f"({a}, {a + b})", f"({a},{a + b})", 1.0),
        (f"({a + b}, {a})", f"({a},{a + b})", 0.0),
        (f"[{a}, {a + b})", f"[{a},{a + b})", 1.0),
        (f"[{a}, {a + b}]", f"[{a},{a + b})", 0.0),
        (f"x^2 + {2 * b}x + {b * b}", f"(x+{b})^2", 1.0),
        (f"x^2 + {b * b}", f"(x+{b})^2", 0.0),
        (f"\\frac{{{a}\\pi}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}\\pi", 1.0),
        (f"{a}.{c:03d}", f"{a}.{c:03d}", 1.0),
        (f"{a}.{c + 1:03d}", f"{a}.{c:03d}", 0.0),
        (f"{b}^{{3}}", str(b**3), 1.0),
        (f"\\{{{a}, {b}, {c + 100}\\}}", f"\\{{{c + 100}, {a}, {b}\\}}", 1.0),
        (f"{a * 1000:,}", str(a * 1000), 1.0),
        (f"x = {c}", str(c), 1.0),
        (f"{c}\\%", str(c), 1.0),
        ("\\text{Monday}", "Monday", 1.0),
        ("\\text{Tuesday}", "Monday", 0.0),
    ]


def _math_items(count: int, seed: int) -> list[tuple[str, str, float]]:
    rng = random.Random(seed)
    items = []
    while len(items) < count:
        for i, (pred, gold, expected) in enumerate(_answer_pairs(rng)):
            steps = " ".join(f"Step {k}: we simplify the expression and collect terms." for k in range(1 + i % 5))
            if rng.random() < 0.5:
                items.append(
                    (f"{steps}\nFinal Answer: The final answer is ${pred}$. I hope it is correct.", gold, expected)
                )
            else:
                items.append(
                    (f"{steps} Therefore the answer is $\\boxed{{{pred}}}$.", f"$\\boxed{{{gold}}}$", expected)
                )
    return items[:count]


def bench_math(count: int) -> dict:
    try:
        from score_jax.rewards import math as math_grader
    except ImportError as e:  # the grader is another module; keep this benchmark usable without it
        return {"math_error": f"score_jax.rewards.math unavailable: {e}"}
    cold = []
    for response, gold, _ in _math_items(2 * 21, seed=1):  # imports sympy, the LaTeX parser, mpmath
        start = time.perf_counter()
        math_grader.grade(response, gold)
        cold.append(time.perf_counter() - start)
    items = _math_items(count, seed=2)
    times, agree = [], 0
    for response, gold, expected in items:
        start = time.perf_counter()
        score = math_grader.grade(response, gold)
        times.append(time.perf_counter() - start)
        agree += score == expected
    batch_items = _math_items(count, seed=3)
    math_grader.grade_batch([p[0] for p in batch_items[:4]], [p[1] for p in batch_items[:4]])  # starts the pool
    start = time.perf_counter()
    batch = math_grader.grade_batch([p[0] for p in batch_items], [p[1] for p in batch_items])
    batch_s = time.perf_counter() - start
    times.sort()
    return {
        "math_calls": len(times),
        "math_agreement": f"{agree}/{len(times)}",
        "math_median_ms": round(1e3 * statistics.median(times), 3),
        "math_p99_ms": round(1e3 * times[min(len(times) - 1, int(0.99 * len(times)))], 3),
        "math_max_ms": round(1e3 * times[-1], 3),
        "math_cold_pass_max_ms": round(1e3 * max(cold), 1),
        "math_answers_per_s": round(len(times) / sum(times), 1),
        "math_batch_answers_per_s": round(len(batch) / batch_s, 1),
    }


# -- sandbox -----------------------------------------------------------------------------------------

# (name, parameters, docstring, right body, wrong body, argument tuples)
_PROBLEMS = [
    ("add", "a: int, b: int", "Sum of a and b.", "return a + b", "return a - b", [(1, 2), (-3, 3), (10, 5)]),
    ("reverse_string", "s: str", "s reversed.", "return s[::-1]", "return s", [("abc",), ("",), ("racecar",)]),
    (
        "is_prime",
        "n: int",
        "Whether n is prime.",
        "if n < 2:\n        return False\n    return all(n % d for d in range(2, int(n ** 0.5) + 1))",
        "return n % 2 == 1",
        [(1,), (2,), (9,), (13,), (25,)],
    ),
    (
        "fib",
        "n: int",
        "The n-th Fibonacci number, fib(0) = 0.",
        "a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
        "a, b = 1, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
        [(0,), (1,), (10,), (20,)],
    ),
    (
        "factorial",
        "n: int",
        "n!.",
        "out = 1\n    for k in range(2, n + 1):\n        out *= k\n    return out",
        "return n * (n - 1)",
        [(0,), (5,), (10,)],
    ),
    (
        "count_vowels",
        "s: str",
        "Number of vowels in s.",
        "return sum(c in 'aeiouAEIOU' for c in s)",
        "return sum(c in 'aeiou' for c in s)",
        [("hello",), ("AEIOU",), ("xyz",)],
    ),
    (
        "max_element",
        "xs: list",
        "The largest element.",
        "return max(xs)",
        "return xs[-1]",
        [([1, 5, 3],), ([-1, -5],), ([7],)],
    ),
    (
        "sum_squares",
        "xs: list",
        "Sum of squares.",
        "return sum(x * x for x in xs)",
        "return sum(xs) ** 2",
        [([1, 2, 3],), ([],), ([-2, 2],)],
    ),
    (
        "is_palindrome",
        "s: str",
        "Whether s reads the same backwards.",
        "return s == s[::-1]",
        "return s[0] == s[-1] if s else True",
        [("aba",), ("ab",), ("abca",), ("",)],
    ),
    (
        "gcd",
        "a: int, b: int",
        "Greatest common divisor.",
        "while b:\n        a, b = b, a % b\n    return a",
        "return min(a, b)",
        [(12, 18), (7, 3), (100, 75)],
    ),
    (
        "flatten",
        "xss: list",
        "Concatenation of the lists in xss.",
        "return [x for xs in xss for x in xs]",
        "return xss[0] if xss else []",
        [([[1, 2], [3]],), ([],), ([[1], [], [2, 3]],)],
    ),
    (
        "unique_sorted",
        "xs: list",
        "Distinct elements, ascending.",
        "return sorted(set(xs))",
        "return sorted(xs)",
        [([3, 1, 3, 2],), ([],), ([5, 5],)],
    ),
    (
        "running_sum",
        "xs: list",
        "Prefix sums.",
        "out, total = [], 0\n    for x in xs:\n        total += x\n        out.append(total)\n    return out",
        "return xs",
        [([1, 2, 3],), ([],), ([5, -5, 5],)],
    ),
    (
        "char_counts",
        "s: str",
        "Occurrences of each character.",
        "out = {}\n    for c in s:\n        out[c] = out.get(c, 0) + 1\n    return out",
        "return {c: 1 for c in s}",
        [("hello",), ("",), ("aaa",)],
    ),
    (
        "words",
        "s: str",
        "The words of s, split on spaces.",
        "return s.split()",
        "return s.split(' ')",
        [("a b  c",), ("",), ("one",)],
    ),
    (
        "mean",
        "xs: list",
        "The arithmetic mean of a non-empty list.",
        "return sum(xs) / len(xs)",
        "return sum(xs) // len(xs)",
        [([1, 2],), ([3.5],), ([1, 2, 3, 5],)],
    ),
    (
        "pairs_sum_zero",
        "xs: list",
        "Whether two distinct elements sum to zero.",
        "seen = set()\n    for x in xs:\n        if -x in seen:\n            return True\n        seen.add(x)\n"
        "    return False",
        "return 0 in xs",
        [([1, -1],), ([0],), ([1, 2, 3],), ([2, 4, -2],)],
    ),
    (
        "digits_sum",
        "n: int",
        "Sum of the decimal digits of |n|.",
        "return sum(int(d) for d in str(abs(n)))",
        "return sum(int(d) for d in str(n) if d.isdigit()) + 1",
        [(123,), (-45,), (0,)],
    ),
    ("binary", "n: int", "n in binary, without prefix.", "return bin(n)[2:]", "return bin(n)", [(5,), (0,), (255,)]),
    (
        "common",
        "a: list, b: list",
        "Sorted common elements.",
        "return sorted(set(a) & set(b))",
        "return sorted(set(a) | set(b))",
        [([1, 2, 3], [2, 3, 4]), ([], [1]), ([5], [5])],
    ),
    (
        "encode_shift",
        "s: str",
        "Each letter shifted by 5 in the alphabet.",
        "return ''.join(chr((ord(c) - 97 + 5) % 26 + 97) for c in s)",
        "return ''.join(chr(ord(c) + 5) for c in s)",
        [("abc",), ("xyz",), ("",)],
    ),
    (
        "triangle_area",
        "a: float, h: float",
        "Area of a triangle with base a and height h.",
        "return a * h / 2",
        "return a * h",
        [(3, 4), (1.5, 2.0), (0, 9)],
    ),
    (
        "sort_by_length",
        "xs: list",
        "Strings sorted by length, ties in order.",
        "return sorted(xs, key=len)",
        "return sorted(xs)",
        [(["ccc", "a", "bb"],), ([],), (["bb", "aa", "c"],)],
    ),
    (
        "collatz_steps",
        "n: int",
        "Steps of the Collatz map from n to 1.",
        "steps = 0\n    while n != 1:\n        n = n // 2 if n % 2 == 0 else 3 * n + 1\n        steps += 1\n"
        "    return steps",
        "return n // 2",
        [(1,), (6,), (27,)],
    ),
    (
        "transpose",
        "m: list",
        "The transpose of a rectangular matrix.",
        "return [list(r) for r in zip(*m)]",
        "return m",
        [([[1, 2], [3, 4]],), ([[1, 2, 3]],), ([],)],
    ),
]


def _humaneval_problems(count: int) -> list[tuple[dict, str, str]]:
    """(problem, right completion, wrong completion); past the base list, variants that add an
    offset to every result, so each problem is a distinct program and test."""
    out = []
    for n in range(count):
        name, params, doc, right, wrong, args = _PROBLEMS[n % len(_PROBLEMS)]
        offset = n // len(_PROBLEMS)
        entry = f"{name}_{n}"
        if offset:
            doc += f" (variant {offset}: also returns the offset {offset} alongside)"
            right = (
                f"def inner({params}):\n        {right.replace(chr(10), chr(10) + '    ')}\n"
                f"    return (inner({', '.join(p.split(':')[0] for p in params.split(', '))}), {offset})"
            )
            wrong = f"return (None, {offset})"
        prompt = f'from typing import List\n\n\ndef {entry}({params}):\n    """{doc}\n    """\n'
        completion = f"    {right}\n"
        reference: dict = {}
        exec(prompt + completion, reference)  # noqa: S102 - our own reference solutions
        lines = ["METADATA = {'author': 'benchmark'}", "", "", "def check(candidate):"]
        for a in args:
            expected = reference[entry](*a)
            if isinstance(expected, float):
                lines.append(f"    assert abs(candidate(*{a!r}) - {expected!r}) < 1e-6")
            else:
                lines.append(f"    assert candidate(*{a!r}) == {expected!r}")
        lines.append(f"    for _ in range(5):\n        assert candidate(*{args[0]!r}) == candidate(*{args[0]!r})")
        problem = {"task_id": f"Bench/{n}", "prompt": prompt, "test": "\n".join(lines) + "\n", "entry_point": entry}
        out.append((problem, completion, f"    {wrong}\n"))
    return out


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # processes exited and waited for
    return usage.ru_utime + usage.ru_stime


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_sandbox(workers: int, rounds: int) -> dict:
    """Throughput, and CPU per program (load-independent): every process of a pool is waited for
    when it closes, so a pool's whole cost shows in RUSAGE_CHILDREN. A pool that only starts and
    warms up is the baseline subtracted from one that also runs the timed rounds."""
    problems = _humaneval_problems(50)
    jobs = [code.CodeJob.humaneval(p, c) for p, right, wrong in problems for c in (right, wrong)]
    expected = [True, False] * len(problems)
    before = _children_cpu_s()
    with code.SandboxPool(workers) as pool:
        warm = pool.run(jobs)
    baseline = _children_cpu_s() - before
    bad = [p["task_id"] for (p, _, _), r in zip(problems, warm[::2]) if not r.passed]
    if bad or any(r.passed for r in warm[1::2]):
        raise SystemExit(
            f"sandbox verdicts wrong: right completions failing {bad[:5]}, "
            f"wrong passing {sum(r.passed for r in warm[1::2])}"
        )
    before = _children_cpu_s()
    with code.SandboxPool(workers) as pool:
        pool.run(jobs)
        start, own = time.perf_counter(), _self_cpu_s()
        results = [r for _ in range(rounds) for r in pool.run(jobs)]
        elapsed, own = time.perf_counter() - start, _self_cpu_s() - own
    cpu_ms = 1e3 * (_children_cpu_s() - before - baseline + own) / len(results)
    latencies = sorted(r.duration_s for r in results)
    return {
        "sandbox_programs": len(results),
        "sandbox_workers": workers,
        "sandbox_correct_verdicts": f"{sum(r.passed == e for r, e in zip(results, expected * rounds))}/{len(results)}",
        "sandbox_programs_per_s": round(len(results) / elapsed, 1),
        "sandbox_cpu_ms_per_program": round(cpu_ms, 2),
        "sandbox_programs_per_s_on_2_idle_cores": round(2000 / cpu_ms, 1),
        "sandbox_median_latency_ms": round(1e3 * statistics.median(latencies), 1),
        "sandbox_network": results[0].network,
        "sandbox_isolation": results[0].isolation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers (2 = the 2-core target)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the 100 sandbox programs")
    parser.add_argument("--math-pairs", type=int, default=1000, help="distinct (response, gold) pairs timed")
    args = parser.parse_args()
    report = {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)}
    report.update(bench_sandbox(args.workers, args.rounds))  # first: the grader's pool must not be reaped inside
    report.update(bench_math(args.math_pairs))
    report["targets_met"] = {
        "math_median_le_5ms": report.get("math_median_ms", float("inf")) <= 5,
        "math_p99_le_100ms": report.get("math_p99_ms", float("inf")) <= 100,
        "sandbox_ge_40_per_s": report["sandbox_programs_per_s"] >= 40,
        "sandbox_ge_40_per_s_on_2_idle_cores": report["sandbox_programs_per_s_on_2_idle_cores"] >= 40,
    }
    for key, value in report.items():
        print(f"{key}: {value}", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
