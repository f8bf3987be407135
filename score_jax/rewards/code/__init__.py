"""Code rewards: run a candidate program against MBPP- or HumanEval-shaped tests, unfoolably.

    result = check_mbpp("def f(x):\n    return 2 * x", ["assert f(2) == 4"])
    result = check_humaneval(problem, completion)            # problem: prompt, test, entry_point
    results = run_jobs([CodeJob.mbpp(p, tests) for p in programs])   # a worker pool, results in order
    program = extract_program(reply)                         # the code block of a model's reply

RL optimises exactly what the reward says, so the verdict must not depend on anything the
candidate can reach. The usual harness (exec the program, then the asserts, in one process, and
trust the exit code or a printed marker) is fooled by an object whose ``__eq__`` is always true,
by ``sys.exit(0)``, by patching ``builtins`` or ``json``, by walking frames or the garbage
collector to the harness's result, or by printing the success marker.

Mechanism: record in the sandbox, judge outside it
--------------------------------------------------
The tests of every job run twice, in two different processes:

1. Record (phase A, the sandbox). A sandboxed process runs the program, then the tests, but every
   object the tests get from the program is a stand-in (``_Handle``). Calling it, or reading an
   attribute, calls the real object and appends one event to the trace: the arguments and the
   result, both turned into plain data (``None``/bool/int/float/str/bytes/complex/range and
   lists, tuples, dicts, sets of those). Subclasses of builtins are reduced to the builtin value
   they hold (an overridden ``__eq__`` is dropped); anything else becomes an opaque handle that
   supports only calls and attribute reads. The test code receives the *plain copy*, never the
   program's object, so the tests in phase A see what phase B will see. Asserts are rewritten
   (``ast``) to evaluate only the parts that feed the program, so literal expected values (the
   ``4`` in ``assert f(2) == 4``, the ``3.5`` in ``abs(f(x) - 3.5) < 1e-6``) are never in the
   sandbox's memory for the program to read.
2. Judge (phase B, outside). A fork of the trusted worker, which never loads the program, runs the
   *original* tests. The stand-ins now answer from the trace: a call is matched to the next
   recorded call with the same arguments (computed here, by the trusted test) and returns the
   recorded result, rebuilt from plain data; an exception is re-raised as the builtin type of
   that name (never ``StopIteration``, which would silently end a ``map`` in the test). A call
   with no matching record fails the test. Comparisons, ``math.isclose``, loops over random
   inputs: all of it runs in the judge on plain builtins. Both phases give the tests their own
   seeded ``random`` module and the same hash seed, so they draw the same inputs whatever the
   program does with ``random``; HumanEval helpers the prompt defines (``poly``) come from the
   prompt, not from the program, which cannot redefine them for the tests.

So the trace is untrusted data, and the verdict is what the dataset's tests conclude when the
program's answers are the recorded ones. Forging the trace (the program can find the trace pipe
and write to it) buys nothing an honest function could not do: it must still produce the right
values without knowing them. Exiting early leaves calls unrecorded; patching asserts, ``json``,
``unittest`` or builtins changes a process the verdict is not computed in; an always-equal
object is not plain data and becomes a handle that equals only itself; printing markers is
ignored (stdout is only logged). A passing verdict also requires the sandbox to exit 0 within
the time and output limits.

Isolation of phase A (what ``ExecutionResult.isolation`` and ``.network`` report)
------------------------------------------------------------------------------------
Each pool worker probes once which tier the kernel allows, using the real launch path:

- ``user-ns`` tier: ``unshare`` of user, mount, PID, network, IPC and UTS namespaces. The
  candidate is PID 1 of its own PID namespace, so killing it kills every process it started,
  including ``setsid`` daemons (the kernel does it; none can leave the namespace); ``/proc`` is
  remounted so no outside process is visible. The whole filesystem is remounted read-only
  (``mount_setattr`` recursive); the working directory is a fresh, size-capped tmpfs. The
  network namespace has only a down loopback. Capabilities are dropped (bounding set, no new
  privileges). When the worker is root, the candidate runs as ``nobody`` (with only
  ``CAP_DAC_READ_SEARCH``, so it can read an interpreter under ``/root``).
- ``root`` tier (root but no user namespaces): the same namespaces without the user one.
- ``none`` tier: no namespaces. Network via a seccomp filter (``socket`` only for ``AF_UNIX``, no
  ``io_uring``) or, failing that, an audit hook that also refuses ctypes and exec (``network`` =
  ``seccomp`` / ``audit-hook``). Survivors are found by walking the worker's process tree (the
  worker is a child subreaper, so orphaned daemons reparent to it) and killed until none is
  left. Root is dropped to ``nobody``; a non-root worker's candidate runs as the same user and can
  write wherever that user can (``isolation`` says ``same-uid``).

Every tier: a fresh temporary working directory, a new session and process group, rlimits
(CPU, address space, processes, file size, open files, no core), a scrubbed environment
(``PATH``, ``HOME`` and ``TMPDIR`` = the work dir, fixed hash seed), stdout and stderr capped, a
wall-clock timeout.

Residual limits
---------------
- The program can read any file its uid can read (dataset files with answers included).
- Expected values not written as literals in an assert (a table of (input, output) pairs looped
  over, helper results) are present in the sandbox and could be read by a program that goes
  looking; MBPP and HumanEval show some expected values in the prompt anyway.
- A test that inspects an object of a program-defined class beyond calls and attribute reads, a
  generator returned by the program, arguments the program mutates in place, or the fields of a
  namedtuple (it arrives as a tuple), fails (conservatively: a false negative, never a false
  positive). Names in the tests that are builtins always mean the builtins, even if the program
  redefines them.
- The ``none`` tier is best effort: the work dir is on disk (files capped at 16 MiB each, not in
  number), and a same-uid program can write what its user can; see ``isolation`` on each result.
- Needs Linux >= 5.12 for ``mount_setattr`` (else ``root-writable`` in ``isolation``).

Processes and speed
-------------------
``SandboxPool`` runs worker processes (``python -S`` running this package's worker side, stdlib
only; never a fork of the caller, which may be a threaded JAX process). Each worker forks a
zygote before any job arrives; per job the zygote forks a launcher (namespaces, mounts), which
forks the sandbox: no interpreter start-up, and no test data in the sandbox's memory but its own
job, read from its stdin. The worker forks the judge from itself. Worker and zygote are
non-dumpable, and so is the launcher wherever no PID namespace hides it, so a same-uid program
cannot ptrace them. A HumanEval-shaped job costs about 12-15 ms of CPU over all these processes
(about 140 programs/s on 2 idle cores) and 15-50 ms of wall time (``benchmarks/rewards.py``).

Modules
-------
Host side: ``_pool`` (``check_mbpp``, ``check_humaneval``, ``run_jobs``, ``SandboxPool``) and
``_program`` (``extract_program``). Worker side, loaded by path in a ``python -S`` interpreter
without this ``__init__``, so standard library and relative imports only: ``_worker`` (the worker
process), ``_isolation`` (namespaces, mounts, capabilities, seccomp), ``_prepare`` (the tests for
each phase), ``_record`` (phase A), ``_replay`` (phase B), ``_values`` (plain data, both phases)
and ``_jobs`` (jobs and verdicts, shared with the host).
"""

from ._jobs import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, STATUSES, CodeJob, ExecutionResult
from ._pool import SandboxPool, check_humaneval, check_mbpp, run_jobs
from ._prepare import PreparedTests, prepare_tests, strip_expected
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
    "strip_expected",
]
