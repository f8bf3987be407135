"""A memory and pids cgroup per sandbox, so limits hold for a program and all it forks together.

cgroup v2 (``memory.max``, ``pids.max``) or v1 (``memory.limit_in_bytes``, ``pids.max``), whichever
the host mounts with both controllers writable; each sandbox's group is made under the worker's
own group (a limit of the worker's group still applies on top) and removed after the run.

Worker side: standard library and relative imports only (see _worker).
"""

from __future__ import annotations

import errno
import os
import time

_PREFIX = "score-sandbox-"


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root within the hierarchy, fstype, options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            fstype = fields[dash + 1]
            if fstype in ("cgroup", "cgroup2"):
                options = set(fields[dash + 3].split(",")) | set(fields[5].split(","))
                out.append((fields[4].replace("\\040", " "), fields[3], fstype, options))
    return out


def _own_paths() -> dict[str, str]:
    """Controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                out[controller] = path
    return out


def _under(mount_point: str, root: str, path: str) -> str:
    rel = path[len(root) :] if root != "/" and path.startswith(root) else path
    return os.path.join(mount_point, rel.lstrip("/"))


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class Cgroups:
    """The cgroup (one per hierarchy) that one worker's sandboxes run in, one sandbox at a time.

    Made once per worker and reused: before each run it is emptied (a process left over from the
    last run is killed) and given that run's limits; the kernel's OOM-kill counter, read before
    and after, says whether the run lost a process for memory. Use ``Cgroups.probe()``: it
    returns the instance, or None and why none can be used.
    """

    def __init__(self, version: int, memory_parent: str, pids_parent: str):
        self.version = version
        name = f"{_PREFIX}{os.getpid()}"
        memory, pids = os.path.join(memory_parent, name), os.path.join(pids_parent, name)
        self._dirs = (memory,) if memory == pids else (memory, pids)
        self._limits: dict[str, int] = {}
        for d in self._dirs:
            os.mkdir(d)

    @classmethod
    def probe(cls) -> tuple[Cgroups | None, str]:
        try:
            mounts, own = _mounts(), _own_paths()
        except (OSError, ValueError, IndexError) as e:
            return None, f"no-cgroup(unreadable: {e})"
        reasons = []
        for point, root, fstype, _ in mounts:
            if fstype == "cgroup2" and "" in own:
                parent = _under(point, root, own[""])
                try:
                    with open(os.path.join(parent, "cgroup.controllers")) as f:
                        available = set(f.read().split())
                    if {"memory", "pids"} - available:
                        raise OSError(errno.ENOENT, "no memory and pids controllers")
                    with open(os.path.join(parent, "cgroup.subtree_control")) as f:
                        enabled = set(f.read().split())
                    if {"memory", "pids"} - enabled:  # refused (EBUSY) where the worker's group has processes
                        _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids")
                    return cls._checked(2, parent, parent)
                except OSError as e:
                    reasons.append(f"v2: {e.strerror or e}")
        v1 = {
            c: _under(point, root, own[c])
            for point, root, fstype, options in mounts
            for c in ("memory", "pids")
            if fstype == "cgroup" and c in options and c in own
        }
        if len(v1) == 2:
            try:
                return cls._checked(1, v1["memory"], v1["pids"])
            except OSError as e:
                reasons.append(f"v1: {e.strerror or e}")
        else:
            reasons.append("v1: memory and pids controllers not both mounted")
        return None, f"no-cgroup({'; '.join(reasons)})"

    @classmethod
    def _checked(cls, version: int, memory_parent: str, pids_parent: str) -> tuple[Cgroups, str]:
        for parent in {memory_parent, pids_parent}:
            _sweep(parent)
        groups = cls(version, memory_parent, pids_parent)
        try:
            groups.prepare(64 << 20, 8)  # limits accepted
        except OSError:
            groups.close()
            raise
        return groups, f"cgroup-v{version}"

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes its pid to, to join the group (in every hierarchy)."""
        return [os.path.join(d, "cgroup.procs") for d in self._dirs]

    def prepare(self, memory_bytes: int, pids: int) -> int:
        """Empties the group, sets these limits; returns the OOM-kill count so far."""
        self._empty()
        memory = self._dirs[0]
        if self.version == 2:
            files = {"memory.max": memory_bytes, "memory.swap.max": 0}
        else:  # memsw (memory + swap) must never be below the memory limit: raise it first, lower it last
            files = {"memory.limit_in_bytes": memory_bytes, "memory.memsw.limit_in_bytes": memory_bytes}
            if memory_bytes > self._limits.get("memory.limit_in_bytes", float("inf")):
                files = dict(reversed(files.items()))
        for name, value in files.items():
            if self._limits.get(name) != value and (name in self._limits or os.path.exists(os.path.join(memory, name))):
                _write(os.path.join(memory, name), str(value))
                self._limits[name] = value
        if self._limits.get("pids.max") != pids:
            _write(os.path.join(self._dirs[-1], "pids.max"), str(pids))
            self._limits["pids.max"] = pids
        return self.oom_kills()

    def oom_kills(self) -> int:
        """How many processes of the group the kernel has killed for memory."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            with open(os.path.join(self._dirs[0], name)) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def _empty(self) -> None:
        """Kills what a run left in the group (possible only without a PID namespace) until none is left."""
        stop = time.monotonic() + 1.0
        while time.monotonic() < stop:
            pids = set()
            for path in self.procs_files:
                with open(path) as f:
                    pids.update(int(p) for p in f.read().split())
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.001)

    def close(self) -> None:
        self._empty()
        for d in self._dirs:
            _rmdir(d)


def _rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _sweep(parent: str) -> None:
    """Groups left by workers that died (their pid is gone)."""
    for entry in os.listdir(parent):
        pid = entry[len(_PREFIX) :]
        if entry.startswith(_PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _rmdir(os.path.join(parent, entry))
