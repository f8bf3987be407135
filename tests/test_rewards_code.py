"""The code-reward sandbox: verdicts, limits, isolation, and programs that try to fool it.

Every attack here is bounded by construction (a capped number of forks, short sleeps), so a
regression in the sandbox fails a test instead of taking the machine down.
"""

import os
import pathlib
import random
import signal
import socket
import tempfile
import textwrap
import time

import pytest

from score_jax.rewards import code

MBPP_TESTS = ["assert f(2) == 4", "assert f(3) == 6"]
DOUBLE = "def f(x):\n    return 2 * x\n"


@pytest.fixture(scope="module")
def pool():
    with code.SandboxPool(2) as p:
        yield p


@pytest.fixture(scope="module")
def fallback_pool():
    with code.SandboxPool(1, use_namespaces=False) as p:
        yield p


@pytest.fixture
def outside():
    """Places outside the sandbox's work dir that a program must not change: a world-writable
    directory the test owns, a file in $HOME and one in /tmp. Removed afterwards either way."""
    token = f"{random.getrandbits(48):012x}"
    shared = pathlib.Path(tempfile.mkdtemp(prefix="score-sentinel-"))
    shared.chmod(0o777)
    existing = shared / "existing.txt"
    existing.write_text("original")
    existing.chmod(0o666)
    paths = {
        "dir": shared,
        "existing": existing,
        "new": shared / f"new-{token}",
        "home": pathlib.Path.home() / f".score-canary-{token}",
        "tmp": pathlib.Path(f"/tmp/score-canary-{token}"),
    }
    yield paths
    for key in ("new", "home", "tmp"):
        paths[key].unlink(missing_ok=True)
    existing.unlink(missing_ok=True)
    shared.rmdir()


def vandal(paths) -> str:
    """Program text that tries to write every outside place (errors ignored)."""
    targets = [str(paths[k]) for k in ("new", "home", "tmp")]
    return textwrap.dedent(f"""
        import os as _os
        for _p in {targets!r}:
            try:
                with open(_p, "w") as _f:
                    _f.write("pwned")
            except OSError:
                pass
        try:
            with open({str(paths["existing"])!r}, "w") as _f:
                _f.write("pwned")
        except OSError:
            pass
    """)


def assert_untouched(paths, namespaces=True):
    assert not paths["home"].exists()
    if namespaces:  # without a mount namespace, world-writable places stay writable by nobody
        assert paths["existing"].read_text() == "original"
        assert not paths["new"].exists()
        assert not paths["tmp"].exists()
        assert sorted(p.name for p in paths["dir"].iterdir()) == ["existing.txt"]


def processes_with(token: str) -> list[int]:
    hits = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        hits.append(int(entry))
            except OSError:
                pass
    return hits


def wait_for_no_processes(token: str, seconds: float = 2.0) -> list[int]:
    stop = time.monotonic() + seconds
    while (hits := processes_with(token)) and time.monotonic() < stop:
        time.sleep(0.05)
    return hits


def sleep_token() -> str:
    """An argument for /bin/sleep that identifies this test's processes in /proc."""
    return f"30.{random.randrange(10**8, 10**9)}"


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


def test_expected_values_are_not_in_the_sandbox():
    """The sandbox runs the asserts with the literal expected sides removed."""
    tests = code.prepare_tests(
        [
            "assert f(2) == 4444",
            "assert abs(f(3) - 3.25) < 1e-6",
            "assert math.isclose(f(5), 7.75, rel_tol=0.5)",
            "assert sorted(f(6)) == [8, 9]",
            "assert all(map(lambda v: f(v) == 1, [1]))",
        ],
        "",
    )

    def constants(c):
        out = set()
        for const in c.co_consts:
            out |= constants(const) if hasattr(const, "co_consts") else {repr(const)}
        return out

    seen = set().union(*(constants(c) for c in tests.stripped))
    assert not seen & {"4444", "3.25", "1e-06", "7.75", "0.5", "8", "9"}
    assert {"2", "3", "5", "6"} <= seen
    assert "f" in tests.names and "math" in tests.names


