"""Host-side handle of one confined worker process."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from tracebox.sandbox.cgroups import SessionCgroup

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class ExitNotice:
    """How a worker process ended, as its reaper (the template) saw it."""

    event: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    claimed: bool = False  # a WorkerProcess holds it (the template's table may drop it)

    def describe(self) -> str:
        if self.status is None:
            return "the worker ended (exit status unknown)"
        if os.WIFSIGNALED(self.status):
            sig = os.WTERMSIG(self.status)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            return f"the worker was killed by {name}"
        return f"the worker exited with status {os.WEXITSTATUS(self.status)}"


@dataclass
class WorkerProcess:
    pid: int
    pidfd: int
    channel: socket.socket
    stdout: int
    stderr: int
    cgroup: SessionCgroup | None
    confinement: dict[str, Any]
    exit: ExitNotice
    frozen: bool = False
    _stat_fd: int | None = None
    _closed: bool = False

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self.pidfd, sig)

    def threads(self) -> int:
        """Threads of the worker process, read by the host (the worker's word is not trusted)."""
        try:
            if self._stat_fd is None:
                self._stat_fd = os.open(f"/proc/{self.pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            stat = os.pread(self._stat_fd, 4096, 0).rpartition(b")")[2].split()
            return int(stat[17])  # field 20, num_threads
        except (OSError, IndexError, ValueError):
            return 0

    def settle(self) -> None:
        """After a request: nothing the request started may keep running.

        The worker already kills its other processes; the host repeats that by host pid, in
        case user code disabled the worker's own clean-up. Threads cannot be killed one by one,
        so a session that still has threads is frozen until its next request.
        """
        if self.cgroup is None or self.cgroup.tasks() == 1:  # the worker alone, one thread
            return
        for pid in self.cgroup.members():
            if pid != self.pid:
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
        self.signal(signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_all()  # also thaws: a frozen worker dies only once thawed

    def wait_exited(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.pidfd], [], [], timeout)
        return bool(ready)

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
        self.kill()
        self.wait_exited(2.0)
        for fd in (self.stdout, self.stderr, self.pidfd, self._stat_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.channel.close()
        if self.cgroup is not None:
            self.cgroup.close()
