"""A persistent Python session in a confined worker, seen from the host."""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import select
import selectors
import signal
import socket
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

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
from tracebox.session.checkpoint import Checkpoint, Family
from tracebox.session.journaling import JournalSink, digest
from tracebox.session.output import Capture, OutputCallback
from tracebox.session.process import WorkerProcess
from tracebox.session.template import host_view_problems
from tracebox.trace.config import TraceConfig
from tracebox.trace.model import Trace
from tracebox.trace.settings import Mode
from tracebox.types import CallResult, ErrorInfo, Limits, RunResult, RunStatus, SessionState
from tracebox.worker.protocol import FrameError, FrameReader, encode, recv_blocking, send

_READ_CHUNK = 1 << 16
_POLL = 0.05  # how often CPU time is checked while a request runs
_EXIT_WAIT = 2.0
_RESTORE_WAIT = 30.0  # a restore forks the snapshot and rewrites the session's files


class _Reply(BaseModel):
    """What a worker may answer; anything else is a protocol violation."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    op: Literal["reply"]
    seq: int
    status: Literal[
        "ok",
        "error",
        "timeout",
        "memory",
        "missing",
        "too_large",
        "unpicklable",
        "refused",
        "sandbox_error",
    ]
    value: str | None = None
    error: ErrorInfo | None = None
    interrupt: Literal["cpu", "signal"] | None = None
    size: int | None = None
    detail: str | None = None
    snapshot: int | None = None  # a checkpoint's pid in the sandbox
    trace: int | None = None  # bytes of the compressed trace in the blob
    trace_error: str | None = None


class _ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    op: Literal["tool"]
    name: str
    seq: int


@dataclass
class _Exchange:
    """Everything the host observed while one request ran."""

    reply: _Reply | None = None
    blob: bytes = b""
    stdout: str = ""
    stderr: str = ""
    cpu: float = 0.0
    wall: float = 0.0
    peak_mb: float | None = None
    interrupted: str | None = None  # the limit for which the host sent SIGINT
    killed: str | None = None  # why the host killed the worker: "cpu", "wall" or "protocol"
    death: str | None = None  # why the worker is gone, if it is
    oom: bool = False
    notes: list[str] = field(default_factory=list)


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
        self._seq = itertools.count(1)
        self._sel = selectors.DefaultSelector()  # registered once: saves syscalls per request
        self._sel.register(worker.channel, selectors.EVENT_READ)
        for fd in (worker.stdout, worker.stderr):
            self._sel.register(fd, selectors.EVENT_READ)
        # the worker's exit: the channel's EOF does not show it once snapshots share it
        self._watched = worker.pidfd
        self._sel.register(worker.pidfd, selectors.EVENT_READ)

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
            for cp in mine:
                if not cp.released and not fam.parks(cp):
                    self._worker.kept.pop(cp.ns_pid, None)
                    cp._drop()
            self._parked = None
        self._sel.close()
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
            msg["trace"] = _trace_config(trace).to_wire()
        with self._busy():
            ex = self._exchange(msg, on_output=on_output, tools=tools)
            recorded = self._trace(ex)
            result = self._result(ex, recorded)
            self._log("run", {"code": code, "trace": msg.get("trace"), "tools": sorted(tools or ()),
                              "result": _journaled(result)})  # fmt: skip
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
            msg["trace"] = _trace_config(trace__).to_wire()
        with self._busy():
            ex = self._exchange(msg, data)
            result = self._call_result(name, ex, self._trace(ex))
            self._log("call", {"name": name, "result": _journaled(result)}, data)
        return result

    def _call_result(self, name: str, ex: _Exchange, recorded: Trace | str | None) -> CallResult:
        r = ex.reply
        if r is not None and r.status == "missing":
            raise NameNotFound(f"name {name!r} is not defined in session {self.id}")
        why = None
        if r is not None and r.status == "too_large":
            why = f"a value of {r.size} bytes pickled (Limits.max_transfer_bytes)"
        elif r is not None and r.status == "unpicklable":
            why = f"a value that cannot be pickled ({r.error.message if r.error else '?'})"
        if why is not None:  # the call itself went fine: the result is what's wrong
            ex.reply = r.model_copy(update={"status": "ok"})  # type: ignore[union-attr]
        result = dict(self._result(ex, recorded))
        if why is None and result["status"] == "ok":
            try:
                return CallResult(**result, returned=transfer.loads_untrusted(ex.blob))
            except TransferError as exc:
                why = str(exc)
        if why is not None:
            error = ErrorInfo(type="UntransferableValue", message=f"{name}() returned {why}")
            result.update(status="error", error=error)
        return CallResult(**result)

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
                _discard(fd)  # half-written replies and output of the dead worker
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
                select.select([old], [], [], _EXIT_WAIT)
            # an idle worker, blocked reading, never runs again once killed: no need to wait
            # while the kernel frees its memory
        finally:
            os.close(old)
        w.settle()  # strays of the retired worker
        for fd in (w.stdout, w.stderr):
            _discard(fd)
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
                ready, _, _ = select.select([ch], [], [], wait)
                if ready:
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
        ready, _, _ = select.select([ch.fileno(), checkpoint.pidfd], [], [], _RESTORE_WAIT)
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

    def _checkpoint_failure(self, ex: _Exchange) -> CheckpointError:
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

    def _transfer_reply(self, ex: _Exchange, what: str) -> _Reply:
        if ex.reply is None:
            raise SessionDead(f"{what}: {ex.death}")
        if ex.reply.status == "timeout":
            raise TransferError(f"{what} was interrupted by the time limit")
        if ex.reply.status == "memory":
            raise TransferError(f"{what} ran out of memory in the session")
        return ex.reply

    def _exchange(
        self,
        msg: dict[str, Any],
        blob: bytes = b"",
        on_output: OutputCallback | None = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        settle: bool = True,
    ) -> _Exchange:
        """Send one request and watch it until the reply, enforcing time limits."""
        w, lim, ex = self._worker, self.limits, _Exchange()
        out = Capture("stdout", lim.max_output_bytes, on_output)
        err = Capture("stderr", lim.max_output_bytes, on_output)
        msg["cpu_seconds"] = lim.cpu_seconds
        msg["seq"] = seq = next(self._seq)
        if self._watched != w.pidfd:  # the worker was replaced (a restore): watch the new one
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(self._watched)
            self._sel.register(w.pidfd, selectors.EVENT_READ)
            self._watched = w.pidfd
        if w.kept:  # the worker's clean-up must spare the snapshots
            msg["keep"] = sorted(w.kept)
        w.resume()
        w.reset_peak_memory()
        oom0, cpu0, t0 = w.oom_kills(), w.cpu_seconds(), time.monotonic()
        reader = FrameReader(
            max_header=8 * lim.max_value_chars + (1 << 20), max_blob=lim.max_transfer_bytes
        )
        pending = self._send_some(memoryview(b"".join(encode(msg, blob))), ex)  # usually all
        sel, caps = self._sel, {w.stdout: out, w.stderr: err}
        if pending:
            sel.modify(w.channel, selectors.EVENT_READ | selectors.EVENT_WRITE)
        watch = _Watch(lim, t0)
        try:
            while ex.reply is None and ex.death is None:
                for key, events in sel.select(watch.wait()):
                    if key.fd in caps:
                        self._drain(key.fd, caps[key.fd], sel)
                    elif key.fd == w.pidfd:  # it exited: take a reply it sent first, if any
                        self._read_reply(reader, ex, seq, tools, watch)
                        if ex.reply is None and ex.death is None:
                            ex.death = "the worker exited"
                    elif events & selectors.EVENT_WRITE and pending:
                        pending = self._send_some(pending, ex)
                        if not pending:
                            sel.modify(w.channel, selectors.EVENT_READ)
                    elif events & selectors.EVENT_READ:
                        self._read_reply(reader, ex, seq, tools, watch)
                if ex.reply is not None or ex.death is not None:
                    break
                w.wake_if_stopped()
                action = watch.check(w.cpu_seconds() - cpu0)
                if action == "interrupt":
                    ex.interrupted = watch.limit
                    w.signal(signal.SIGINT)
                elif action == "kill":
                    ex.killed = watch.limit
                    ex.death = "killed at the hard deadline after ignoring the interrupt"
                    w.kill()
        finally:
            if pending:
                sel.modify(w.channel, selectors.EVENT_READ)
        if ex.death is not None:
            self._state = SessionState.DEAD
            w.kill()
            w.wait_exited(_EXIT_WAIT)
            if ex.killed is None:
                ex.death = w.describe_exit(_EXIT_WAIT)
            self._bury()
        elif settle:
            w.settle()
        for fd, cap in ((w.stdout, out), (w.stderr, err)):
            self._drain(fd, cap, None)
        ex.stdout, ex.stderr = out.text(), err.text()
        ex.cpu, ex.wall = max(0.0, w.cpu_seconds() - cpu0), time.monotonic() - t0
        ex.peak_mb = w.peak_memory_mb()
        ex.oom = w.oom_kills() > oom0
        return ex

    def _bury(self) -> None:
        """After the worker died: end everything it left running. The sandbox (its init and
        snapshots) stays only if a checkpoint can revive the session, or other members of
        its fork family still live in it."""
        if len(self._family.members) > 1 or any(cp.alive for cp in self._checkpoints.values()):
            self._worker.settle()
        else:
            self._worker.kill_all()

    def _send_some(self, data: memoryview, ex: _Exchange) -> memoryview:
        try:
            return data[self._worker.channel.send(data) :]
        except BlockingIOError:
            return data
        except OSError:
            ex.death = "the worker's channel is closed"
            return data[len(data) :]

    def _drain(self, fd: int, cap: Capture, sel: selectors.BaseSelector | None) -> None:
        while True:
            try:
                data = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                if sel is not None:
                    with contextlib.suppress(KeyError, ValueError):
                        sel.unregister(fd)
                return
            cap.feed(data)

    def _read_reply(
        self,
        reader: FrameReader,
        ex: _Exchange,
        seq: int,
        tools: Mapping[str, Callable[..., Any]] | None,
        watch: _Watch,
    ) -> None:
        w = self._worker
        while ex.reply is None and ex.death is None:
            try:
                data = w.channel.recv(_READ_CHUNK * 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                ex.death = "the worker closed its channel"
                return
            try:
                for msg, blob in reader.feed(data):
                    if ex.reply is not None:
                        raise FrameError("more than one reply to one request")
                    if msg.get("op") == "tool":
                        self._serve_tool(msg, blob, tools, watch)
                        continue
                    ex.reply, ex.blob = _Reply.model_validate(msg), blob
                    if ex.reply.seq != seq:
                        ex.reply = None
                        raise FrameError(f"reply to request {msg['seq']} while {seq} was asked")
            except (FrameError, ValidationError, OSError) as exc:
                ex.reply = None
                ex.death = f"the worker broke the protocol ({type(exc).__name__}); it was killed"
                ex.killed = "protocol"
                ex.notes.append(str(exc)[:500])
                w.kill()
                return

    def _serve_tool(
        self,
        msg: dict[str, Any],
        blob: bytes,
        tools: Mapping[str, Callable[..., Any]] | None,
        watch: _Watch,
    ) -> None:
        """Run the host function a tool frame asks for and send its answer back.

        Failures of the call are the caller's data (sent back as an exception), never ours.
        """
        call = _ToolCall.model_validate(msg)
        head: dict[str, Any] = {"op": "tool_reply", "seq": call.seq}
        out = b""
        fn = (tools or {}).get(call.name)
        try:
            if fn is None:
                raise LookupError(f"no tool named {call.name!r} in this run")
            args, kwargs = transfer.loads_untrusted(blob)
            if not isinstance(args, tuple) or not isinstance(kwargs, dict):
                raise TypeError("tool arguments must be (tuple, dict)")
            out = transfer.dumps(fn(*args, **kwargs), self.limits.max_transfer_bytes)
            head["status"] = "ok"
        except Exception as exc:
            text = str(exc.args[0]) if len(exc.args) == 1 else str(exc)  # KeyError('k'): k
            head.update(status="error", type=type(exc).__name__, message=text[:2000])
            out = b""
        channel = self._worker.channel
        channel.settimeout(max(watch.remaining(), 0.05))  # a worker that stops reading: killed
        try:
            channel.sendall(b"".join(encode(head, out)))
        finally:
            channel.setblocking(False)

    # -- results ---------------------------------------------------------------------------

    def _trace(self, ex: _Exchange) -> Trace | str | None:
        """The trace the worker sent with its reply, or why there is none.

        A trace that is not what the schema allows is a protocol violation: the worker is
        killed, as for any other forged reply.
        """
        r = ex.reply
        if r is None or (r.trace is None and r.trace_error is None):
            return None
        if r.trace is None or not 0 < r.trace <= len(ex.blob):
            return r.trace_error or "the worker sent no trace"
        # the trace is the blob's tail (after a call's returned value)
        packed, ex.blob = ex.blob[-r.trace :], ex.blob[: -r.trace]
        limit = self.limits.max_transfer_bytes
        inflate = zlib.decompressobj()
        try:
            raw = inflate.decompress(packed, limit)
            if inflate.unconsumed_tail or not inflate.eof:
                return f"the trace is larger than {limit} bytes (Limits.max_transfer_bytes)"
            return Trace.from_json(raw)
        except (zlib.error, ProtocolError) as exc:
            self._state = SessionState.DEAD
            self._worker.kill()
            self._worker.wait_exited(_EXIT_WAIT)
            self._bury()
            ex.reply, ex.killed = None, "protocol"
            ex.death = f"the worker sent a malformed trace ({str(exc)[:200]}); it was killed"
            return None

    def _result(self, ex: _Exchange, recorded: Trace | str | None = None) -> RunResult:
        status: RunStatus
        error: ErrorInfo | None = None
        value: str | None = None
        lim = self.limits
        if ex.reply is not None:
            r = ex.reply
            if r.status == "timeout" and r.interrupt == "signal" and ex.interrupted is None:
                # a SIGINT the host did not send for a limit: Session.interrupt()
                status = "error"
                error = ErrorInfo(
                    type="KeyboardInterrupt",
                    message="interrupted",
                    traceback=r.error.traceback if r.error else "",
                )
            elif r.status == "timeout":
                which = "cpu" if r.interrupt == "cpu" else (ex.interrupted or "wall")
                status, error = "timeout", _time_limit(which, lim, alive=True)
                if r.error is not None:
                    error = error.model_copy(update={"traceback": r.error.traceback})
            elif r.status in ("ok", "error", "memory"):
                status, value, error = r.status, r.value, r.error
                if status == "memory" and error is None:
                    error = ErrorInfo(type="MemoryError", message="out of memory")
            else:
                status = "sandbox_error"
                error = ErrorInfo(type="SandboxError", message=r.detail or f"worker: {r.status}")
        elif ex.killed in ("cpu", "wall"):
            status, error = "timeout", _time_limit(ex.killed, lim, alive=False)
        elif ex.oom:
            status = "memory"
            error = ErrorInfo(
                type="OutOfMemory",
                message=(
                    f"the session exceeded its memory limit ({lim.memory_mb} MB + "
                    f"{lim.disk_mb} MB of files) and was killed; the session is dead"
                ),
            )
        else:
            status = "killed"
            kind = "ProtocolViolation" if ex.killed == "protocol" else "WorkerDied"
            error = ErrorInfo(type=kind, message=f"{ex.death}; the session is dead")
        return RunResult(
            status=status,
            stdout=ex.stdout,
            stderr=ex.stderr,
            value=value,
            error=error,
            cpu_seconds=round(ex.cpu, 6),
            wall_seconds=round(ex.wall, 6),
            peak_memory_mb=None if ex.peak_mb is None else round(ex.peak_mb, 3),
            session_alive=self._state is not SessionState.DEAD,
            trace=recorded if isinstance(recorded, Trace) else None,
            trace_error=recorded if isinstance(recorded, str) else None,
        )


class _Watch:
    """The time limits of one request: a soft interrupt first, the hard kill ``grace`` later."""

    def __init__(self, limits: Limits, start: float) -> None:
        self._lim = limits
        self._deadline = start + limits.wall_seconds
        self._cpu_hard: float | None = None
        self.limit: str | None = None  # which limit was hit: "cpu" or "wall"

    def remaining(self) -> float:
        """Seconds until the current deadline (the soft one, then the hard one)."""
        return self._deadline - time.monotonic()

    def wait(self) -> float:
        """How long to wait for I/O before checking again (CPU time is polled)."""
        return max(0.0, min(self._deadline - time.monotonic(), _POLL))

    def check(self, cpu: float) -> Literal["interrupt", "kill"] | None:
        now, lim = time.monotonic(), self._lim
        if self.limit is None:
            if now >= self._deadline:
                self.limit = "wall"
            # the worker's own CPU timer fires first; this also counts its children
            elif cpu >= lim.cpu_seconds + _POLL:
                self.limit = "cpu"
            else:
                return None
            self._deadline, self._cpu_hard = now + lim.grace_seconds, cpu + lim.grace_seconds
            return "interrupt"
        if now >= self._deadline or (self._cpu_hard is not None and cpu >= self._cpu_hard):
            return "kill"
        return None


def _discard(fd: int) -> None:
    """Read and drop whatever a non-blocking descriptor holds now."""
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, _READ_CHUNK):
            pass


def _journaled(result: RunResult) -> dict[str, Any]:
    """A result as the journal keeps it: the trace by digest (it can be re-recorded)."""
    data = result.model_dump(mode="json", exclude={"trace", "returned"})
    if result.trace is not None:
        data["trace_sha256"] = digest(result.trace.to_json())
    return data


def _trace_config(trace: TraceConfig | Mode) -> TraceConfig:
    return trace if isinstance(trace, TraceConfig) else TraceConfig(mode=trace)


def _time_limit(which: str, lim: Limits, *, alive: bool) -> ErrorInfo:
    what = (
        f"CPU time limit of {lim.cpu_seconds:g} s"
        if which == "cpu"
        else (f"wall-clock limit of {lim.wall_seconds:g} s")
    )
    if alive:
        return ErrorInfo(
            type="TimeLimitExceeded",
            message=(
                f"{what} exceeded: the run was interrupted with KeyboardInterrupt; "
                "the session and its state are intact"
            ),
        )
    return ErrorInfo(
        type="TimeLimitExceeded",
        message=(
            f"{what} exceeded and the code ignored the interrupt: the worker was killed "
            f"{lim.grace_seconds:g} s later; the session is dead"
        ),
    )
