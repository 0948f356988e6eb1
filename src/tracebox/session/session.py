"""A persistent Python session in a confined worker, seen from the host."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tracebox.errors import (
    CheckpointError,
    CheckpointLost,
    CheckpointRefused,
    NameNotFound,
    ProtocolError,
    SessionBusy,
    SessionClosed,
    SessionDead,
    TransferError,
    UnpicklableValue,
    ValueTooLarge,
)
from tracebox.session import transfer
from tracebox.session.channel import EXIT_WAIT, Exchange, Reply, discard
from tracebox.session.checkpoint import Checkpoint, Family
from tracebox.session.journaling import JournalSink, digest
from tracebox.session.output import OutputCallback
from tracebox.session.process import WorkerProcess, wait_readable
from tracebox.session.results import (
    call_result_of,
    journaled,
    result_of,
    trace_config,
    unpack_trace,
)
from tracebox.session.template import host_view_problems
from tracebox.session.trial import Call, trial_of
from tracebox.session.trial import request as trial_request
from tracebox.trace.config import TraceConfig
from tracebox.trace.model import Trace
from tracebox.trace.settings import Mode
from tracebox.types import CallResult, Limits, RunResult, SessionState, Trial
from tracebox.worker.protocol import recv_blocking, send

_RESTORE_WAIT = 30.0  # a restore forks the snapshot and rewrites the session's files


class Session:
    """One confined worker whose Python state persists across runs (unless ``stateful=False``).

    Not thread-safe for concurrent calls: a second call while one runs raises ``SessionBusy``.
    """

    def __init__(
        self,
        worker: WorkerProcess,
        *,
        id: str,
        limits: Limits,
        stateful: bool,
        on_close: Any = None,
        journal: JournalSink | None = None,
        family: Family | None = None,
    ) -> None:
        self.id = id
        self.limits = limits
        self.stateful = stateful
        self._journal = journal
        self._checkpoints: dict[str, Checkpoint] = {}
        self._family = family or Family(worker, first=self)
        self._family.members.add(self)
        self._parked: Checkpoint | None = None  # our state while another member is live
        self._worker = worker
        self._state = SessionState.READY
        self._lock = threading.Lock()
        self._on_close = on_close

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def confinement(self) -> dict[str, Any]:
        """What the worker reported about its confinement when it started."""
        return dict(self._worker.confinement)

    def close(self) -> None:
        """Kill the worker and free its resources. Idempotent."""
        with self._lock:
            if self._state is SessionState.CLOSED:
                return
            self._state = SessionState.CLOSED
        with self._family.lock:
            fam = self._family
            fam.members.discard(self)
            if fam.active is self:
                fam.active = None
            mine = [*self._checkpoints.values(), *([self._parked] if self._parked else [])]
            if not fam.members:
                self._worker.close()  # the snapshots die with the sandbox
                fam.channel.close()
            for cp in mine:
                if not cp.released and not fam.parks(cp):
                    self._worker.kept.pop(cp.ns_pid, None)
                    cp._drop()
            self._parked = None
        self._log("close", {})
        if self._on_close is not None:
            self._on_close(self)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session {self.id} {self._state.value}>"

    @contextlib.contextmanager
    def _busy(self, *, revive: bool = False) -> Any:
        """One request at a time; ``revive``: also for a dead session (a restore)."""
        if not self._lock.acquire(blocking=False):
            raise SessionBusy(f"session {self.id} is already running a request")
        try:
            if self._state is SessionState.CLOSED:
                raise SessionClosed(f"session {self.id} is closed")
            if self._state is SessionState.DEAD and not revive:
                hint = " (restore a checkpoint to revive it)" if self._checkpoints else ""
                raise SessionDead(
                    f"session {self.id} is dead: its worker was killed or crashed{hint}"
                )
            self._state = SessionState.RUNNING
            try:
                with self._family.lock:  # members of a fork family take turns in its sandbox
                    if not revive:
                        self._activate()
                    yield
            finally:
                if self._state is SessionState.RUNNING:
                    self._state = SessionState.READY
        finally:
            self._lock.release()

    # -- public operations -----------------------------------------------------------------

    def run(
        self,
        code: str,
        *,
        on_output: OutputCallback | None = None,
        trace: TraceConfig | Mode | None = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
    ) -> RunResult:
        """Run ``code`` as a notebook cell; the last expression's repr becomes ``value``.

        ``tools`` are host functions the code may call while it runs, with
        ``tracebox.worker.tools.call(name, *args, **kwargs)``; their arguments arrive as
        plain data (``session.transfer``), and they run in the calling thread.

        ``trace`` records the run (``"steps"``, ``"coverage"``, ``"full"`` or a
        ``TraceConfig``) into ``RunResult.trace``. The recording lives in the session's
        memory while the run goes on, so it counts against ``Limits.memory_mb``.
        """
        if not isinstance(code, str):
            raise TypeError(f"code must be str, not {type(code).__name__}")
        msg: dict[str, Any] = {
            "op": "run",
            "code": code,
            "stateful": self.stateful,
            "max_value_chars": self.limits.max_value_chars,
            "max_bytes": self.limits.max_transfer_bytes,
        }
        if trace is not None:
            msg["trace"] = trace_config(trace).to_wire()
        with self._busy():
            ex = self._exchange(msg, on_output=on_output, tools=tools)
            recorded = self._trace(ex)
            result = self._result(ex, recorded)
            self._log("run", {"code": code, "trace": msg.get("trace"), "tools": sorted(tools or ()),
                              "result": journaled(result)})  # fmt: skip
        return result

    def call(
        self,
        name: str,
        /,
        *args: object,
        trace__: TraceConfig | Mode | None = None,
        **kwargs: object,
    ) -> CallResult:
        """Call the session's function ``name`` with copies of ``args`` and ``kwargs``.

        ``trace__`` records the call as ``run(trace=...)`` records a run (the trailing
        underscores keep the name out of the way of the function's own keywords).

        What it returns comes back as a copy in ``CallResult.returned`` if it is plain data
        (``session.transfer``); anything else (an instance of a class the session defined,
        say) makes the call an ``error`` of type ``UntransferableValue``, so code in the
        session cannot hand the host an object that lies about itself.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be str, not {type(name).__name__}")
        data = transfer.dumps((args, kwargs), self.limits.max_transfer_bytes)
        msg = {
            "op": "call",
            "name": name,
            "max_bytes": self.limits.max_transfer_bytes,
            "max_value_chars": self.limits.max_value_chars,
        }
        if trace__ is not None:
            msg["trace"] = trace_config(trace__).to_wire()
        with self._busy():
            ex = self._exchange(msg, data)
            result = self._call_result(name, ex, self._trace(ex))
            self._log("call", {"name": name, "result": journaled(result)}, data)
        return result

    def _result(self, ex: Exchange, recorded: Trace | str | None = None) -> RunResult:
        alive = self._state is not SessionState.DEAD
        return result_of(ex, self.limits, alive=alive, recorded=recorded)

    def _call_result(self, name: str, ex: Exchange, recorded: Trace | str | None) -> CallResult:
        r = ex.reply
        if r is not None and r.status == "missing":
            raise NameNotFound(f"name {name!r} is not defined in session {self.id}")
        alive = self._state is not SessionState.DEAD
        return call_result_of(name, ex, self.limits, alive=alive, recorded=recorded)

    def trial(
        self,
        cells: Sequence[str] = (),
        calls: Sequence[Call] = (),
        *,
        trace: TraceConfig | Mode | None = None,
        on_output: OutputCallback | None = None,
        cpu_seconds: float | None = None,
        wall_seconds: float | None = None,
    ) -> Trial:
        """Run ``cells``, then ``calls`` (``(name, args, kwargs)``), in a throwaway copy of
        the session; the session itself is left exactly as it was: its state, its files,
        its processes.

        The copy is a fork of the worker, made and ended within one request, so a trial
        costs one fork and no checkpoint: use it to try something and forget it (an undo
        that needs no restore), or to run one candidate of many from the same start. The
        copy goes on from the session's state exactly, its random generators included: a
        trial draws what the session would draw next, every time.

        Cells run in order until one does not end ``ok``; then each call runs, its error
        being its result, until one reaches a limit. ``Limits`` apply to the trial as a
        whole; ``cpu_seconds`` and ``wall_seconds`` replace its time limits for this trial.
        ``trace`` records every step (as ``run(trace=...)``). Tools cannot be called in a
        trial. Refused (``CheckpointRefused``) while the session has other threads: a fork
        keeps only the calling thread.
        """
        lim = self.limits
        if cpu_seconds is not None or wall_seconds is not None:
            times = {"cpu_seconds": cpu_seconds or lim.cpu_seconds,
                     "wall_seconds": wall_seconds or lim.wall_seconds}  # fmt: skip
            lim = Limits.model_validate({**lim.model_dump(), **times})
        wire = None if trace is None else trace_config(trace).to_wire()
        msg, blob = trial_request(cells, calls, stateful=self.stateful, limits=lim, trace=wire)
        with self._busy():
            steps = len(msg["steps"])
            ex = self._exchange(msg, blob, on_output=on_output, limits=lim, replies=steps + 1)
            if ex.reply is not None and ex.reply.status == "refused":
                raise CheckpointRefused(ex.reply.detail or "refused")
            alive = self._state is not SessionState.DEAD
            result = trial_of(ex, msg["steps"], lim, alive=alive)
            names = [name for name, _, _ in calls]
            self._log("trial", {"cells": list(cells), "calls": names, "trace": wire,
                                "status": result.status}, blob)  # fmt: skip
        return result

    def put(self, name: str, value: object) -> None:
        """Bind ``name`` in the session's namespace to a copy of ``value`` (pickle protocol 5)."""
        if not isinstance(name, str) or not name.isidentifier():
            raise TransferError(f"not a valid Python name: {name!r}")
        data = transfer.dumps(value, self.limits.max_transfer_bytes)
        with self._busy():
            ex = self._exchange({"op": "put", "name": name}, data)
            self._log("put", {"name": name, "sha256": digest(data), "size": len(data)}, data)
        reply = self._transfer_reply(ex, f"put {name!r}")
        if reply.status == "error":
            detail = reply.error.message if reply.error else "unknown error"
            raise UnpicklableValue(f"the session could not unpickle {name!r}: {detail}")

    def get(self, name: str) -> Any:
        """A copy of the value bound to ``name``; plain data only (see ``session.transfer``)."""
        if not isinstance(name, str):
            raise TransferError(f"name must be str, not {type(name).__name__}")
        msg = {"op": "get", "name": name, "max_bytes": self.limits.max_transfer_bytes}
        with self._busy():
            ex = self._exchange(msg)
            status = ex.reply.status if ex.reply is not None else "dead"
            self._log("get", {"name": name, "status": status, "sha256": digest(ex.blob),
                              "size": len(ex.blob)})  # fmt: skip
        reply = self._transfer_reply(ex, f"get {name!r}")
        if reply.status == "missing":
            raise NameNotFound(f"name {name!r} is not defined in session {self.id}")
        if reply.status == "too_large":
            raise ValueTooLarge(
                f"{name!r} pickles to {reply.size} bytes; the limit is "
                f"{self.limits.max_transfer_bytes} (Limits.max_transfer_bytes)"
            )
        if reply.status == "error":
            detail = f"{reply.error.type}: {reply.error.message}" if reply.error else "unknown"
            raise UnpicklableValue(f"{name!r} cannot be pickled in the session: {detail}")
        return transfer.loads_untrusted(ex.blob)

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Snapshot the whole session: interpreter state (a paused copy-on-write fork of the
        worker, so generators, lambdas, open files and C objects are kept) and its files.

        Refused (``CheckpointRefused``) while the session has other threads (a fork keeps
        only the calling thread), or when ``Limits.max_checkpoints`` or
        ``Limits.checkpoint_memory_mb`` would be exceeded.
        """
        lim = self.limits
        with self._busy():
            held = [cp for cp in self._checkpoints.values() if cp.alive]
            if len(held) >= lim.max_checkpoints:
                raise CheckpointRefused(
                    f"session {self.id} holds {len(held)} checkpoints, the limit "
                    f"(Limits.max_checkpoints); release one first"
                )
            used = sum(cp.memory_mb() for cp in held)
            if used > lim.checkpoint_memory_mb:
                raise CheckpointRefused(
                    f"the checkpoints of session {self.id} hold {used:.0f} MB, over "
                    f"Limits.checkpoint_memory_mb={lim.checkpoint_memory_mb}; release some"
                )
            cp = self._snapshot()
            self._checkpoints[cp.id] = cp
            self._log("checkpoint", {"checkpoint": cp.id})
        return cp

    def restore(self, checkpoint: Checkpoint) -> None:
        """Put the session back to ``checkpoint``: its interpreter state and its files.

        Works on a dead session too (a worker killed by a limit or a crash), and as often as
        wanted from one checkpoint. Raises ``CheckpointLost`` if the checkpoint was released
        or its snapshot is gone; the session is then left as it was.
        """
        self._own(checkpoint)
        with self._busy(revive=True):
            self._bring_back(checkpoint)
            self._log("restore", {"checkpoint": checkpoint.id})

    def fork(self, n: int) -> list[Session]:
        """``n`` new sessions, each starting from this session's current state.

        They are independent (a change in one, files included, is invisible to the others)
        but share this session's sandbox and limits, and take turns in it: while one member
        of the family runs, another waits, and switching members costs a checkpoint and a
        restore. (Running them side by side would need a sandbox per child, and a forked
        process cannot enter new namespaces without privileges the sandbox drops.)
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"fork needs a positive number of sessions, not {n!r}")
        with self._busy():
            start = self._snapshot()
            kids = [
                Session(
                    self._worker,
                    id=secrets.token_hex(6),
                    limits=self.limits,
                    stateful=self.stateful,
                    on_close=self._on_close,
                    journal=self._journal,
                    family=self._family,
                )
                for _ in range(n)
            ]
            for kid in kids:
                kid._parked = start
            if self._family.on_fork is not None:
                self._family.on_fork(kids)
            for kid in kids:
                kid._log("created", {"limits": self.limits.model_dump(), "stateful": self.stateful,
                                     "parent": self.id, "checkpoint": None})  # fmt: skip
            self._log("fork", {"children": [k.id for k in kids]})
        return kids

    def _snapshot(self, owner: Session | None = None) -> Checkpoint:
        """Fork a snapshot of the live worker (whose state is ``owner``'s, default ours)."""
        threads = self._worker.threads()
        who = (owner or self).id
        if threads > 1:
            raise CheckpointRefused(
                f"session {who} has {threads} threads; a checkpoint is a fork, which "
                "keeps only the calling thread, so it would not be faithful"
            )
        ex = self._exchange({"op": "checkpoint"}, settle=False)  # spare the new snapshot
        r = ex.reply
        snap = None if r is None else r.snapshot
        pid = None if snap is None else self._worker.find_child_of_init(snap)
        if snap is not None and pid is not None:
            self._worker.kept[snap] = pid
        if ex.death is None:
            self._worker.settle()
        if r is None or r.status != "ok" or snap is None:
            raise self._checkpoint_failure(ex)
        if pid is None:
            raise CheckpointError("the snapshot process is not where it should be")
        return Checkpoint(owner or self, secrets.token_hex(6), pid, snap)

    def _activate(self) -> None:
        """Make the live worker hold our state (fork families share one worker)."""
        fam = self._family
        if fam.active is self:
            return
        parked = self._parked
        if parked is None:  # only the family's first member starts out live
            fam.active = self
            return
        self._bring_back(parked)
        self._parked = None
        if not fam.parks(parked):
            self._worker.kept.pop(parked.ns_pid, None)
            parked._drop()

    def _bring_back(self, checkpoint: Checkpoint) -> None:
        """Replace the live worker by a new one forked from ``checkpoint``; the member whose
        state was live is parked in a snapshot first.

        The handshake keeps a failed restore harmless: the new worker announces itself,
        the host checks it and only then retires the old one, and tells the new one to go.
        """
        fam, w = self._family, self._worker
        checkpoint._signal(0)  # still there?
        other = fam.active
        if other is not None and other is not self and other._state is not SessionState.DEAD:
            other._parked = self._snapshot(owner=other)
        idle = self._state is not SessionState.DEAD and w.alive() and not w.frozen
        if not idle:
            for fd in (w.channel.fileno(), w.stdout, w.stderr):
                discard(fd)  # half-written replies and output of the dead worker
        checkpoint._signal(signal.SIGUSR1)
        new_pid = self._announced(checkpoint)
        old = os.dup(w.pidfd)
        try:
            w.adopt(new_pid)
            fam.active = None
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(old, signal.SIGKILL)
            w.resume()  # a frozen worker dies only once thawed
            if not idle:  # it may be mid-write: wait until it can write no more
                wait_readable([old], EXIT_WAIT)
            # an idle worker, blocked reading, never runs again once killed: no need to wait
            # while the kernel frees its memory
        finally:
            os.close(old)
        w.settle()  # strays of the retired worker
        for fd in (w.stdout, w.stderr):
            discard(fd)
        msg = self._go(w.channel)
        if msg.get("op") != "ready":
            self._state = SessionState.DEAD
            self._bury()
            raise CheckpointError(f"the restored worker failed to start: {msg!r}")
        fam.active = self
        self._state = SessionState.RUNNING

    @staticmethod
    def _go(ch: socket.socket) -> dict[str, Any]:
        """Tell the restored worker to take over; its answer. Sent again once if the answer
        is slow: the killed worker, woken at the wrong moment, may have read the first."""
        try:
            for wait in (1.0, _RESTORE_WAIT):
                send(ch, {"op": "go"})
                if wait_readable([ch.fileno()], wait):
                    ch.settimeout(_RESTORE_WAIT)
                    msg, _ = recv_blocking(ch)
                    return msg
            return {"error": "no answer"}
        except (OSError, EOFError, ValueError) as exc:
            return {"error": repr(exc)}
        finally:
            ch.setblocking(False)

    def _announced(self, checkpoint: Checkpoint) -> int:
        """The host pid of the worker ``checkpoint`` just forked, checked from the host."""
        w, ch = self._worker, self._worker.channel
        # a snapshot killed just before it was asked may still be exiting: watch it too
        ready = wait_readable([ch.fileno(), checkpoint.pidfd], _RESTORE_WAIT)
        ch.settimeout(_RESTORE_WAIT)
        try:
            if ch.fileno() not in ready:
                raise EOFError("no announcement")
            msg, _ = recv_blocking(ch)
        except (OSError, EOFError, ValueError) as exc:
            raise CheckpointLost(
                f"checkpoint {checkpoint.id} is gone: it did not produce a worker ({exc}); "
                "the session is unchanged"
            ) from None
        finally:
            ch.setblocking(False)
        pid = w.find_child_of_init(msg.get("pid", -1)) if msg.get("op") == "restored" else None
        problems = ["unknown process"] if pid is None else host_view_problems(pid)
        if pid is not None and w.cgroup is not None and pid not in w.cgroup.pids():
            problems.append("not in the session's cgroup")
        if pid is None or problems:
            w.kill_all()
            self._state = SessionState.DEAD
            raise CheckpointError(f"the restored worker is not right ({msg!r}): {problems}")
        return pid

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints this session holds."""
        return [cp for cp in self._checkpoints.values() if not cp.released]

    def _own(self, checkpoint: Checkpoint) -> None:
        if checkpoint.released:
            raise CheckpointLost(f"checkpoint {checkpoint.id} was released")
        if self._checkpoints.get(checkpoint.id) is not checkpoint:
            raise CheckpointLost(f"{checkpoint!r} is not a checkpoint of session {self.id}")

    def _release(self, checkpoint: Checkpoint) -> None:
        if checkpoint.released:
            return
        self._own(checkpoint)
        with self._lock:
            checkpoint._drop()
            self._worker.kept.pop(checkpoint.ns_pid, None)
            self._checkpoints.pop(checkpoint.id, None)
        self._log("release", {"checkpoint": checkpoint.id})

    def _checkpoint_failure(self, ex: Exchange) -> CheckpointError:
        r = ex.reply
        if r is None:
            return CheckpointError(f"the checkpoint failed: {ex.death}")
        if r.status == "refused":
            return CheckpointRefused(r.detail or "refused")
        detail = r.error.message if r.error else (r.detail or r.status)
        return CheckpointError(f"the checkpoint failed: {detail}")

    def interrupt(self) -> None:
        """Raise ``KeyboardInterrupt`` in the code now running (like Ctrl-C); no-op when idle.

        Safe to call from another thread or a signal handler. The run then ends with status
        ``"error"`` and a ``KeyboardInterrupt`` error, unless the code ignores it.
        """
        if self._state is SessionState.RUNNING:
            self._worker.signal(signal.SIGINT)

    def ping(self) -> bool:
        """True if the worker answers."""
        with self._busy():
            ex = self._exchange({"op": "ping"})
        return ex.reply is not None and ex.reply.status == "ok"

    # -- the request loop ------------------------------------------------------------------

    def _log(self, kind: str, data: dict[str, Any], blob: bytes | None = None) -> None:
        """Journal one operation; it is acknowledged (returns) only once this is durable."""
        if self._journal is not None:
            self._journal.append(self.id, kind, data, blob)

    def _exchange(
        self,
        msg: dict[str, Any],
        blob: bytes = b"",
        *,
        on_output: OutputCallback | None = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        settle: bool = True,
        limits: Limits | None = None,
        replies: int = 1,
    ) -> Exchange:
        """One request to the live worker (ours: ``_busy`` made it so)."""
        lim = limits or self.limits
        ex = self._family.channel.request(
            msg, blob, limits=lim, on_output=on_output, tools=tools, settle=settle, replies=replies
        )
        if ex.death is not None:
            self._state = SessionState.DEAD
            self._bury()
        return ex

    def _transfer_reply(self, ex: Exchange, what: str) -> Reply:
        if ex.reply is None:
            raise SessionDead(f"{what}: {ex.death}")
        if ex.reply.status == "timeout":
            raise TransferError(f"{what} was interrupted by the time limit")
        if ex.reply.status == "memory":
            raise TransferError(f"{what} ran out of memory in the session")
        return ex.reply

    def _bury(self) -> None:
        """After the worker died: end everything it left running. The sandbox (its init and
        snapshots) stays only if a checkpoint can revive the session, or other members of
        its fork family still live in it."""
        if len(self._family.members) > 1 or any(cp.alive for cp in self._checkpoints.values()):
            self._worker.settle()
        else:
            self._worker.kill_all()

    # -- results ---------------------------------------------------------------------------

    def _trace(self, ex: Exchange) -> Trace | str | None:
        """The trace the worker sent with its reply, or why there is none.

        A trace that is not what the schema allows is a protocol violation: the worker is
        killed, as for any other forged reply.
        """
        try:
            return unpack_trace(ex, self.limits.max_transfer_bytes)
        except ProtocolError as exc:
            self._state = SessionState.DEAD
            self._worker.kill()
            self._worker.wait_exited(EXIT_WAIT)
            self._bury()
            ex.reply, ex.killed = None, "protocol"
            ex.death = f"the worker sent a malformed trace ({str(exc)[:200]}); it was killed"
            return None