def test_stripping_keeps_program_calls_in_order():
    stripped = code.strip_expected("assert g(f(1)) == f(2) or len(f(3)) > 0, f(4)\nassert all(f(v) for v in [5])")
    assert stripped == "(g(f(1)), f(2), f(3))\n(all((f(v) for v in [5])),)"


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


def test_output_flood_is_bounded(pool):
    flood = "import sys\ndef f(x):\n    for _ in range(10 ** 6):\n        sys.stdout.write('x' * 4096)\n"
    (result,) = pool.run([code.CodeJob.mbpp(flood, MBPP_TESTS, timeout_s=10)])
    assert result.status == "output_limit" and not result.passed
    assert len(result.stdout) <= 4000 and result.duration_s < 5


def test_fork_bomb_is_bounded_and_leaves_no_survivors(pool):
    token = sleep_token()
    bomb = textwrap.dedent(f"""
        import os
        def f(x):
            for _ in range(25):  # at most 25 children, each forking once more: 50 processes
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    try:
                        os.fork()
                    except OSError:
                        pass
                    os.execv("/bin/sleep", ["sleep", "{token}"])
            return 2 * x
    """)
    (result,) = pool.run([code.CodeJob.mbpp(bomb, MBPP_TESTS, timeout_s=5)])
    assert result.duration_s < 5
    assert wait_for_no_processes(token) == []


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "fallback"])
def test_detached_daemon_is_killed(pool, fallback_pool, outside, namespaces):
    token = sleep_token()
    late = outside["new"]
    daemon = textwrap.dedent(f"""
        import os, time
        def f(x):
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(1.0)
                    try:
                        with open({str(late)!r}, "w") as out:
                            out.write("late")
                    except OSError:
                        pass
                    os.execv("/bin/sleep", ["sleep", "{token}"])
                os._exit(0)
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "{token}"])
            return 2 * x
    """)
    (result,) = (pool if namespaces else fallback_pool).run([code.CodeJob.mbpp(daemon, MBPP_TESTS)])
    assert result.passed, result.error  # the program is right; its leftovers just must not outlive it
    assert wait_for_no_processes(token, seconds=0.5) == []
    time.sleep(1.2)
    assert not late.exists()
    assert processes_with(token) == []


# -- isolation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "fallback"])
def test_network_is_blocked(pool, fallback_pool, namespaces):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    program = textwrap.dedent("""
        import socket
        def f(port):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"leak")
                return "connected"
            except OSError:
                return "blocked"
        def g():
            try:
                socket.getaddrinfo("example.com", 80)
                return "resolved"
            except OSError:
                return "blocked"
    """)
    blocked, cheat = (pool if namespaces else fallback_pool).run(
        [
            code.CodeJob.mbpp(program, [f"assert f({port}) == 'blocked'", "assert g() == 'blocked'"]),
            code.CodeJob.mbpp(program, [f"assert f({port}) == 'connected'"]),
        ]
    )
    listener.settimeout(0.3)
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()
    assert blocked.passed, blocked.error
    assert not cheat.passed
    assert blocked.network == ("net-ns" if namespaces else "seccomp")


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


def test_environment_is_scrubbed(pool, monkeypatch):
    monkeypatch.setenv("SCORE_TEST_SECRET", "hunter2-secret")
    program = textwrap.dedent("""
        import os
        def f():
            env = repr(dict(os.environ))
            try:
                with open("/proc/self/environ", "rb") as fh:
                    env += fh.read().decode(errors="replace")
            except OSError:
                pass
            print(env)
            return env
    """)
    (result,) = pool.run([code.CodeJob.mbpp(program, ["assert 'hunter2-secret' not in f()"])])
    assert result.passed, result.error
    assert "hunter2-secret" not in result.stdout


