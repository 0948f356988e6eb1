"""Checkpoints inside the sandbox: a paused forked copy of the worker, files included.

``take()`` forks the worker as a sibling (CLONE_PARENT), so the snapshot is a child of the
sandbox's init (PID 1) and outlives the worker. Besides the copy-on-write heap, the
snapshot holds the session's files (everything on the private tmpfs: the working directory
and /tmp) and the offsets of its open file descriptors, read before the fork.

The snapshot then waits for SIGUSR1. Only a signal from outside the sandbox counts
(``si_pid`` 0: the host), so code in the session cannot make a snapshot restore itself. On
that signal it forks a sibling again; the new process announces itself to the host, waits
for the host to retire the worker it replaces, puts the files and offsets back and carries
on as the worker, returning from ``take()`` with ``restored=True``.

Code in the session can still kill its own snapshots (they run as the same user); the host
notices a lost checkpoint and says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from tracebox.sandbox import _linux as L
from tracebox.sandbox.rootfs import SESSION_MOUNT
from tracebox.worker import protocol

__all__ = [
    "Files",
    "capture_files",
    "capture_offsets",
    "changed",
    "restore_files",
    "restore_offsets",
    "signature",
    "take",
]

_SI_USER = 0


@dataclass(frozen=True)
class _Entry:
    mode: int
    data: bytes | None = None  # file contents; None for a directory
    link: str | None = None  # symlink target


Files = dict[str, _Entry]


def _entries(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """Every directory and file under ``root`` with its ``lstat``, on ``root``'s file system
    only (what is mounted inside is not the session's)."""
    dev = os.lstat(root).st_dev
    for here, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            path = os.path.join(here, name)
            st = os.lstat(path)
            if st.st_dev != dev:
                if name in dirs:
                    dirs.remove(name)
                continue
            yield path, st


def capture_files(root: str = SESSION_MOUNT) -> Files:
    """Every directory, regular file and symlink under ``root`` (one file system only)."""
    files: Files = {}
    for path, st in _entries(root):
        if stat.S_ISDIR(st.st_mode):
            files[path] = _Entry(stat.S_IMODE(st.st_mode))
        elif stat.S_ISLNK(st.st_mode):
            files[path] = _Entry(0o777, link=os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                files[path] = _Entry(stat.S_IMODE(st.st_mode), data=f.read())
        # sockets, fifos: nothing to keep (no process is behind them after a restore)
    return files


def restore_files(files: Files, root: str = SESSION_MOUNT) -> None:
    """Make ``root`` hold exactly ``files``. A file that still exists is rewritten in place,
    so descriptors opened on it before the checkpoint see its checkpointed contents."""
    dev = os.lstat(root).st_dev
    for here, dirs, names in os.walk(root, topdown=False):
        for name in [*names, *dirs]:
            path = os.path.join(here, name)
            st = os.lstat(path)
            if st.st_dev != dev:
                continue
            kept = files.get(path)
            if kept is None or _kind(kept) != stat.S_IFMT(st.st_mode):
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
    for path in sorted(files):  # parents sort before their children
        entry = files[path]
        if entry.link is not None:
            if not os.path.islink(path):
                os.symlink(entry.link, path)
            continue
        if entry.data is None:
            os.makedirs(path, exist_ok=True)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                view = memoryview(entry.data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        os.chmod(path, entry.mode)


def _kind(entry: _Entry) -> int:
    if entry.link is not None:
        return stat.S_IFLNK
    return stat.S_IFDIR if entry.data is None else stat.S_IFREG


def signature(root: str = SESSION_MOUNT) -> list[tuple[str, int, int, int, int]]:
    """What says whether anything under ``root`` changed: each entry's inode, mode, size
    and change time (which every write, rename, chmod and utime moves, and nobody sets)."""
    return [
        (path, st.st_ino, st.st_mode, st.st_size, st.st_ctime_ns) for path, st in _entries(root)
    ]


_TICK_NS = 20_000_000  # coarser than any kernel's file time stamps (a jiffy at HZ=100 is 10 ms)


def changed(files: Files, sig: list[tuple[str, int, int, int, int]], at_ns: int) -> bool:
    """Whether the session's files differ from ``files`` (captured with ``sig`` at
    ``at_ns``, ``time.time_ns()``). A rewrite of the same size within one clock tick of an
    earlier write can leave the change time as it was (kernels before 6.13 stamp files
    coarsely): files changed that recently are compared byte for byte."""
    if signature() != sig:
        return True
    for path, _, _, _, ctime in sig:
        kept = files.get(path)
        if kept is None or kept.data is None or ctime < at_ns - _TICK_NS:
            continue
        try:
            with open(path, "rb") as f:
                if f.read() != kept.data:
                    return True
        except OSError:
            return True
    return False


def capture_offsets() -> dict[int, int]:
    """Offsets of this process's seekable descriptors: forks share them with their parent,
    so a restore must put them back."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        with contextlib.suppress(OSError):
            found[fd] = os.lseek(fd, 0, os.SEEK_CUR)
    return found


def restore_offsets(offsets: dict[int, int]) -> None:
    for fd, offset in offsets.items():
        with contextlib.suppress(OSError):
            os.lseek(fd, offset, os.SEEK_SET)


def _detach() -> bool:
    """Fork a child of init (our parent): True in the child, False in the caller."""
    return L.fork_as_sibling() == 0


def take(report: int, channel: socket.socket) -> bool:
    """Checkpoint this worker. In the worker: returns False once the snapshot exists and has
    written its pid (4 bytes) to ``report``. In a worker restored from the snapshot, later:
    returns True, once the host has retired the worker it replaces (see ``_handover``)."""
    files, offsets = capture_files(), capture_offsets()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        if not _detach():
            return False
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    try:  # the snapshot: nothing here may return into the worker's loop, except a restore
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        os.write(report, struct.pack("<i", os.getpid()))
        os.close(report)
        _hold()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
        _handover(channel)
        restore_files(files)
        restore_offsets(offsets)
    except BaseException:
        os._exit(70)
    return True


def _handover(channel: socket.socket) -> None:
    """Announce this new worker, then wait until the host says the old one is gone: only
    then may we touch the session's files and channel as its worker. Until the host has
    seen the announcement, the old worker is left alone, so a failed restore changes
    nothing."""
    channel.setblocking(False)  # drop what a dead worker left unread
    try:
        while channel.recv(1 << 16):
            pass
    except OSError:
        pass
    channel.setblocking(True)
    protocol.send(channel, {"op": "restored", "pid": os.getpid()})
    msg, _ = protocol.recv_blocking(channel)
    if msg.get("op") != "go":
        raise RuntimeError(f"expected the host's go-ahead, got {msg.get('op')!r}")


def _hold() -> None:
    """The snapshot's life: wait for the host's SIGUSR1, then fork a restored worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker's interrupts are not for us
    signal.setitimer(signal.ITIMER_PROF, 0)
    while True:
        info = signal.sigwaitinfo({signal.SIGUSR1})
        if info.si_code != _SI_USER or info.si_pid != 0:
            continue  # from inside the sandbox: ignored
        try:
            if _detach():
                signal.signal(signal.SIGINT, signal.default_int_handler)
                return
        except OSError:  # no fork now (the pids limit): the host times out and says so
            continue
