"""Host-side handle of one sandbox: its init, its current worker, its snapshots.

The sandbox's PID 1 is a small init that reaps every process and reports, on a pipe, how
each one ended. The worker (the process that runs code) is init's child; checkpoints are
paused forks of the worker, also children of init, so they outlive it. A restore makes a
new worker from a snapshot: ``adopt`` points this handle at it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tracebox.sandbox.cgroups import SessionCgroup

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class ExitNotice:
    """How a process ended, as its reaper saw it."""

    event: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    claimed: bool = False  # a WorkerProcess holds it (the template's table may drop it)

    def describe(self) -> str:
        return describe_status(self.status)


def describe_status(status: int | None) -> str:
    if status is None:
        return "the worker ended (exit status unknown)"
    name = signal_name(status)
    if name is not None:
        return f"the worker was killed by {name}"
    return f"the worker exited with status {os.WEXITSTATUS(status)}"


def signal_name(status: int | None) -> str | None:
    """The name of the signal a wait status says the process died of, if any."""
    if status is None or not os.WIFSIGNALED(status):
        return None
    sig = os.WTERMSIG(status)
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def wait_readable(fds: list[int], timeout: float) -> list[int]:
    """The descriptors of ``fds`` that are readable within ``timeout`` seconds (a pidfd:
    its process has exited). ``poll``, not ``select``: a host with many sessions holds
    descriptors past select's limit of 1024."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return [fd for fd, _ in poller.poll(max(0.0, timeout) * 1000)]


