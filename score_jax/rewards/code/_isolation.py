"""Linux isolation through libc: namespaces, the minimal root, capabilities, seccomp, process clean-up.

Worker side: standard library and relative imports only (see _worker).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import platform
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
_MNT_DETACH = 2
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _AT_RECURSIVE = 1, 2, 0x8000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP = 1, 4, 22
PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 24, 36, 38, 47
SETUP_FAILED = 125  # exit code of the launcher when isolation could not be set up

# Per architecture: AUDIT_ARCH, then the numbers of mount_setattr, pivot_root, and the syscalls the
# seccomp filter denies: every socket (unix ones included: the host's listeners are files), memory
# that lives outside the address-space limit (memfd, secret memory), io_uring (it opens sockets and
# files without syscalls of its own), and ways to reach or rebuild outside the sandbox (ptrace,
# other processes' memory, namespaces, mounts, bpf, perf, keyrings, file handles).
_X86_64 = {
    "arch": 0xC000003E,
    "mount_setattr": 442,
    "pivot_root": 155,
    "deny": {
        "socket": 41,
        "socketpair": 53,
        "memfd_create": 319,
        "memfd_secret": 447,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "ptrace": 101,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "unshare": 272,
        "setns": 308,
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "open_by_handle_at": 304,
        "bpf": 321,
        "perf_event_open": 298,
        "userfaultfd": 323,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
    },
}
_AARCH64 = {
    "arch": 0xC00000B7,
    "mount_setattr": 442,
    "pivot_root": 41,
    "deny": {
        "socket": 198,
        "socketpair": 199,
        "memfd_create": 279,
        "memfd_secret": 447,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
        "ptrace": 117,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "unshare": 97,
        "setns": 268,
        "mount": 40,
        "umount2": 39,
        "pivot_root": 41,
        "open_by_handle_at": 265,
        "bpf": 280,
        "perf_event_open": 241,
        "userfaultfd": 282,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
    },
}
SYSCALLS = {"x86_64": _X86_64, "aarch64": _AARCH64}.get(platform.machine())

WORKDIR = "/sandbox"  # the program's working directory inside the minimal root: an empty tmpfs
_WORKDIR_MB = 64


def c_call(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def close_all_except(*keep: int) -> None:
    low = 0
    for fd in sorted(keep):
        if low < fd:  # closerange(n, n) would become close_range(n, UINT_MAX): everything
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)


def reap_children(block: bool = False) -> None:
    while True:
        try:
            if os.waitpid(-1, 0 if block else os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def prctl(option: int, arg: int = 0, arg3: int = 0) -> None:
    c_call(
        libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0)),
        f"prctl({option})",
    )


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s):
        return None if s is None else s.encode()

    c_call(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _read_only_recursive(path: str) -> None:
    """Every mount under `path` read-only and nosuid, in one call (Linux >= 5.12)."""
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID, 0, 0, 0), 32)
    c_call(
        libc.syscall(
            ctypes.c_long(SYSCALLS["mount_setattr"] if SYSCALLS else -1),
            ctypes.c_int(-100),
            path.encode(),
            ctypes.c_uint(_AT_RECURSIVE),
            attr,
            ctypes.c_size_t(32),
        ),
        f"mount_setattr {path}",
    )


def _interpreter_paths() -> tuple[str, list[str], list[str]]:
    """(stdlib, directories, files) the sandboxed interpreter needs besides /usr: its standard
    library, its binary and the libpython it has mapped (not sysconfig: that imports a module
    outside the stdlib's names). Its site-packages are hidden."""
    stdlib = os.path.dirname(os.__file__)
    files = {os.path.realpath(sys.executable)}
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6 and os.path.basename(fields[5].strip()).startswith("libpython"):
                files.add(fields[5].strip())
    outside_usr = sorted(p for p in files if not p.startswith("/usr/") and os.path.isfile(p))
    return stdlib, ([] if stdlib.startswith("/usr/") else [stdlib]), outside_usr


_STDLIB, _BIND_DIRS, _BIND_FILES = _interpreter_paths()


def stdlib_open_to_others() -> bool:
    """Whether a user who owns nothing (nobody) can reach the standard library on the host: not
    if it lies under a private home such as /root; then, without a minimal root, the program can
    import only the modules the worker had loaded."""
    path = _STDLIB
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


_DEVICES = ("null", "zero", "full", "random", "urandom")


def enter_minimal_root(newroot: str, owner: str, warnings: list[str]) -> None:
    """Make `newroot` (an empty directory) a tmpfs holding only /usr, the interpreter and its
    standard library (read-only, site-packages hidden), a few devices, a fresh /proc (if this
    process is PID 1 of a new PID namespace) and an empty tmpfs work dir; switch to it and drop
    the host's root. Needs a new mount namespace and CAP_SYS_ADMIN in it."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", newroot, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=512,mode=0755")

    def bind(source: str, is_dir: bool) -> None:
        target = newroot + source
        os.makedirs(target if is_dir else os.path.dirname(target), exist_ok=True)
        if not is_dir:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        mount(source, target, None, MS_BIND | MS_REC)

    bind("/usr", True)
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        if os.path.islink(f"/{name}"):
            os.symlink(os.readlink(f"/{name}"), f"{newroot}/{name}")
        elif os.path.isdir(f"/{name}"):
            bind(f"/{name}", True)
    for path in _BIND_DIRS:
        bind(path, True)
    for path in _BIND_FILES:
        bind(path, False)
    for site in (os.path.join(_STDLIB, "site-packages"), os.path.join(_STDLIB, "dist-packages")):
        if os.path.isdir(newroot + site):
            mount("tmpfs", newroot + site, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,nr_inodes=4")
    os.mkdir(f"{newroot}/dev")
    for name in _DEVICES:
        if os.path.exists(f"/dev/{name}"):
            bind(f"/dev/{name}", False)
    os.mkdir(f"{newroot}/proc")
    try:
        mount("proc", f"{newroot}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as e:  # (not PID 1 of a PID namespace, or a container masks /proc) leave it empty
        warnings.append(f"no-proc({e.strerror})")
    os.mkdir(newroot + WORKDIR)
    os.symlink(WORKDIR, f"{newroot}/tmp")  # programs that write /tmp write to their work dir
    os.chdir(newroot)
    c_call(libc.syscall(ctypes.c_long(SYSCALLS["pivot_root"]), b".", b"."), "pivot_root")
    c_call(libc.umount2(b".", _MNT_DETACH), "umount the host root")
    os.chdir("/")
    try:
        _read_only_recursive("/")
    except OSError as e:
        warnings.append(f"root-writable({e.strerror})")
    mount("tmpfs", WORKDIR, "tmpfs", MS_NOSUID | MS_NODEV, f"size={_WORKDIR_MB}m,nr_inodes=4096,mode=0700,{owner}")


def set_capabilities(caps: int) -> None:
    """Effective, permitted and inheritable sets all = `caps` (a bit mask of capabilities 0-31)."""
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = struct.pack("IIIIII", caps, caps, caps, 0, 0, 0)
    c_call(libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(data)), "capset")


def drop_capabilities(uid: int | None = None) -> None:
    """Every capability dropped for good: the bounding and ambient sets emptied, then (as `uid`,
    group `uid` and no supplementary groups, if given) the effective, permitted and inheritable sets."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, 4)  # PR_CAP_AMBIENT_CLEAR_ALL
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    set_capabilities(0)


def install_seccomp() -> None:
    """Deny (EPERM) the syscalls in SYSCALLS["deny"]; kill a process that uses another ABI."""
    arch, numbers = SYSCALLS["arch"], sorted(set(SYSCALLS["deny"].values()))
    deny, allow, kill = 0x00050000 | 1, 0x7FFF0000, 0x80000000  # ERRNO(EPERM), ALLOW, KILL_PROCESS
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    n = len(numbers)
    program = [  # (code, jump if true, jump if false, k); jumps count from the next instruction
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, arch),
        (ret, 0, 0, kill),  # a foreign ABI (i386 on x86_64)
        (ld, 0, 0, 0),  # seccomp_data.nr
        (jge, n + 1, 0, 0x40000000),  # x32 syscall numbers: deny
        *((jeq, n - i, 0, nr) for i, nr in enumerate(numbers)),  # each denied number jumps to `deny`
        (ret, 0, 0, allow),
        (ret, 0, 0, deny),
    ]
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HxxxxxxQ", len(program), ctypes.addressof(buf))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    c_call(
        libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(2), ctypes.c_char_p(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)),
        "seccomp",
    )


@dataclasses.dataclass(frozen=True)
class Tier:
    """How a worker isolates its sandboxes (see the package docstring for what each tier lacks).

    namespaces: clone flags to unshare (0: none). seccomp: the syscall filter (``install_seccomp``);
    without it (an architecture it does not know) an audit hook refuses sockets, ctypes and exec.
    """

    namespaces: int
    seccomp: bool

    @property
    def userns(self) -> bool:
        return bool(self.namespaces & CLONE_NEWUSER)