def test_cannot_signal_or_see_outside_processes(pool):
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(True))
    try:
        program = textwrap.dedent(f"""
            import os, signal
            def f():
                try:
                    os.kill({os.getpid()}, signal.SIGUSR1)  # this test's process, which has a handler
                except OSError:
                    pass
                return os.path.exists("/proc/{os.getpid()}/status")
        """)
        (result,) = pool.run([code.CodeJob.mbpp(program, ["assert f() is False"])])
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert received == []
    if "pid-ns" in result.isolation and "host-proc-visible" not in result.isolation:
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


# -- attacks on the verdict ----------------------------------------------------------------------

ATTACKS = {
    "exit 0 at import": "import sys\nsys.exit(0)\n",
    "os._exit(0) at import": "import os\nos._exit(0)\n",
    "os._exit(0) inside the call": "import os\ndef f(x):\n    os._exit(0)\n",
    "os._exit(0) from a thread after the call": textwrap.dedent("""
        import os, threading, time
        def f(x):
            threading.Thread(target=lambda: (time.sleep(0.05), os._exit(0))).start()
            return 0
    """),
    "SystemExit inside the call": "def f(x):\n    raise SystemExit(0)\n",
    "KeyboardInterrupt inside the call": "def f(x):\n    raise KeyboardInterrupt\n",
    "atexit and excepthook force exit 0": textwrap.dedent("""
        import atexit, os, sys
        atexit.register(lambda: os._exit(0))
        sys.excepthook = lambda *a: os._exit(0)
        def f(x):
            return 0
    """),
    "always-equal object": textwrap.dedent("""
        class Anything:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __bool__(self): return True
            def __hash__(self): return 0
        def f(x):
            return Anything()
    """),
    "int subclass with lying __eq__": textwrap.dedent("""
        class Liar(int):
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            __hash__ = int.__hash__
        def f(x):
            return Liar(0)
    """),
    "str and list subclasses with lying __eq__": textwrap.dedent("""
        class S(str):
            def __eq__(self, other): return True
        class L(list):
            def __eq__(self, other): return True
        def f(x):
            return S("no") if x == 2 else L([0])
    """),
    "patch builtins": textwrap.dedent("""
        import builtins
        builtins.AssertionError = type("Harmless", (Exception,), {})
        builtins.abs = lambda x: 0
        builtins.len = lambda x: 0
        builtins.isinstance = lambda *a: True
        def f(x):
            return 0
    """),
    "patch json, unittest, pickle and marshal": textwrap.dedent("""
        import json, unittest, pickle, marshal
        json.dumps = lambda *a, **k: '{"passed": true, "status": "passed"}'
        json.loads = lambda *a, **k: {"passed": True, "status": "passed"}
        unittest.TestCase.assertEqual = lambda *a, **k: None
        pickle.dumps = lambda *a, **k: b""
        marshal.dumps = lambda *a, **k: b""
        def f(x):
            return 0
    """),
    "print fake success markers": textwrap.dedent("""
        import sys
        print("PASSED\\nAll tests passed\\n{\\"passed\\": true, \\"status\\": \\"passed\\"}")
        print("OK", file=sys.stderr)
        def f(x):
            return 0
    """),
    "forge records on every fd": textwrap.dedent("""
        import os
        lines = [b'["U", 0]', b'["c", 0, ["t", 2], ["d"], ["v", 0]]', b'["D"]',
                 b'{"passed": true, "status": "passed"}', b'X0', b'P1']
        for fd in range(1, 64):
            for line in lines:
                try:
                    os.write(fd, line + b"\\n")
                except OSError:
                    pass
        def f(x):
            return 0
    """),
    "walk frames and the garbage collector": textwrap.dedent("""
        import gc, sys
        def f(x):
            frame = sys._getframe(1)
            while frame is not None:
                for space in (frame.f_globals, frame.f_locals):
                    for key, value in list(space.items()):
                        if isinstance(value, bool):
                            space[key] = True
                frame = frame.f_back
            for obj in gc.get_objects():
                if isinstance(obj, dict):
                    for key in ("passed", "ok", "done"):
                        if key in obj:
                            obj[key] = True
                    if "status" in obj:
                        obj["status"] = "passed"
                if isinstance(obj, type) and obj.__name__ in ("_Recorder", "_Trace", "_Replayer"):
                    obj.deliver = lambda self, result: 0
                    obj.canon = lambda self, value, role: ["v", 0]
                if callable(obj) and getattr(obj, "__name__", "") in ("_dump", "_replay", "_judge"):
                    try:
                        obj.__code__ = (lambda *a, **k: None).__code__
                    except (AttributeError, TypeError, ValueError):
                        pass
            return 0
    """),
    "read expected values from the caller": textwrap.dedent("""
        import gc, inspect, linecache, sys, types
        def f(x):
            frame = sys._getframe(1)
            guesses = [c for c in frame.f_code.co_consts if isinstance(c, int) and c != x]
            for obj in gc.get_objects():
                if isinstance(obj, types.CodeType) and obj.co_filename.startswith("<test"):
                    guesses += [c for c in obj.co_consts if isinstance(c, int) and c != x]
            try:
                line = inspect.stack()[1].code_context or [""]
                guesses += [int(t) for t in line[0].replace("==", " ").split() if t.isdigit()]
            except Exception:
                pass
            return guesses[0] if guesses else -1
    """),
    "StopIteration to end the test's map": "def f(x):\n    raise StopIteration\n",
    "redefine builtins the tests use": textwrap.dedent("""
        def sorted(*a, **k):
            return [4]
        def set(*a, **k):
            return 1
        def f(x):
            return [0]
    """),
    "patch math.isclose": textwrap.dedent("""
        import math
        math.isclose = lambda *a, **k: True
        def f(x):
            return -1.0
    """),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attacks_do_not_pass(pool, outside, attack):
    tests = [
        "assert f(2) == 4",
        "assert all(map(lambda v: f(v) == 2 * v, [2, 3]))",
        "assert sorted(f(3) if isinstance(f(3), list) else [f(3)]) == [6]",
        "import math\nassert math.isclose(f(5), 10.0)",
        "import unittest\nunittest.TestCase().assertEqual(f(7), 14)",
    ]
    program = vandal(outside) + ATTACKS[attack]
    results = pool.run([code.CodeJob.mbpp(program, [t]) for t in tests])
    for test, result in zip(tests, results):
        assert not result.passed, (attack, test, result)
    assert_untouched(outside)
    honest = pool.run([code.CodeJob.mbpp(vandal(outside) + DOUBLE, [t]) for t in tests])
    assert all(r.passed for r in honest), [r.error for r in honest]  # the same tests do pass honestly


def test_modules_the_tests_borrow_from_the_program_are_the_real_ones(pool):
    tests = ["assert math.isclose(f(5), 10.0)"]  # MBPP style: relies on the program's `import math`
    honest, fake_module, fake_function = pool.run(
        [
            code.CodeJob.mbpp("import math\n" + DOUBLE, tests),
            code.CodeJob.mbpp(
                "class math:\n    isclose = staticmethod(lambda *a, **k: True)\ndef f(x):\n    return 0\n", tests
            ),
            code.CodeJob.mbpp("import math\nmath.isclose = lambda *a, **k: True\ndef f(x):\n    return 0\n", tests),
        ]
    )
    assert honest.passed, honest.error
    assert not fake_module.passed and not fake_function.passed


def test_fallback_tier_verdicts_and_files(fallback_pool, outside):
    good, wrong, cheat = fallback_pool.run(
        [
            code.CodeJob.mbpp(vandal(outside) + DOUBLE, MBPP_TESTS),
            code.CodeJob.mbpp("def f(x):\n    return x\n", MBPP_TESTS),
            code.CodeJob.mbpp(vandal(outside) + ATTACKS["walk frames and the garbage collector"], MBPP_TESTS),
        ]
    )
    assert good.passed and not wrong.passed and not cheat.passed
    assert "process-tree" in good.isolation
    assert_untouched(outside, namespaces=False)
