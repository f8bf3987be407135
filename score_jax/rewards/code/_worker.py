"""The worker process: a zygote that launches sandboxes, and the judge that drives them.

Loaded outside score_jax: the host starts ``python -S`` and imports this folder as a bare package
``_score_sandbox`` (``_pool._WORKER_BOOT``), whose ``__init__`` never runs. So this module and the
ones it imports (_jobs, _values, _serve, _judge, _prepare, _isolation, _cgroups) use the standard
library and relative imports only, and never import the host side (``__init__``, _pool, _program).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import marshal
import math
import os
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import time

from ._cgroups import Cgroups
from ._isolation import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    SETUP_FAILED,
    SYSCALLS,
    WORKDIR,
    Tier,
    c_call,
    close_all_except,
    drop_capabilities,
    enter_minimal_root,
    install_seccomp,
    libc,
    prctl,
    reap_children,
    stdlib_open_to_others,
)
from ._jobs import KEPT_OUTPUT, CodeJob, ExecutionResult, read_frame, write_frame
from ._judge import judge
from ._prepare import PreparedTests, prepare_tests
from ._serve import serve

_PIDS = 64  # processes (and threads) per sandbox, its launcher included
_FDS = 32  # open files per process of the sandbox
_JUDGE_GRACE_S = 2.0  # the judge's time to finish once the sandbox has ended
_JUDGE_MIN_MB = 256  # the judge's memory budget is the job's, but at least this
_REPORT_LIMIT = 16 << 20  # bytes of the judge's report read
_NOBODY = 65534


@dataclasses.dataclass
class _Run:
    exit_code: int | None = None  # the sandbox's exit status, if it exited
    killed_by: int | None = None  # the signal that ended it, if one did
    timed_out: bool = False
    oom_killed: bool = False  # the kernel killed a process of its cgroup for memory
    setup_error: str = ""
    warnings: tuple[str, ...] = ()
    stdout: bytes = b""
    stderr: bytes = b""
    report: dict | None = None  # the judge's (see _judge.judge); None if it did not finish


class SandboxWorker:
    """One worker process: a zygote that launches sandboxes, and the judges that test them.

    The zygote is forked before any job arrives, so the sandboxes it forks in turn hold no test
    data in memory: only the program and setup sent to each one over its stdin.
    """

    def __init__(self, use_namespaces: bool):
        self._root = os.geteuid() == 0
        self._cache: dict[tuple, PreparedTests] = {}
        self._cgroups, self._cgroup_note = Cgroups.probe()
        self._stdlib_open = not self._root or stdlib_open_to_others()  # for a program run as nobody
        self._mountpoint = tempfile.mkdtemp(prefix="score-sandbox-root-")  # stays empty on the host
        gc.freeze()  # collections in the forks below skip what they inherit, instead of copying its pages
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
        if self._cgroups:
            self._cgroups.close()
        os.rmdir(self._mountpoint)

    def _probe(self, use_namespaces: bool) -> Tier:
        """The strongest tier under which a trivial job passes, tried through the real launch path."""
        everything = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET
        namespaces = []
        if use_namespaces:
            namespaces.append(everything | CLONE_NEWUSER)
            if self._root:
                namespaces.append(everything)
        namespaces.append(0)
        tiers = [Tier(ns, seccomp) for ns in namespaces for seccomp in ((True, False) if SYSCALLS else (False,))]
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
        """The program in a sandbox, the tests in the judge; the verdict as ExecutionResult fields."""
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
        payload = marshal.dumps((job.program, job.setup, not self.tier.seccomp))
        run = self._launch(tests, payload, job.timeout_s, job.memory_mb)
        report = run.report or {}
        if run.setup_error:
            return result("crashed", error=f"sandbox setup failed: {run.setup_error}", run=run)
        if report.get("syntax_error") is not None:
            return result("syntax_error", error=str(report["syntax_error"]), run=run)
        if run.timed_out:
            return result("timeout", error=f"timed out after {job.timeout_s} s", run=run)
        verdicts = report.get("verdicts") or [(False, "the judge did not finish")] * total
        passed_units = sum(bool(ok) for ok, _ in verdicts)
        failures = [f"test {i}: {message}" for i, (ok, message) in enumerate(verdicts) if not ok]
        if report.get("program_error"):
            failures.insert(0, f"the program raised {report['program_error']}")
        if run.killed_by is not None:
            failures.insert(0, f"the program was killed by signal {run.killed_by}")
        elif run.exit_code:
            failures.insert(0, f"the program exited with {run.exit_code}")
        if not failures and passed_units == total:
            return result("passed", passed_units, run=run)
        error = "; ".join(failures)
        if run.oom_killed or report.get("memory_error") or b"MemoryError" in run.stderr:
            return result("memory", passed_units, error, run)
        if run.killed_by in (signal.SIGXCPU, signal.SIGKILL):  # the CPU-time rlimit
            return result("timeout", passed_units, f"CPU time limit: {error}", run)
        if run.killed_by is not None or run.exit_code or report.get("failure") or run.report is None:
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
            "minimal-root" if tier.namespaces & CLONE_NEWNS else "host-root",
            "seccomp" if tier.seccomp else "audit-hook",
            self._cgroup_note,
            *(() if tier.namespaces or self._stdlib_open else ("stdlib-unreadable",)),
            *run.warnings,
        ]
        return network, "+".join(parts)

    # -- the worker's side ----------------------------------------------------------------------

    def _launch(self, tests: PreparedTests, payload: bytes, timeout_s: float, memory_mb: int) -> _Run:
        """Ask the zygote for a sandbox, fork the judge that drives it, supervise both; clean up."""
        if self.tier.namespaces & CLONE_NEWNS:  # where the minimal root is mounted, in the sandbox's namespace only
            hostdir = self._mountpoint
        else:  # the work dir itself
            hostdir = tempfile.mkdtemp(prefix="score-sandbox-")
            if self._root:
                os.chown(hostdir, _NOBODY, _NOBODY)
        warnings: tuple[str, ...] = ()
        oom_kills = None
        if self._cgroups:
            try:
                oom_kills = self._cgroups.prepare(memory_mb << 20, _PIDS)
            except OSError as e:
                warnings = (f"no-cgroup(prepare: {e.strerror})",)
        job_r, job_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        req_r, req_w = os.pipe()  # judge -> sandbox: calls into the program
        rep_r, rep_w = os.pipe()  # sandbox -> judge: their answers
        status_r, status_w = os.pipe()  # launcher -> worker; EOF once the launcher exited
        sync_r, sync_w = os.pipe()  # launcher -> worker: "namespaces made, write my id maps"
        go_r, go_w = os.pipe()
        keep_r, keep_w = os.pipe()  # worker -> launcher; closing it means "kill the sandbox now"
        report_r, report_w = os.pipe()  # judge -> worker
        params = {
            "hostdir": hostdir,
            "timeout_s": timeout_s,
            "memory_mb": memory_mb,
            "namespaces": self.tier.namespaces,
            "seccomp": self.tier.seccomp,
            "cgroup": self._cgroups.procs_files if oom_kills is not None else [],
        }
        start = time.monotonic()
        theirs = (job_r, out_w, err_w, req_r, rep_w, status_w, sync_w, go_r, keep_r)
        judge_pid = None
        try:
            try:
                socket.send_fds(self._zygote_socket, [json.dumps(params).encode()], theirs)
            finally:
                for fd in theirs:
                    os.close(fd)
            if self.tier.userns:
                self._map_ids(sync_r, go_w)
            judge_pid = self._fork_judge(tests, payload, (job_w, req_w, rep_r, report_w), timeout_s, memory_mb)
            for fd in (job_w, req_w, rep_r, report_w):
                os.close(fd)
            run = self._supervise(out_r, err_r, status_r, report_r, keep_w, judge_pid, start + timeout_s)
            run.warnings = warnings + run.warnings
            run.oom_killed = oom_kills is not None and self._cgroups.oom_kills() > oom_kills
            return run
        finally:
            if judge_pid is None:
                for fd in (job_w, req_w, rep_r, report_w, keep_w):
                    os.close(fd)
            for fd in (sync_r, go_w, out_r, err_r, status_r, report_r):
                os.close(fd)
            if hostdir != self._mountpoint:
                shutil.rmtree(hostdir, ignore_errors=True)

    def _map_ids(self, sync_r: int, go_w: int) -> None:
        """Write the launcher's user-namespace id maps (it has unshared and waits on `go`)."""
        line = os.read(sync_r, 64).decode()
        if not line.strip().isdigit():
            return  # the launcher failed before unsharing; it reports on the status pipe
        launcher = int(line)
        if self._root:  # ns uid 0 = root (builds the minimal root), ns uid 1 = nobody (runs the program)
            maps = (f"0 0 1\n1 {_NOBODY} 1\n", f"0 0 1\n1 {_NOBODY} 1\n")
        else:
            with open(f"/proc/{launcher}/setgroups", "w") as f:
                f.write("deny")
            maps = (f"0 {os.geteuid()} 1\n", f"0 {os.getegid()} 1\n")
        for name, text in zip(("uid_map", "gid_map"), maps):
            with open(f"/proc/{launcher}/{name}", "w") as f:
                f.write(text)
        os.write(go_w, b"g")

    def _fork_judge(self, tests: PreparedTests, payload: bytes, fds: tuple, timeout_s: float, memory_mb: int) -> int:
        """The judge: a fork of this worker, limited in CPU time and memory, that writes its report
        (or nothing, if it dies) to the last of `fds`."""
        pid = os.fork()
        if pid:
            return pid
        job_w, req_w, rep_r, report_w = fds
        try:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            close_all_except(0, 1, 2, *fds)
            resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(timeout_s + _JUDGE_GRACE_S) + 1,) * 2)
            with open("/proc/self/statm") as f:  # what this fork maps already, plus the job's budget
                mapped = int(f.read().split()[0]) * resource.getpagesize()
            budget = max(memory_mb, _JUDGE_MIN_MB) << 20
            resource.setrlimit(resource.RLIMIT_AS, (mapped + budget,) * 2)
            data = json.dumps(judge(tests, payload, job_w, req_w, rep_r)).encode()
        except BaseException as e:
            data = json.dumps({"error": f"judge error: {e!r}"[:KEPT_OUTPUT]}).encode()
        try:
            while data:
                data = data[os.write(report_w, data) :]
        finally:
            os._exit(0)

    def _supervise(self, out_r, err_r, status_r, report_r, keep_w, judge_pid, deadline) -> _Run:
        """Collect output (kept up to a cap, the rest read and dropped), the launcher's status and
        the judge's report; at the deadline stop the sandbox, then the judge."""
        run = _Run()
        buffers = {out_r: bytearray(), err_r: bytearray(), status_r: bytearray(), report_r: bytearray()}
        caps = {out_r: KEPT_OUTPUT, err_r: KEPT_OUTPUT, status_r: 1 << 16, report_r: _REPORT_LIMIT}
        open_fds = set(buffers)

        def pump(until: float, watch: tuple[int, ...]) -> None:
            while any(fd in open_fds for fd in watch) and (remaining := until - time.monotonic()) > 0:
                for fd in select.select(list(open_fds), [], [], remaining)[0]:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        open_fds.discard(fd)
                    elif len(buffers[fd]) < caps[fd]:
                        buffers[fd] += chunk[: caps[fd] - len(buffers[fd])]

        pump(deadline, (status_r, report_r))
        run.timed_out = status_r in open_fds or report_r in open_fds  # still running at the deadline
        os.close(keep_w)  # the launcher kills the sandbox (if still running), reaps it, and exits
        pump(time.monotonic() + 5.0, (status_r,))
        status = bytes(buffers[status_r]).decode(errors="replace").splitlines()
        if status_r in open_fds:  # a stuck launcher; it still holds the pipe, so the pid is still its
            for line in status:
                if line.startswith("L") and line[1:].isdigit():
                    os.kill(int(line[1:]), signal.SIGKILL)
        pump(time.monotonic() + _JUDGE_GRACE_S, (report_r,))
        if report_r in open_fds:
            os.kill(judge_pid, signal.SIGKILL)
        os.waitpid(judge_pid, 0)
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
        open_fds -= {status_r, report_r}
        pump(time.monotonic() + 1.0, (out_r, err_r))  # what the dead sandbox left in the pipes
        if run.exit_code is None and run.killed_by is None and not run.setup_error:
            run.setup_error = "the launcher died"
        run.stdout, run.stderr = bytes(buffers[out_r]), bytes(buffers[err_r])
        try:
            report = json.loads(bytes(buffers[report_r]))
            run.report = report if type(report) is dict and "verdicts" in report else None
        except ValueError:
            run.report = None
        return run

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

    # -- the zygote's side ----------------------------------------------------------------------

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
        """Joins the sandbox's cgroup, makes the namespaces, forks the sandbox, kills it when told,
        reports its exit."""
        job_r, out_w, err_w, req_r, rep_w, status_w, sync_w, go_r, keep_r = fds
        zygote = os.getppid()
        try:
            os.write(status_w, f"L{os.getpid()}\n".encode())
            for path in params["cgroup"]:  # before unsharing: the host's cgroupfs needs host root
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, str(os.getpid()).encode())
                finally:
                    os.close(fd)
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
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != zygote:
                os._exit(SETUP_FAILED)
            life_r, life_w = os.pipe()
            sandbox = os.fork()
            if sandbox == 0:
                self._sandbox(params, (job_r, out_w, err_w, req_r, rep_w), status_w, life_r)
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

    def _sandbox(self, params: dict, fds: tuple, status_w: int, life_r: int) -> None:
        """The sandbox process (PID 1 of its namespace where there is one): root, limits, then the program."""
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if select.select([life_r], [], [], 0)[0]:  # the launcher died before PDEATHSIG was armed
                os._exit(SETUP_FAILED)
            namespaces, warnings = params["namespaces"], []
            uid = (1 if namespaces & CLONE_NEWUSER else _NOBODY) if self._root else None
            if namespaces & CLONE_NEWNS:
                owner = f"uid={uid},gid={uid}" if uid is not None else "uid=0,gid=0"
                enter_minimal_root(params["hostdir"], owner, warnings)
                workdir = WORKDIR
            else:
                workdir = params["hostdir"]
            cpu = math.ceil(params["timeout_s"]) + 1
            for limit, value in (
                (resource.RLIMIT_AS, params["memory_mb"] << 20),
                (resource.RLIMIT_CPU, cpu),
                (resource.RLIMIT_FSIZE, 16 << 20),
                (resource.RLIMIT_NOFILE, _FDS),
                (resource.RLIMIT_CORE, 0),
            ):
                resource.setrlimit(limit, (value, value))
            if not params["cgroup"] and (namespaces & CLONE_NEWUSER or self._root):  # counts only the sandbox's uid
                resource.setrlimit(resource.RLIMIT_NPROC, (_PIDS, _PIDS))
            if uid is not None or namespaces & CLONE_NEWUSER:
                drop_capabilities(uid)
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            if params["seccomp"]:
                install_seccomp()
            high = [os.dup(fd) for fd in fds]  # above 4, so the dup2s below cannot clobber a source
            for target, fd in enumerate(high):
                os.dup2(fd, target)
            if warnings:
                os.write(status_w, "".join(f"W{w}\n" for w in warnings).encode())
            close_all_except(0, 1, 2, 3, 4)
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
        serve(job)


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
