"""The worker process: a zygote that launches sandboxes, and the judge of their traces.

Loaded outside score_jax: the host starts ``python -S`` and imports this folder as a bare package
``_score_sandbox`` (``_pool._WORKER_BOOT``), whose ``__init__`` never runs. So this module and the
ones it imports (_jobs, _values, _record, _replay, _prepare, _isolation) use the standard library
and relative imports only, and never import the host side (``__init__``, _pool, _program).
"""

from __future__ import annotations

import dataclasses
import json
import marshal
import math
import os
import platform
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence

from ._isolation import (
    CAP_DAC_READ_SEARCH,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    PR_CAP_AMBIENT,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    PR_SET_KEEPCAPS,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    SECCOMP_ARCH,
    SETUP_FAILED,
    Tier,
    c_call,
    close_all_except,
    drop_bounding_set,
    libc,
    mount,
    prctl,
    read_only_root,
    reap_children,
    seccomp_no_inet,
    set_capabilities,
)
from ._jobs import KEPT_OUTPUT, CodeJob, ExecutionResult, read_frame, write_frame
from ._prepare import PreparedTests, prepare_tests
from ._record import record
from ._replay import ParsedTrace, parse_trace, replay

_OUTPUT_LIMIT = 1 << 20  # stdout + stderr bytes before the run is stopped (output_limit)
_TRACE_LIMIT = 32 << 20  # bytes of recorded calls before the run is stopped (output_limit)
_WORKDIR_MB = 64  # size of the tmpfs working directory
_NOBODY = 65534


@dataclasses.dataclass
class _Run:
    exit_code: int | None = None  # the sandbox's exit status, if it exited
    killed_by: int | None = None  # the signal that ended it, if one did
    timed_out: bool = False
    output_exceeded: bool = False
    setup_error: str = ""
    warnings: tuple[str, ...] = ()
    stdout: bytes = b""
    stderr: bytes = b""
    trace: bytes = b""


