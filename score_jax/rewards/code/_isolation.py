"""Linux isolation through libc: namespaces, mounts, capabilities, seccomp, process clean-up.

Worker side: standard library and relative imports only (see _worker).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import platform
import struct

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 0x4000, 1 << 18
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _AT_RECURSIVE, _SYS_MOUNT_SETATTR = 1, 2, 0x8000, 442
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_KEEPCAPS, PR_SET_SECCOMP = 1, 4, 8, 22
PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 24, 36, 38, 47
CAP_DAC_READ_SEARCH = 2
SETUP_FAILED = 125  # exit code of the launcher when isolation could not be set up

# seccomp: (AUDIT_ARCH, socket syscall number) for the none tier's network filter.
SECCOMP_ARCH = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}


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


def read_only_root() -> None:
    """Every mount read-only (and nosuid), recursively, in this mount namespace."""
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID, 0, 0, 0), 32)
    c_call(
        libc.syscall(
            ctypes.c_long(_SYS_MOUNT_SETATTR),
            ctypes.c_int(-100),
            b"/",
            ctypes.c_uint(_AT_RECURSIVE),
            attr,
            ctypes.c_size_t(32),
        ),
        "mount_setattr /",
    )


def set_capabilities(caps: int) -> None:
    """Effective, permitted and inheritable sets all = `caps` (a bit mask of capabilities 0-31)."""
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = struct.pack("IIIIII", caps, caps, caps, 0, 0, 0)
    c_call(libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(data)), "capset")


def drop_bounding_set(keep: int) -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if not keep >> cap & 1:
            prctl(PR_CAPBSET_DROP, cap)


def seccomp_no_inet() -> None:
    """socket() only for AF_UNIX; no io_uring (it can open sockets); other ABIs killed."""
    arch, socket_nr = SECCOMP_ARCH[platform.machine()]
    deny, allow, kill = 0x00050000 | 13, 0x7FFF0000, 0x80000000  # ERRNO(EACCES), ALLOW, KILL_PROCESS
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    program = [  # (code, jump if true, jump if false, k); jumps count from the next instruction
        (ld, 0, 0, 4),
        (jeq, 1, 0, arch),
        (ret, 0, 0, kill),  # 0-2: foreign ABI (i386 on x86_64): kill
        (ld, 0, 0, 0),
        (jge, 6, 0, 0x40000000),  # 3-4: x32 syscall numbers: deny
        (jeq, 0, 2, socket_nr),
        (ld, 0, 0, 16),
        (jeq, 4, 3, 1),  # 5-7: socket(AF_UNIX) only
        (jeq, 2, 0, 425),
        (jeq, 1, 0, 426),  # 8-9: io_uring_setup, io_uring_enter: deny
        (ret, 0, 0, allow),
        (ret, 0, 0, deny),
        (ret, 0, 0, allow),
    ]  # 10-12
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
    """How a worker isolates its sandboxes: the namespaces it unshares, and how the network is cut."""

    namespaces: int  # clone flags to unshare (0: none)
    seccomp: bool  # network by seccomp (none tier)
    audit_hook: bool  # network by audit hook (none tier, no seccomp)

    @property
    def userns(self) -> bool:
        return bool(self.namespaces & CLONE_NEWUSER)