def ns_pid(host_pid: int) -> int | None:
    """The pid ``host_pid`` has in its own (innermost) pid namespace."""
    try:
        with open(f"/proc/{host_pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def children(host_pid: int) -> list[int]:
    try:
        with open(f"/proc/{host_pid}/task/{host_pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


@dataclass
class WorkerProcess:
    pid: int
    """Host pid of the current worker."""
    pidfd: int
    channel: socket.socket
    stdout: int
    stderr: int
    cgroup: SessionCgroup | None
    confinement: dict[str, Any]
    exit: ExitNotice
    """How the sandbox's init ended (the template reaps it)."""
    init: int = 0
    """Host pid of the sandbox's init."""
    init_pidfd: int = -1
    exits: int = -1
    """Read end of init's pipe of exit reports: (pid in the sandbox, wait status)."""
    ns_pid: int = 0
    """The worker's pid inside the sandbox."""
    kept: dict[int, int] = field(default_factory=dict)
    """Snapshots to spare when strays are killed: pid in the sandbox -> host pid."""
    frozen: bool = False
    _statuses: dict[int, int] = field(default_factory=dict)
    _stat_fd: int | None = None
    _closed: bool = False

    def alive(self) -> bool:
        """Whether the worker process has not exited."""
        return not wait_readable([self.pidfd], 0)

    def adopt(self, pid: int) -> None:
        """Make ``pid`` (host pid, a child of init) the worker."""
        pidfd = os.pidfd_open(pid)
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
        if self._stat_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._stat_fd)
            self._stat_fd = None
        self.pid, self.pidfd, self.ns_pid = pid, pidfd, ns_pid(pid) or 0

    def find_child_of_init(self, pid_in_sandbox: int) -> int | None:
        """The host pid of init's child whose pid in the sandbox is ``pid_in_sandbox``."""
        for pid in children(self.init):
            if ns_pid(pid) == pid_in_sandbox:
                return pid
        return None

    def exit_status(self, pid_in_sandbox: int, timeout: float) -> int | None:
        """How a process of the sandbox ended, as init reported it (None: not known yet)."""
        deadline = time.monotonic() + timeout
        while True:
            self._read_exits()
            if pid_in_sandbox in self._statuses:
                return self._statuses.pop(pid_in_sandbox)
            left = deadline - time.monotonic()
            if left <= 0 or self.exits < 0:
                return None
            wait_readable([self.exits], left)

    def _read_exits(self) -> None:
        if self.exits < 0:
            return
        while True:
            try:
                data = os.read(self.exits, 8 * 512)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            for pid, status in struct.iter_unpack("<ii", data[: len(data) // 8 * 8]):
                self._statuses[pid] = status
            if len(self._statuses) > 4096:  # orphans of user code: keep the newest
                for old in list(self._statuses)[:2048]:
                    del self._statuses[old]

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self.pidfd, sig)

    def _stat(self) -> list[bytes]:
        """The worker's /proc stat fields after the command name (empty if unreadable)."""
        try:
            if self._stat_fd is None:
                self._stat_fd = os.open(f"/proc/{self.pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            return os.pread(self._stat_fd, 4096, 0).rpartition(b")")[2].split()
        except OSError:
            return []

    def threads(self) -> int:
        """Threads of the worker process, read by the host (the worker's word is not trusted)."""
        try:
            return int(self._stat()[17])  # field 20, num_threads
        except (IndexError, ValueError):
            return 0

    def wake_if_stopped(self) -> None:
        """Code in the session may SIGSTOP its own worker (it is not the sandbox's init, which
        the kernel would protect): continue it, so the request goes on."""
        state = self._stat()[:1]
        if state == [b"T"] and not self.frozen:
            self.signal(signal.SIGCONT)

    def settle(self) -> None:
        """After a request: nothing the request started may keep running.

        The worker already kills its other processes; the host repeats that by host pid, in
        case user code disabled the worker's own clean-up. Threads cannot be killed one by one,
        so a session that still has threads is frozen until its next request.
        """
        self._read_exits()  # keep init's pipe from filling up
        spared = {self.pid, self.init, *self.kept.values()}
        if self.cgroup is None or self.cgroup.tasks() == len(spared):  # one thread each
            return
        for pid in self.cgroup.members():
            if pid not in spared:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if self.cgroup.can_freeze and self.threads() > 1:
            self.cgroup.freeze()
            self.frozen = True

    def resume(self) -> None:
        """Before a request: thaw a session frozen by :meth:`settle`."""
        if self.frozen and self.cgroup is not None:
            self.cgroup.thaw()
            self.frozen = False

    def kill(self) -> None:
        """Kill the worker; init and the snapshots stay, so a checkpoint can revive it."""
        self.signal(signal.SIGKILL)
        self.resume()  # a frozen worker dies only once thawed

    def kill_all(self) -> None:
        """Kill everything in the sandbox: init, worker, snapshots, strays."""
        self.signal(signal.SIGKILL)
        if self.init_pidfd >= 0:  # the pid namespace dies with its init
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_all()  # also thaws: a frozen process dies only once thawed

    def wait_exited(self, timeout: float) -> bool:
        return bool(wait_readable([self.pidfd], timeout))

    def cpu_seconds(self) -> float:
        """CPU time of the whole session (cgroup) or, failing that, of the worker and its reaped children."""  # noqa: E501
        if self.cgroup is not None:
            value = self.cgroup.cpu_seconds()
            if value is not None:
                return value
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            return 0.0
        # fields[11:15] are utime, stime, cutime, cstime (stat fields 14-17)
        return sum(int(x) for x in fields[11:15]) / _CLK_TCK

    def reset_peak_memory(self) -> None:
        if self.cgroup is not None:
            self.cgroup.reset_peak()
        else:
            with contextlib.suppress(OSError), open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")

    def peak_memory_mb(self) -> float | None:
        if self.cgroup is not None:
            peak = self.cgroup.peak_memory_bytes()
            return None if peak is None else peak / (1 << 20)
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def oom_kills(self) -> int:
        return self.cgroup.oom_kills() if self.cgroup is not None else 0

    def close(self) -> None:
        """Kill the worker and everything it started; release every resource. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.kill_all()
        self.wait_exited(2.0)
        fds = (self.stdout, self.stderr, self.pidfd, self._stat_fd, self.exits, self.init_pidfd)
        for fd in fds:
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.channel.close()
        if self.cgroup is not None:
            self.cgroup.close()