class SandboxWorker:
    """One worker process: a zygote that launches sandboxes, and the judge of their traces.

    The zygote is forked before any job arrives, so the sandboxes it forks in turn hold no test
    data (no expected values) in memory: only the job sent to each one over its stdin.
    """

    def __init__(self, use_namespaces: bool, site: Sequence[str]):
        self._root = os.geteuid() == 0
        self._site = tuple(site)
        self._cache: dict[tuple, PreparedTests] = {}
        self._zygote_socket, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._zygote = os.fork()
        if self._zygote == 0:
            self._serve_zygote(zygote_end)
        zygote_end.close()
        self.tier = self._probe(use_namespaces)

    def close(self) -> None:
        """Stop the zygote and wait for it (so its CPU time is accounted to us)."""
        self._zygote_socket.close()
        try:
            os.waitpid(self._zygote, 0)
        except ChildProcessError:  # already reaped
            pass

    def _probe(self, use_namespaces: bool) -> Tier:
        """The strongest tier under which a trivial job passes, tried through the real launch path."""
        everything = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET
        tiers = []
        if use_namespaces:
            tiers.append(Tier(everything | CLONE_NEWUSER, False, False))
            if self._root:
                tiers.append(Tier(everything, False, False))
        tiers += [Tier(0, platform.machine() in SECCOMP_ARCH, False), Tier(0, False, True)]
        probe = CodeJob.mbpp("def f(x):\n    return x + 1\n", ["assert f(1) == 2"], timeout_s=10.0)
        failures = []
        for tier in tiers:
            self.tier = tier
            result = self.run(probe)
            if result["passed"]:
                return tier
            failures.append(f"{tier}: {result['status']} {result['error']}")
        raise RuntimeError("no sandbox tier works here: " + "; ".join(failures))

    def run(self, job: CodeJob | dict) -> dict:
        """Phase A in a sandbox, phase B in the judge; the verdict as ExecutionResult fields."""
        job = job if isinstance(job, CodeJob) else CodeJob(**{**job, "tests": tuple(job["tests"])})
        start = time.monotonic()
        total = len(job.tests)

        def result(status: str, passed_units: int = 0, error: str = "", run: _Run | None = None) -> dict:
            run = run or _Run()
            return dataclasses.asdict(
                ExecutionResult(
                    status == "passed",
                    status,
                    passed_units,
                    total,
                    error[:KEPT_OUTPUT],
                    run.stdout[:KEPT_OUTPUT].decode("utf-8", "replace"),
                    run.stderr[:KEPT_OUTPUT].decode("utf-8", "replace"),
                    round(time.monotonic() - start, 4),
                    *self._describe_isolation(run),
                )
            )

        try:
            tests = self._prepared(job)
        except (SyntaxError, ValueError) as e:
            return result("test_error", error=f"the tests themselves do not compile: {e}")
        job_data = (job.program, tests.setup, tests.names, tests.stripped, self._site, self.tier.audit_hook)
        run = self._launch(marshal.dumps(job_data), job.timeout_s, job.memory_mb)
        trace = parse_trace(run.trace)
        if run.setup_error:
            return result("crashed", error=f"sandbox setup failed: {run.setup_error}", run=run)
        if trace.syntax_error is not None:
            return result("syntax_error", error=trace.syntax_error, run=run)
        if run.timed_out:
            return result("timeout", error=f"timed out after {job.timeout_s} s", run=run)
        if run.output_exceeded:
            return result("output_limit", error="output exceeded the limit", run=run)
        verdicts = self._judge(tests, trace, max(2.0, job.timeout_s), job.memory_mb)
        passed_units = sum(ok for ok, _ in verdicts)
        failures = [f"test {i}: {message}" for i, (ok, message) in enumerate(verdicts) if not ok]
        if trace.program_error:
            failures.insert(0, f"the program raised {trace.program_error}")
        if run.killed_by is not None:
            failures.insert(0, f"the program was killed by signal {run.killed_by}")
        elif run.exit_code:
            failures.insert(0, f"the program exited with {run.exit_code}")
        if not failures and passed_units == total:
            return result("passed", passed_units, run=run)
        error = "; ".join(failures)
        if trace.memory_error or b"MemoryError" in run.stderr:
            return result("memory", passed_units, error, run)
        if run.killed_by in (signal.SIGXCPU, signal.SIGKILL):  # the CPU-time rlimit
            return result("timeout", passed_units, f"CPU time limit: {error}", run)
        if run.killed_by is not None or run.exit_code or not trace.done and not trace.program_error:
            return result("crashed", passed_units, error or "the run ended before the tests finished", run)
        return result("failed", passed_units, error, run)

    def _prepared(self, job: CodeJob) -> PreparedTests:
        key = (job.tests, job.setup)
        if key not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = prepare_tests(job.tests, job.setup)
        return self._cache[key]

    def _describe_isolation(self, run: _Run) -> tuple[str, str]:
        tier = self.tier
        network = "net-ns" if tier.namespaces & CLONE_NEWNET else "seccomp" if tier.seccomp else "audit-hook"
        parts = [
            "user-ns" if tier.userns else "uid-nobody" if self._root else "same-uid",
            "pid-ns" if tier.namespaces & CLONE_NEWPID else "process-tree",
            "ro-root+tmpfs-workdir" if tier.namespaces & CLONE_NEWNS else "tmp-workdir",
            *run.warnings,
        ]
        return network, "+".join(parts)

    # -- phase A: the worker's side -------------------------------------------------------------

    def _launch(self, payload: bytes, timeout_s: float, memory_mb: int) -> _Run:
        """Ask the zygote for a sandbox, feed it `payload`, supervise it; clean up everything."""
        workdir = tempfile.mkdtemp(prefix="score-sandbox-")
        if self._root and not self.tier.userns:
            os.chown(workdir, _NOBODY, _NOBODY)
        job_r, job_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        trace_r, trace_w = os.pipe()
        status_r, status_w = os.pipe()  # launcher -> worker; EOF once the launcher exited
        sync_r, sync_w = os.pipe()  # launcher -> worker: "namespaces made, write my id maps"
        go_r, go_w = os.pipe()
        keep_r, keep_w = os.pipe()  # worker -> launcher; closing it means "kill the sandbox now"
        params = {
            "workdir": workdir,
            "timeout_s": timeout_s,
            "memory_mb": memory_mb,
            "namespaces": self.tier.namespaces,
            "seccomp": self.tier.seccomp,
        }
        start = time.monotonic()
        theirs = (job_r, out_w, err_w, trace_w, status_w, sync_w, go_r, keep_r)
        try:
            socket.send_fds(self._zygote_socket, [json.dumps(params).encode()], theirs)
        finally:
            for fd in theirs:
                os.close(fd)
        try:
            if self.tier.userns:
                self._map_ids(sync_r, go_w)
            return self._supervise(job_w, payload, out_r, err_r, trace_r, status_r, keep_w, start + timeout_s)
        finally:
            for fd in (sync_r, go_w, out_r, err_r, trace_r, status_r):
                os.close(fd)
            shutil.rmtree(workdir, ignore_errors=True)

    def _map_ids(self, sync_r: int, go_w: int) -> None:
        """Write the launcher's user-namespace id maps (it has unshared and waits on `go`)."""
        line = os.read(sync_r, 64).decode()
        if not line.strip().isdigit():
            return  # the launcher failed before unsharing; it reports on the status pipe
        launcher = int(line)
        if self._root:  # ns uid 0 = root (so DAC_READ_SEARCH covers root's files), ns uid 1 = nobody
            maps = (f"0 0 1\n1 {_NOBODY} 1\n", f"0 0 1\n1 {_NOBODY} 1\n")
        else:
            with open(f"/proc/{launcher}/setgroups", "w") as f:
                f.write("deny")
            maps = (f"0 {os.geteuid()} 1\n", f"0 {os.getegid()} 1\n")
        for name, text in zip(("uid_map", "gid_map"), maps):
            with open(f"/proc/{launcher}/{name}", "w") as f:
                f.write(text)
        os.write(go_w, b"g")

    def _supervise(self, job_w, payload, out_r, err_r, trace_r, status_r, keep_w, deadline) -> _Run:
        """Feed the job, collect output within the caps, stop at exit, timeout or overflow."""
        run = _Run()
        buffers = {out_r: bytearray(), err_r: bytearray(), trace_r: bytearray(), status_r: bytearray()}
        counts = dict.fromkeys(buffers, 0)
        open_fds = set(buffers)
        os.set_blocking(job_w, False)
        while status_r in open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                run.timed_out = True
                break
            readable, writable, _ = select.select(list(open_fds), [job_w] if payload else [], [], remaining)
            if writable:
                try:
                    payload = payload[os.write(job_w, payload) :]
                except BrokenPipeError:
                    payload = b""
                if not payload:
                    os.close(job_w)
            self._read_available(readable, buffers, counts, open_fds, trace_r)
            if counts[out_r] + counts[err_r] > _OUTPUT_LIMIT or counts[trace_r] > _TRACE_LIMIT:
                run.output_exceeded = True
                break
        if payload:
            os.close(job_w)
        os.close(keep_w)  # the launcher kills the sandbox (if still running), reaps it, and exits
        stop = time.monotonic() + 5.0
        while status_r in open_fds and time.monotonic() < stop:
            readable = select.select([status_r], [], [], stop - time.monotonic())[0]
            self._read_available(readable, buffers, counts, open_fds, trace_r)
        status = bytes(buffers[status_r]).decode(errors="replace").splitlines()
        if status_r in open_fds:  # a stuck launcher; it still holds the pipe, so the pid is still its
            for line in status:
                if line.startswith("L") and line[1:].isdigit():
                    os.kill(int(line[1:]), signal.SIGKILL)
        for line in status:
            if line.startswith("X") and line[1:].isdigit():
                run.exit_code = int(line[1:])
            elif line.startswith("K") and line[1:].isdigit():
                run.killed_by = int(line[1:])
            elif line.startswith("E"):
                run.setup_error = line[1:]
            elif line.startswith("W"):
                run.warnings += (line[1:],)
        if not self.tier.namespaces & CLONE_NEWPID:
            self._kill_descendants()
        open_fds.discard(status_r)
        stop = time.monotonic() + 1.0
        while open_fds and time.monotonic() < stop:  # what the dead sandbox left in the pipes
            readable = select.select(list(open_fds), [], [], stop - time.monotonic())[0]
            self._read_available(readable, buffers, counts, open_fds, trace_r)
        if run.exit_code is None and run.killed_by is None and not run.setup_error:
            run.setup_error = "the launcher died"
        run.stdout, run.stderr, run.trace = bytes(buffers[out_r]), bytes(buffers[err_r]), bytes(buffers[trace_r])
        return run

    @staticmethod
    def _read_available(readable, buffers, counts, open_fds, trace_r) -> None:
        for fd in readable:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                open_fds.discard(fd)
                continue
            counts[fd] += len(chunk)
            if len(buffers[fd]) < (_TRACE_LIMIT if fd == trace_r else KEPT_OUTPUT):
                buffers[fd] += chunk

    def _kill_descendants(self) -> None:
        """No PID namespace: kill every process below this worker (but the zygote) until none is
        left. Orphans reparent to the worker (a child subreaper), so a daemon cannot leave the tree."""
        me = os.getpid()
        for _ in range(1000):
            children: dict[int, list[int]] = {}
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        with open(f"/proc/{entry}/stat", "rb") as f:
                            state, ppid = f.read().rsplit(b")", 1)[1].split()[:2]
                    except (OSError, ValueError):
                        continue
                    if state not in (b"Z", b"X"):  # zombies are dead already
                        children.setdefault(int(ppid), []).append(int(entry))
            doomed, stack = [], list(children.get(me, []))
            while stack:
                pid = stack.pop()
                if pid != self._zygote:
                    doomed.append(pid)
                stack.extend(children.get(pid, []))
            if not doomed:
                return
            for pid in doomed:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            reap_children()  # the orphans that were ours
            time.sleep(0.001)

    # -- phase A: the zygote's side ---------------------------------------------------------------

    def _serve_zygote(self, sock: socket.socket) -> None:
        """The zygote: fork a launcher per request; never returns."""
        worker = os.getppid()
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != worker:
                os._exit(0)
            close_all_except(0, 1, 2, sock.fileno())
            while True:
                reap_children()  # launchers that have exited (waited for, so CPU time adds up)
                message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 16)
                if not message:
                    reap_children(block=True)
                    os._exit(0)
                if os.fork() == 0:
                    sock.close()
                    self._launcher(json.loads(message), fds)
                for fd in fds:
                    os.close(fd)
        finally:
            os._exit(1)

    def _launcher(self, params: dict, fds: list[int]) -> None:
        """New session, namespaces, mounts; forks the sandbox, kills it when told, reports its exit."""
        job_r, out_w, err_w, trace_w, status_w, sync_w, go_r, keep_r = fds
        zygote = os.getppid()
        try:
            os.write(status_w, f"L{os.getpid()}\n".encode())
            os.setsid()
            namespaces = params["namespaces"]
            if namespaces & CLONE_NEWUSER:
                prctl(PR_SET_DUMPABLE, 1)  # the zygote is not, and the worker must write our id maps
            if namespaces:
                c_call(libc.unshare(namespaces), "unshare")
            if namespaces & CLONE_NEWUSER:
                os.write(sync_w, f"{os.getpid()}\n".encode())
                if os.read(go_r, 1) != b"g":
                    raise OSError("the worker did not map our user namespace ids")
            warnings = []
            if namespaces & CLONE_NEWNS:
                mount(None, "/", None, MS_REC | MS_PRIVATE)
                try:
                    read_only_root()
                except OSError as e:
                    warnings.append(f"root-writable({e.strerror})")
                owner = (
                    ("uid=1,gid=1" if namespaces & CLONE_NEWUSER else f"uid={_NOBODY},gid={_NOBODY}")
                    if self._root
                    else "uid=0,gid=0"
                )
                mount(
                    "tmpfs",
                    params["workdir"],
                    "tmpfs",
                    MS_NOSUID | MS_NODEV,
                    f"size={_WORKDIR_MB}m,nr_inodes=4096,mode=0700,{owner}",
                )
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != zygote:
                os._exit(SETUP_FAILED)
            life_r, life_w = os.pipe()
            sandbox = os.fork()
            if sandbox == 0:
                self._sandbox(params, (job_r, out_w, err_w, trace_w), status_w, life_r, warnings)
            try:
                watch = [keep_r, os.pidfd_open(sandbox)]  # readable when the sandbox exits
            except (AttributeError, OSError):  # no pidfd (Linux < 5.3): poll
                watch = [keep_r]
            close_all_except(status_w, life_w, *watch)
            status = None
            while status is None:  # in a PID namespace: once init has exited, all are gone
                ready = select.select(watch, [], [], None if len(watch) > 1 else 0.005)[0]
                if keep_r in ready:  # closed: the worker wants the sandbox stopped
                    os.kill(sandbox, signal.SIGKILL)
                    status = os.waitpid(sandbox, 0)[1]
                else:
                    pid, waited = os.waitpid(sandbox, os.WNOHANG)
                    status = waited if pid else None
            end = f"X{os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"K{os.WTERMSIG(status)}"
            os.write(status_w, f"{end}\n".encode())
            os._exit(0)
        except BaseException as e:
            try:
                os.write(status_w, f"E{e}\n".encode())
            finally:
                os._exit(SETUP_FAILED)

    def _sandbox(self, params: dict, fds: tuple, status_w: int, life_r: int, warnings: list[str]) -> None:
        """The sandbox process (PID 1 of its namespace where there is one): limits, then phase A."""
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if select.select([life_r], [], [], 0)[0]:  # the launcher died before PDEATHSIG was armed
                os._exit(SETUP_FAILED)
            namespaces = params["namespaces"]
            if namespaces & CLONE_NEWPID and namespaces & CLONE_NEWNS:
                try:
                    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
                except OSError as e:  # (a container that masks parts of /proc) hide the host's instead
                    try:
                        mount("tmpfs", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k")
                        warnings.append(f"proc-hidden({e.strerror})")
                    except OSError:
                        warnings.append(f"host-proc-visible({e.strerror})")
            cpu = math.ceil(params["timeout_s"]) + 1
            for limit, value in (
                (resource.RLIMIT_AS, params["memory_mb"] << 20),
                (resource.RLIMIT_CPU, cpu),
                (resource.RLIMIT_FSIZE, 16 << 20),
                (resource.RLIMIT_NOFILE, 256),
                (resource.RLIMIT_CORE, 0),
            ):
                resource.setrlimit(limit, (value, value))
            if namespaces & CLONE_NEWUSER or self._root:  # a uid of its own: counts only the sandbox
                resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))
            if self._root:  # nobody, keeping only the right to read (and search) what root can read
                keep = 1 << CAP_DAC_READ_SEARCH
                drop_bounding_set(keep)
                prctl(PR_SET_KEEPCAPS, 1)
                uid = 1 if namespaces & CLONE_NEWUSER else _NOBODY
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                set_capabilities(keep)
                prctl(PR_CAP_AMBIENT, 2, CAP_DAC_READ_SEARCH)  # PR_CAP_AMBIENT_RAISE: kept across exec
            elif namespaces & CLONE_NEWUSER:  # root of the namespace: drop every capability
                drop_bounding_set(0)
                set_capabilities(0)
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            if params["seccomp"]:
                seccomp_no_inet()
            high = [os.dup(fd) for fd in fds]  # above 3, so the dup2s below cannot clobber a source
            for target, fd in enumerate(high):
                os.dup2(fd, target)
            if warnings:
                os.write(status_w, "".join(f"W{w}\n" for w in warnings).encode())
            close_all_except(0, 1, 2, 3)
            workdir = params["workdir"]
            os.chdir(workdir)
            os.environ.clear()
            os.environ.update(
                {
                    "PATH": "/usr/local/bin:/usr/bin:/bin",
                    "HOME": workdir,
                    "TMPDIR": workdir,
                    "LANG": "C.UTF-8",
                    "PYTHONHASHSEED": "0",
                    "PYTHONIOENCODING": "utf-8",
                    "PYTHONDONTWRITEBYTECODE": "1",
                    "OMP_NUM_THREADS": "1",
                    "OPENBLAS_NUM_THREADS": "1",
                    "MKL_NUM_THREADS": "1",
                }
            )
            sys.argv = [""]
            chunks = []
            while chunk := os.read(0, 1 << 16):
                chunks.append(chunk)
            job = marshal.loads(b"".join(chunks))
        except BaseException as e:
            try:
                os.write(status_w, f"E{e}\n".encode())
            finally:
                os._exit(SETUP_FAILED)
        record(job)

    # -- phase B --------------------------------------------------------------------------------

    def _judge(
        self, tests: PreparedTests, trace: ParsedTrace, timeout_s: float, memory_mb: int
    ) -> list[tuple[bool, str]]:
        """Run the original tests in a fork of this worker, answering the program's calls from
        `trace`; one (passed, message) per unit."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(timeout_s) + 1,) * 2)
                with open("/proc/self/statm") as f:  # what this fork maps already, plus the job's budget
                    mapped = int(f.read().split()[0]) * resource.getpagesize()
                resource.setrlimit(resource.RLIMIT_AS, (mapped + (memory_mb << 20),) * 2)
                data = json.dumps(replay(tests, trace)).encode()
            except BaseException as e:
                data = json.dumps([[False, f"judge error: {e!r}"[:KEPT_OUTPUT]]] * len(tests.full)).encode()
            while data:
                data = data[os.write(write_fd, data) :]
            os._exit(0)
        os.close(write_fd)
        chunks, deadline = [], time.monotonic() + timeout_s
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                if select.select([read_fd], [], [], remaining)[0]:
                    chunk = os.read(read_fd, 1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
            else:
                os.kill(pid, signal.SIGKILL)
        finally:
            os.close(read_fd)
            os.waitpid(pid, 0)
        try:
            verdicts = json.loads(b"".join(chunks))
            return [(bool(ok), str(message)) for ok, message in verdicts]
        except (ValueError, TypeError):
            return [(False, f"the tests did not finish within {timeout_s} s in the judge")] * len(tests.full)


def sandbox_worker_main(options: str) -> None:
    """Entry point of a worker process: jobs in on fd 0, results out on fd 1 (then both moved
    aside, so that nothing else that writes to stdout can corrupt the protocol)."""
    proto_in, proto_out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)
    prctl(PR_SET_DUMPABLE, 0)  # a same-uid sandbox cannot ptrace or read our memory
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of the sandbox reparent to us, not to init
    worker = SandboxWorker(**json.loads(options))
    write_frame(proto_out, {"ready": True})
    while (job := read_frame(proto_in)) is not None:
        write_frame(proto_out, worker.run(job))
    worker.close()
