"""Thin ctypes wrappers for the Linux calls Python does not expose (or only on 3.12+)."""

from __future__ import annotations

import ctypes
import os
import platform

# The namespaces every worker gets, as named under /proc/PID/ns.
NAMESPACE_NAMES = ("user", "pid", "mnt", "net", "ipc", "uts", "cgroup")

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_DUMPABLE = 4

# Numbers of the calls reached through syscall(2), per architecture.
_SYSCALLS = {
    "x86_64": {"pivot_root": 155, "capset": 126, "seccomp": 317, "clone": 56},
    "aarch64": {"pivot_root": 41, "capset": 91, "seccomp": 277, "clone": 220},
}
try:
    _NR = _SYSCALLS[platform.machine()]
except KeyError:
    raise ImportError(f"tracebox does not support {platform.machine()} yet") from None
_SYS_PIVOT_ROOT = _NR["pivot_root"]
_SYS_CAPSET = _NR["capset"]
SYS_SECCOMP = _NR["seccomp"]
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_CAP_LAST_CAP_FALLBACK = 40

_libc = ctypes.CDLL(None, use_errno=True)
# Calls through PyDLL keep the GIL: fork_as_sibling must not let another thread run mid-fork.
_libc_gil = ctypes.PyDLL(None, use_errno=True)
_CLONE_PARENT = 0x00008000


def fork_as_sibling() -> int:
    """``fork()``, except that the child's parent is our parent, not us (CLONE_PARENT).

    One copy of the address space instead of the two a double fork costs. A raw clone
    without the interpreter's at-fork hooks, as ``fork_bare``: only for single-threaded
    callers (a checkpoint and its snapshot), whose child goes on with their state exactly,
    random generators included.
    """
    flags = _CLONE_PARENT | 17  # SIGCHLD to the parent when the child ends
    pid = int(_libc_gil.syscall(_NR["clone"], ctypes.c_ulong(flags), None, None, None, None))
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid


def fork_bare() -> int:
    """libc's ``fork()`` without the interpreter's at-fork hooks (``os.fork`` runs them:
    the threading module's, the random module's reseed), which copy-on-write makes cost
    about 150 page faults in the child. Only for a caller that is the process's one thread
    (then no lock the hooks re-create can be held); the child goes on with the parent's
    random state, and ``threading``'s record of the thread's native id is the parent's."""
    pid = int(_libc_gil.fork())
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fork: {os.strerror(err)}")
    return pid


def _check(ret: int, what: str) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else os.fsencode(s)

    ret = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(ret, f"mount {source!r} on {target!r}")


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target!r}")


def pivot_root(new_root: str, put_old: str) -> None:
    ret = _libc.syscall(_SYS_PIVOT_ROOT, os.fsencode(new_root), os.fsencode(put_old))
    _check(ret, "pivot_root")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    ret = _libc.prctl(
        ctypes.c_int(option),
        ctypes.c_ulong(arg2),
        ctypes.c_ulong(arg3),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    _check(ret, f"prctl({option})")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return _CAP_LAST_CAP_FALLBACK


def drop_all_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets of this thread."""
    for cap in range(last_cap() + 1):
        prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    header = Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (Data * 2)()
    _check(_libc.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)), "capset")


def capabilities_of_self() -> tuple[int, int]:
    """(effective, bounding) capability masks of this process, read from /proc."""
    eff = bnd = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
            elif line.startswith("CapBnd:"):
                bnd = int(line.split()[1], 16)
    return eff, bnd
