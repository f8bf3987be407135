"""Code rewards: run a candidate program against MBPP- or HumanEval-shaped tests, unfoolably.

    result = check_mbpp("def f(x):\n    return 2 * x", ["assert f(2) == 4"])
    result = check_humaneval(problem, completion)            # problem: prompt, test, entry_point
    results = run_jobs([CodeJob.mbpp(p, tests) for p in programs])   # a worker pool, results in order
    program = extract_program(reply)                         # the code block of a model's reply

RL optimises exactly what the reward says, so the verdict must not depend on anything the
candidate can reach. The usual harness (exec the program, then the asserts, in one process, and
trust the exit code or a printed marker) is fooled by an object whose ``__eq__`` is always true,
by ``sys.exit(0)``, by patching ``builtins`` or ``json``, by walking frames or the garbage
collector to the harness's result or to the test's expected values, or by printing the success
marker.

Mechanism: the program in a sandbox, the tests in a judge
----------------------------------------------------------
No test code runs in the program's process. Per job:

1. The sandbox (``_serve``) runs the program, says whether it loaded, then waits for requests.
2. The judge (``_judge``), a fork of the trusted worker that never loads the program, runs the
   *original* tests. Every object they get from the program is a stand-in (``_Handle``): calling
   it, or reading an attribute, sends one request (plain-data arguments, computed here by the
   trusted test) to the sandbox, which runs the real call and answers with plain data
   (``None``/bool/int/float/str/bytes/complex/range and lists, tuples, dicts, sets of those) or
   a handle to an object that has none. Subclasses of builtins are reduced to the builtin value
   they hold (an overridden ``__eq__`` is dropped); a handle supports only calls and attribute
   reads. A recorded exception is raised in the test as the builtin type of that name (never
   ``StopIteration``, which would silently end a ``map`` in the test). Comparisons,
   ``math.isclose``, loops over random inputs: all of it runs in the judge on plain builtins.
   The tests get their own seeded ``random`` module; HumanEval helpers the prompt defines
   (``poly``) come from the prompt, not from the program, which cannot redefine them.

So the sandbox holds the program and the arguments of its calls, nothing else: no frame,
constant or local of a test, and no expected value, is there to be found. Its answers are
untrusted data: the judge, a process with CPU-time and memory limits, reads each with a cap on
its length and rebuilds it with a cap on its nesting; a reply that is too long, not JSON or of
the wrong shape gives the verdict "crashed" (the worker is untouched). Exiting early, patching
asserts, ``json``, ``unittest`` or builtins changes a process the verdict is not computed in; an
always-equal object becomes a handle that equals only itself; printing markers is ignored
(output is only logged: kept up to a cap, the rest read and dropped, never a verdict). A
passing verdict also requires the sandbox to exit 0 within the time limit.

Isolation of the sandbox (what ``ExecutionResult.isolation`` and ``.network`` report)
------------------------------------------------------------------------------------
Each pool worker probes once which tier the kernel allows, using the real launch path:

- ``user-ns`` tier (where unprivileged user namespaces work; chosen on these machines): user,
  mount, PID, network, IPC and UTS namespaces. The program is PID 1 of its own PID namespace,
  so killing it kills every process it started, ``setsid`` daemons included; ``/proc`` is its
  own. Its root is ``minimal-root``: a tmpfs holding ``/usr``, the interpreter and its standard
  library (site-packages hidden) read-only, ``/dev/null``-like devices, and an empty, size-capped
  tmpfs work dir ``/sandbox`` (also ``/tmp``); no host ``/tmp``, ``/root``, ``/home``, ``/etc``,
  work or data directories. The network namespace has only a down loopback. The program runs as
  ``nobody`` (ns uid 1) when the worker is root, else as ns root, with every capability dropped.
- ``root`` tier (root, but no user namespaces): the same without the user namespace.
- ``none`` tier (no namespaces): what it lacks is the minimal root (the program sees the host
  filesystem as ``nobody``, or as the worker's own user when that is not root: ``same-uid``, and
  it writes where that user can; its work dir is a fresh directory on disk), its own ``/proc``
  and PID namespace (survivors are found by walking the worker's process tree, the worker being
  a child subreaper, and killed until none is left), and the network namespace (seccomp cuts
  it). With an interpreter under a private home, ``nobody`` cannot import modules the worker had
  not loaded (``stdlib-unreadable``).

Every tier: a seccomp filter that denies (EPERM) every socket, unix ones and ``socketpair``
included, ``memfd_create``/``memfd_secret``, io_uring, ptrace and other processes' memory, new
namespaces and mounts, bpf, perf and keyrings, and kills a process that uses another ABI (where
the architecture is unknown, an audit hook refuses sockets, ctypes and exec: ``audit-hook``);
no new privileges and no capabilities; a memory and pids cgroup per sandbox (v2 ``memory.max``
and ``pids.max``, or v1 ``memory.limit_in_bytes`` and ``pids.max``, under the worker's own
group: ``cgroup-v1``/``cgroup-v2``; where neither can be used, ``no-cgroup(why)``, and only the
per-process rlimits and a per-uid process limit hold); rlimits (CPU, address space per process,
file size, 32 open files, no core); a new session; a scrubbed environment (``PATH``, ``HOME``
and ``TMPDIR`` = the work dir, fixed hash seed); a wall-clock timeout.

Residual limits
---------------
- A test that passes something with no plain-data form to the program (a lambda, a test-side
  object), inspects an object of a program-defined class beyond calls and attribute reads,
  iterates a generator returned by the program, relies on arguments the program mutates in
  place, or on the fields of a namedtuple (it arrives as a tuple), fails (conservatively: a false
  negative, never a false positive). Names in the tests that are builtins always mean the
  builtins, even if the program redefines them.
- MBPP and HumanEval show some expected values in the prompt; the program can always read those.
- The program can use what ``/usr`` holds (system libraries and tools, not training data).
- Needs Linux >= 5.12 for ``mount_setattr`` (else ``root-writable`` in ``isolation``).

Processes and speed
-------------------
``SandboxPool`` runs worker processes (``python -S`` running this package's worker side, stdlib
only; never a fork of the caller, which may be a threaded JAX process). Each worker forks a
zygote before any job arrives; per job the zygote forks a launcher (cgroup, namespaces), which
forks the sandbox (minimal root, limits, then the program): no interpreter start-up, and no test
data in the sandbox's memory, only its program, read from its stdin. The worker forks the judge
from itself. Worker and zygote are non-dumpable. A HumanEval-shaped job costs about 20 ms of CPU
over all these processes (about 95 programs/s on 2 idle cores) and 30-60 ms of wall time
(``benchmarks/rewards.py``).

Modules
-------
Host side: ``_pool`` (``check_mbpp``, ``check_humaneval``, ``run_jobs``, ``SandboxPool``) and
``_program`` (``extract_program``). Worker side, loaded by path in a ``python -S`` interpreter
without this ``__init__``, so standard library and relative imports only: ``_worker`` (the worker
process), ``_isolation`` (namespaces, the minimal root, capabilities, seccomp), ``_cgroups`` (the
memory and pids cgroup), ``_prepare`` (the tests compiled for the judge), ``_serve`` (the sandbox's
side), ``_judge`` (the judge), ``_values`` (plain data, both sides) and ``_jobs`` (jobs and
verdicts, shared with the host).
"""

from ._jobs import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, STATUSES, CodeJob, ExecutionResult
from ._pool import SandboxPool, check_humaneval, check_mbpp, run_jobs
from ._prepare import PreparedTests, prepare_tests
from ._program import extract_program
from ._values import ProgramError

__all__ = [
    "DEFAULT_MEMORY_MB",
    "DEFAULT_TIMEOUT_S",
    "STATUSES",
    "CodeJob",
    "ExecutionResult",
    "PreparedTests",
    "ProgramError",
    "SandboxPool",
    "check_humaneval",
    "check_mbpp",
    "extract_program",
    "prepare_tests",
    "run_jobs",
]
