"""The worker's seccomp filter, checked for real: each test forks a child, loads the filter
there (it is irreversible) and makes the system call; the child reports back through a pipe."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable

import pyseccomp  # noqa: F401  (loaded once here, not in each child: it runs ldconfig)
import pytest

from tracebox.sandbox.seccomp import blocked_syscalls, install_filter

# x86_64 system call numbers.
NR = {
    "ioctl": 16, "getpid": 39, "clone": 56, "ptrace": 101, "personality": 135, "chroot": 161,
    "mount": 165, "sethostname": 170, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "clone3": 435,
}  # fmt: skip
X32_SYSCALL_BIT = 0x40000000
CLONE_NEWUSER = 0x10000000
TIOCSTI, TIOCGWINSZ, TIOCLINUX = 0x5412, 0x5413, 0x541C
ADDR_NO_RANDOMIZE = 0x0040000
PR_SET_NO_NEW_PRIVS = 38

pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the syscall numbers here are x86_64's"
)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(name: str, *args: int) -> tuple[int, int]:
    """Raw syscall -> (return value, errno)."""
    ret = _libc.syscall(ctypes.c_long(NR[name]), *(ctypes.c_long(a) for a in args))
    return int(ret), ctypes.get_errno() if ret == -1 else 0


def _errno(name: str, *args: int) -> int:
    return _syscall(name, *args)[1]


def _filtered(
    action: Callable[[], object], before: Callable[[], None] = lambda: None
) -> tuple[int, object]:
    """Run ``action`` in a forked child under the filter -> (wait status, what it returned).

    ``before`` runs in the child just before the filter is installed."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(rfd)
            if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
            before()
            install_filter()
            message = {"value": action()}
        except BaseException as exc:
            message = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            os.write(wfd, json.dumps(message).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    message = json.loads(data) if data else {}
    return status, message.get("value", message.get("error"))


def _in_filter(action: Callable[[], object], before: Callable[[], None] = lambda: None) -> object:
    status, value = _filtered(action, before)
    assert os.WIFEXITED(status), f"child died: status {status:#x}"
    return value


def _clone_newuser() -> int:
    ret, err = _syscall("clone", CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)
    if ret == 0:  # we are the new process: the filter let it through
        os._exit(0)
    if ret > 0:
        os.waitpid(ret, 0)
    return err


def _read_own_memory() -> int:
    """process_vm_readv on ourselves: works without the filter."""
    src, dst = ctypes.create_string_buffer(b"abc"), ctypes.create_string_buffer(3)
    iov = (ctypes.c_void_p * 4)(ctypes.addressof(dst), 3, ctypes.addressof(src), 3)
    return _errno("process_vm_readv", os.getpid(), ctypes.addressof(iov), 1,
                  ctypes.addressof(iov) + 16, 1, 0)  # fmt: skip


def _pty_ioctl(request: int) -> int:
    master, slave = os.openpty()
    arg = ctypes.create_string_buffer(b"x", 8)
    try:
        return _errno("ioctl", slave, request, ctypes.addressof(arg))
    finally:
        os.close(master)
        os.close(slave)


DENIED: dict[str, tuple[Callable[[], int], int]] = {
    "ptrace": (lambda: _errno("ptrace", 0, 0, 0, 0), errno.EPERM),  # PTRACE_TRACEME
    "unshare_newuser": (lambda: _errno("unshare", CLONE_NEWUSER), errno.EPERM),
    "setns": (lambda: _errno("setns", 0, CLONE_NEWUSER), errno.EPERM),
    "mount": (lambda: _errno("mount", 0, 0, 0, 0, 0), errno.EPERM),
    "chroot": (lambda: _errno("chroot", 0), errno.EPERM),
    # Length > 64: EINVAL unfiltered, so a broken filter cannot rename the host.
    "sethostname": (lambda: _errno("sethostname", 0, 1000), errno.EPERM),
    "open_by_handle_at": (lambda: _errno("open_by_handle_at", 0, 0, 0), errno.EPERM),
    "bpf": (lambda: _errno("bpf", 0, 0, 0), errno.EPERM),
    "perf_event_open": (lambda: _errno("perf_event_open", 0, 0, -1, -1, 0), errno.EPERM),
    "keyctl": (lambda: _errno("keyctl", 0, -3, 0), errno.EPERM),  # KEYCTL_GET_KEYRING_ID
    "io_uring_setup": (lambda: _errno("io_uring_setup", 1, 0), errno.EPERM),
    "userfaultfd": (lambda: _errno("userfaultfd", 0), errno.EPERM),
    "process_vm_readv": (_read_own_memory, errno.EPERM),
    "clone_newuser": (_clone_newuser, errno.EPERM),
    "clone3": (lambda: _errno("clone3", 0, 0), errno.ENOSYS),  # unfiltered: EINVAL
    "ioctl_tiocsti": (lambda: _pty_ioctl(TIOCSTI), errno.EPERM),
    "ioctl_tiocsti_high_bits": (lambda: _pty_ioctl((1 << 32) | TIOCSTI), errno.EPERM),
    "ioctl_tioclinux": (lambda: _pty_ioctl(TIOCLINUX), errno.EPERM),
    "personality_no_aslr": (lambda: _errno("personality", ADDR_NO_RANDOMIZE), errno.EPERM),
    "personality_high_bits": (
        lambda: _errno("personality", (1 << 32) | ADDR_NO_RANDOMIZE),
        errno.EPERM,
    ),
}


@pytest.mark.parametrize(("action", "expected"), DENIED.values(), ids=DENIED.keys())
def test_denied(action: Callable[[], int], expected: int) -> None:
    assert _in_filter(action) == expected


def test_threads_started_before_the_filter_are_covered() -> None:
    go, result = threading.Event(), []
    thread: threading.Thread | None = None

    def body() -> None:
        go.wait()
        result.append(_errno("mount", 0, 0, 0, 0, 0))  # unfiltered: EFAULT

    def start() -> None:  # runs in the child before install_filter()
        nonlocal thread
        thread = threading.Thread(target=body)
        thread.start()

    def action() -> int:
        go.set()
        assert thread is not None
        thread.join()
        return result[0]

    assert _in_filter(action, before=start) == errno.EPERM


def test_x32_syscalls_kill_the_process() -> None:
    status, _ = _filtered(lambda: _libc.syscall(ctypes.c_long(X32_SYSCALL_BIT | NR["getpid"])))
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGSYS


def _fork_grandchild() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _thread() -> bool:
    box: list[int] = []
    thread = threading.Thread(target=lambda: box.append(42))
    thread.start()
    thread.join()
    return box == [42]


def _temp_file() -> bytes:
    with tempfile.TemporaryFile() as f:
        f.write(b"hello")
        f.seek(0)
        return f.read()


def _socketpair() -> bytes:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"ping")
        return b.recv(4)


ALLOWED: dict[str, tuple[Callable[[], object], object]] = {
    "fork_and_wait": (_fork_grandchild, 7),
    "thread": (_thread, True),
    "subprocess": (lambda: subprocess.run(["/bin/true"], check=False).returncode, 0),
    "temp_file": (lambda: _temp_file().decode(), "hello"),
    "socketpair": (lambda: _socketpair().decode(), "ping"),
    "ioctl_tiocgwinsz": (lambda: _pty_ioctl(TIOCGWINSZ), 0),
    "personality_query": (lambda: _syscall("personality", 0xFFFFFFFF)[0] >= 0, True),
    "personality_default": (lambda: _errno("personality", 0), 0),
}


@pytest.mark.parametrize(("action", "expected"), ALLOWED.values(), ids=ALLOWED.keys())
def test_allowed(action: Callable[[], object], expected: object) -> None:
    assert _in_filter(action) == expected


def test_blocked_syscalls_lists_the_outright_denials() -> None:
    names = blocked_syscalls()
    assert len(names) == len(set(names))
    assert {"ptrace", "unshare", "setns", "mount", "bpf", "io_uring_setup", "clone3"} <= set(names)
    assert "clone" not in names  # only with namespace flags
