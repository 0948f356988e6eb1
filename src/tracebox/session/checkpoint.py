"""Checkpoints of a session: paused forks of its worker, held by the sandbox's init.

``Session.checkpoint()`` asks the worker to fork a snapshot (``worker.snapshot``): the
whole interpreter, copy-on-write, plus the session's files. ``Session.restore(cp)`` kills
the current worker and has the snapshot fork a new one; the snapshot stays, so one
checkpoint serves any number of restores. This module holds the host's view of one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tracebox.errors import CheckpointLost
from tracebox.session.channel import Channel
from tracebox.session.process import wait_readable

if TYPE_CHECKING:
    from tracebox.session.process import WorkerProcess
    from tracebox.session.session import Session

__all__ = ["Checkpoint", "Family", "private_memory_mb"]


class Family:
    """Sessions that share one sandbox and take turns in its worker: a session and the
    children ``fork`` made of it. The live worker holds the ``active`` member's state; the
    others' states are parked in snapshots."""

    def __init__(self, worker: WorkerProcess, first: Session | None = None) -> None:
        self.worker = worker
        self.channel = Channel(worker)
        self.lock = threading.Lock()
        self.members: set[Session] = set()
        self.active: Session | None = first
        self.on_fork: Callable[[list[Session]], None] | None = None

    def parks(self, checkpoint: Checkpoint) -> bool:
        """Whether a member's parked state is ``checkpoint``."""
        return any(m._parked is checkpoint for m in self.members)


class Checkpoint:
    """A restorable copy of a session's whole state, taken at one moment.

    Released with ``release()``, or with its session. Its memory (pages the live session no
    longer shares with it) counts against ``Limits.checkpoint_memory_mb`` and the session's
    cgroup.
    """

    def __init__(self, session: Session, id: str, pid: int, ns_pid: int) -> None:
        self.id = id
        self.session_id = session.id
        self.created = time.time()
        self._session = session
        self._pid = pid  # host pid of the snapshot process
        self.ns_pid = ns_pid
        self._pidfd = os.pidfd_open(pid)
        self._released = False

    @property
    def pidfd(self) -> int:
        """Readable once the snapshot process has exited."""
        return self._pidfd

    @property
    def released(self) -> bool:
        return self._released

    @property
    def alive(self) -> bool:
        """Whether the snapshot process still exists (code in the session can kill it)."""
        if self._released:
            return False
        return not wait_readable([self._pidfd], 0)  # zombies included

    def memory_mb(self) -> float:
        """Memory this checkpoint holds on its own (not shared with the session)."""
        return private_memory_mb(self._pid) if self.alive else 0.0

    def release(self) -> None:
        """Free the checkpoint. Idempotent."""
        self._session._release(self)

    def _signal(self, sig: int) -> None:
        if self._released:
            raise CheckpointLost(f"checkpoint {self.id} was released")
        try:
            if not self.alive:
                raise ProcessLookupError
            signal.pidfd_send_signal(self._pidfd, sig)
        except OSError:
            raise CheckpointLost(
                f"checkpoint {self.id} is gone: its snapshot process was killed "
                "(code in the session can kill its own checkpoints)"
            ) from None

    def _drop(self) -> None:
        """Kill the snapshot and forget it (the session's part of ``release``)."""
        if self._released:
            return
        self._released = True
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.close(self._pidfd)

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"<Checkpoint {self.id} of session {self.session_id} {state}>"


def private_memory_mb(pid: int) -> float:
    """Private (unshared) resident memory of a process, from ``smaps_rollup``."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except (OSError, ValueError):
        return 0.0
    return total / 1024
