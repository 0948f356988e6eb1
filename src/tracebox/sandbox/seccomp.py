"""The worker's seccomp filter: a deny list over the kernel surface user code never needs.

The default action is ALLOW; everything listed here fails with EPERM (user code sees a
``PermissionError``), except ``clone3``, which fails with ENOSYS. Why each group is denied:

- process access: reading or steering another process (memory, fds, tracing).
- mounts: reshaping the filesystem view would undo the worker's mount confinement.
- namespaces: new (user) namespaces reopen privileged kernel code to an unprivileged process;
  ``clone`` with a ``CLONE_NEW*`` flag is denied per flag, ``clone3`` gets ENOSYS because
  seccomp cannot read its flag struct (glibc and CPython then fall back to ``clone``).
- kernel attack surface: bpf, perf, io_uring, userfaultfd, keyrings: frequent exploit vectors.
- administration: modules, kexec, reboot, swap, accounting, quotas, clocks, host names, kernel log.
- file handles: ``open_by_handle_at`` opens files by inode, bypassing the mount tree.
- legacy: raw port I/O and long-obsolete calls nothing modern uses.
- terminal injection: ``ioctl`` TIOCSTI/TIOCLINUX push keystrokes into a terminal.
- personality: anything but the default (0) and the query (0xffffffff), e.g. ADDR_NO_RANDOMIZE.

32-bit and x32 system calls (a way around a native-arch filter) kill the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
from collections.abc import Callable
from typing import Any

from tracebox.errors import IsolationUnavailable
from tracebox.sandbox import _linux as L

__all__ = ["blocked_syscalls", "install_filter", "prepare", "protecting_program"]

PROCESS_ACCESS = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "kcmp",
    "pidfd_getfd",
)
MOUNTS = (
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
)
NAMESPACES = ("unshare", "setns")
KERNEL_SURFACE = (
    "bpf",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
)
ADMINISTRATION = (
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    "sethostname",
    "setdomainname",
)
FILE_HANDLES = ("name_to_handle_at", "open_by_handle_at")
LEGACY = (
    "iopl",
    "ioperm",
    "vhangup",
    "uselib",
    "nfsservctl",
    "lookup_dcookie",
    "_sysctl",
    "create_module",
    "get_kernel_syms",
    "query_module",
)

DENIED_EPERM: tuple[str, ...] = (
    PROCESS_ACCESS + MOUNTS + NAMESPACES + KERNEL_SURFACE + ADMINISTRATION + FILE_HANDLES + LEGACY
)
DENIED_ENOSYS = ("clone3",)

CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWTIME": 0x00000080,
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_BPF_INSN_SIZE = 8  # sizeof(struct sock_filter)
_LOW32 = 0xFFFFFFFF  # the kernel reads ioctl's request and personality's arg as 32-bit ints


def blocked_syscalls() -> tuple[str, ...]:
    """Names of the syscalls the filter denies outright (for `tracebox doctor` and docs).

    All fail with EPERM except ``clone3`` (ENOSYS). Names this machine's libseccomp does not
    know are listed too; they are skipped when the filter is built.
    """
    return DENIED_EPERM + DENIED_ENOSYS


def _import_pyseccomp() -> Any:
    try:
        import pyseccomp
    except ImportError as exc:
        raise IsolationUnavailable(
            "seccomp: the pyseccomp package is missing (pip install pyseccomp)"
        ) from exc
    except (OSError, RuntimeError) as exc:  # pyseccomp raises RuntimeError without libseccomp
        raise IsolationUnavailable(
            f"seccomp: libseccomp cannot be loaded ({exc}); install it: apt-get install libseccomp2"
        ) from exc
    return pyseccomp


def _deny(sc: Any, filt: Any, action: int, name: str, *args: Any) -> None:
    """Add one rule, skipping a name libseccomp does not know or that this arch lacks."""
    if sc.resolve_syscall(sc.Arch.NATIVE, name) < 0:  # -1: unknown, below: not on this arch
        return
    filt.add_rule(action, name, *args)


def _build_filter(sc: Any) -> Any:
    filt = sc.SyscallFilter(sc.ALLOW)
    filt.set_attr(sc.Attr.CTL_NNP, 1)
    for attr, value in ((sc.Attr.CTL_TSYNC, 1), (sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)):
        # Both need a newer kernel than seccomp itself; keep libseccomp's default if refused.
        with contextlib.suppress(OSError):
            filt.set_attr(attr, value)
    eperm = sc.ERRNO(errno.EPERM)
    for name in DENIED_EPERM:
        _deny(sc, filt, eperm, name)
    for name in DENIED_ENOSYS:
        _deny(sc, filt, sc.ERRNO(errno.ENOSYS), name)
    # libseccomp cannot OR bits in one comparison: one rule per flag.
    for flag in CLONE_NAMESPACE_FLAGS.values():
        _deny(sc, filt, eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for request in (TIOCSTI, TIOCLINUX):
        _deny(sc, filt, eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, _LOW32, request))
    # personality(x) with x's low 32 bits neither all 0 nor all 1 <=> some set bit i is followed
    # (cyclically) by a clear bit i+1; that takes one masked comparison per bit.
    for i in range(32):
        pair = (1 << i) | (1 << ((i + 1) % 32))
        _deny(sc, filt, eperm, "personality", sc.Arg(0, sc.MASKED_EQ, pair, 1 << i))
    return filt


@functools.cache
def compiled_program() -> bytes:
    """The filter as raw BPF, built once: the template compiles it before forking workers."""
    sc = _import_pyseccomp()
    return _exported(_build_filter(sc))


_SIGNALLING = ("kill", "rt_sigqueueinfo")  # pid 0 or below: a process group, or everyone
_TARGETING = (
    "tkill",
    "tgkill",
    "rt_tgsigqueueinfo",
    "pidfd_open",
    "prlimit64",
    "setpriority",
    "sched_setaffinity",
    "sched_setparam",
    "sched_setscheduler",
    "sched_setattr",
)
_NEGATIVE = 0x80000000


@functools.lru_cache(maxsize=8)
def protecting_program(pids: frozenset[int]) -> bytes:
    """A filter, on top of the worker's, for a process that must leave ``pids`` alone (a
    trial's copy: its worker, the session's snapshots): no signal to them, to a process
    group or to everyone (``kill`` with a pid of 0 or below), no pidfd of them (and no
    ``pidfd_send_signal`` at all: a /proc directory is a pidfd too), no changing their
    limits or scheduling. Each fails with EPERM."""
    sc = _import_pyseccomp()
    filt = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in _SIGNALLING:
        _deny(sc, filt, eperm, name, sc.Arg(0, sc.MASKED_EQ, _LOW32, 0))
        _deny(sc, filt, eperm, name, sc.Arg(0, sc.MASKED_EQ, _NEGATIVE, _NEGATIVE))
    for pid in sorted(pids):
        for name in (*_SIGNALLING, *_TARGETING):
            _deny(sc, filt, eperm, name, sc.Arg(0, sc.MASKED_EQ, _LOW32, pid))
    _deny(sc, filt, eperm, "pidfd_send_signal")
    return _exported(filt)


def _exported(filt: Any) -> bytes:
    fd = os.memfd_create("tracebox-seccomp", os.MFD_CLOEXEC)
    try:
        filt.export_bpf(_Fd(fd))
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    except OSError as exc:
        raise IsolationUnavailable(f"seccomp: the filter could not be built: {exc}") from exc
    finally:
        os.close(fd)


class _Fd:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter() -> None:
    """Load the worker's seccomp filter into the calling process (needs no_new_privs set).

    Irreversible and inherited by children. Raises :class:`IsolationUnavailable` when
    pyseccomp or libseccomp is missing or the kernel refuses the filter (fails closed).
    """
    prepare(compiled_program(), all_threads=True)()


_syscall = ctypes.CDLL(None, use_errno=True).syscall


def prepare(program: bytes, *, all_threads: bool = False) -> Callable[[], None]:
    """A function that loads a compiled filter into the calling process (or all its
    threads). Everything but the system call is done here, so a fork can load it at the
    cost of one call (a trial's copy). Filters stack: one loaded later can only deny more."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // _BPF_INSN_SIZE, ctypes.cast(buf, ctypes.c_void_p))
    flags = _SECCOMP_FILTER_FLAG_TSYNC if all_threads else 0
    args = (
        ctypes.c_long(L.SYS_SECCOMP),
        ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
        ctypes.c_long(flags),
        ctypes.c_void_p(ctypes.addressof(prog)),
    )

    def load() -> None:
        _check_loaded(_syscall(*args), (buf, prog))

    return load


def _check_loaded(ret: int, buffers: object) -> None:
    """``buffers``: what the kernel reads the filter from, passed to keep it alive."""
    if ret > 0:  # TSYNC failed: ret is the thread that could not be synchronised
        raise IsolationUnavailable(f"seccomp: thread {ret} could not be brought under the filter")
    if ret != 0:
        reason = os.strerror(ctypes.get_errno())
        raise IsolationUnavailable(f"seccomp: the kernel refused the filter: {reason}")
