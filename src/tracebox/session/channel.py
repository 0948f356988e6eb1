"""The host's end of a sandbox's channel: one request at a time, watched to its reply.

A request is a frame (``worker.protocol``); while it runs the host streams the worker's
stdout and stderr, answers tool calls, enforces the time limits (a soft interrupt, then a
kill) and notices the worker's death. Replies are validated: anything a worker may not say
is a protocol violation and the worker is killed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tracebox.session import transfer
from tracebox.session.output import Capture, OutputCallback
from tracebox.session.process import WorkerProcess, describe_status, signal_name
from tracebox.types import ErrorInfo, Limits
from tracebox.worker.protocol import FrameError, FrameReader, encode

__all__ = ["EXIT_WAIT", "Channel", "Exchange", "Reply", "discard"]

_READ_CHUNK = 1 << 16
_POLL = 0.05  # how often CPU time is checked while a request runs
EXIT_WAIT = 2.0


class Reply(BaseModel):
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
    # a trial (``worker.trial``): the steps' replies and the copy's exit status; and, in
    # each step's reply, the blob's length and the step's own CPU and wall time
    steps: list[dict[str, Any]] | None = None
    exit_status: int | None = None
    blob: int | None = None
    worker_cpu: float | None = None
    worker_wall: float | None = None


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    op: Literal["tool"]
    name: str
    seq: int


@dataclass
class Exchange:
    """Everything the host observed while one request ran."""

    reply: Reply | None = None
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
    exit_signal: str | None = None  # the signal the worker died of, when nobody here sent it
    notes: list[str] = field(default_factory=list)


class Channel:
    """Requests to the live worker of one sandbox (shared by the members of a fork family,
    who take turns). Keeps one selector, so a request costs no registration syscalls."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self._seq = itertools.count(1)
        self._sel = selectors.DefaultSelector()
        self._sel.register(worker.channel, selectors.EVENT_READ)
        for fd in (worker.stdout, worker.stderr):
            self._sel.register(fd, selectors.EVENT_READ)
        # the worker's exit: the channel's EOF does not show it once snapshots share it
        self._watched = worker.pidfd
        self._sel.register(worker.pidfd, selectors.EVENT_READ)

    def close(self) -> None:
        self._sel.close()

    def request(
        self,
        msg: dict[str, Any],
        blob: bytes = b"",
        *,
        limits: Limits,
        on_output: OutputCallback | None = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        settle: bool = True,
        replies: int = 1,
    ) -> Exchange:
        """Send one request and watch it until the reply, enforcing ``limits``' time limits.
        ``replies``: how many replies the one reply carries (a trial's steps), each bounded
        as a reply is.

        If the worker dies (or is killed at the hard deadline), ``Exchange.death`` says why
        and the worker is gone; otherwise what the request left running is settled.
        """
        w, lim, ex = self.worker, limits, Exchange()
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
            max_header=(8 * lim.max_value_chars + (1 << 20)) * max(1, replies),
            max_blob=lim.max_transfer_bytes,
        )
        pending = self._send_some(memoryview(b"".join(encode(msg, blob))), ex)  # usually all
        sel, caps = self._sel, {w.stdout: out, w.stderr: err}
        if pending:
            sel.modify(w.channel, selectors.EVENT_READ | selectors.EVENT_WRITE)
        watch = Watch(lim, t0)
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
            w.kill()
            w.wait_exited(EXIT_WAIT)
            if ex.killed is None:
                status = w.exit_status(w.ns_pid, EXIT_WAIT)
                ex.death, ex.exit_signal = describe_status(status), signal_name(status)
        elif settle:
            w.settle()
        for fd, cap in ((w.stdout, out), (w.stderr, err)):
            self._drain(fd, cap, None)
        ex.stdout, ex.stderr = out.text(), err.text()
        ex.cpu, ex.wall = max(0.0, w.cpu_seconds() - cpu0), time.monotonic() - t0
        ex.peak_mb = w.peak_memory_mb()
        ex.oom = w.oom_kills() > oom0
        return ex

    def _send_some(self, data: memoryview, ex: Exchange) -> memoryview:
        try:
            return data[self.worker.channel.send(data) :]
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
        ex: Exchange,
        seq: int,
        tools: Mapping[str, Callable[..., Any]] | None,
        watch: Watch,
    ) -> None:
        w = self.worker
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
                    ex.reply, ex.blob = Reply.model_validate(msg), blob
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
        watch: Watch,
    ) -> None:
        """Run the host function a tool frame asks for and send its answer back.

        Failures of the call are the caller's data (sent back as an exception), never ours.
        """
        call = ToolCall.model_validate(msg)
        head: dict[str, Any] = {"op": "tool_reply", "seq": call.seq}
        out = b""
        fn = (tools or {}).get(call.name)
        try:
            if fn is None:
                raise LookupError(f"no tool named {call.name!r} in this run")
            args, kwargs = transfer.loads_untrusted(blob)
            if not isinstance(args, tuple) or not isinstance(kwargs, dict):
                raise TypeError("tool arguments must be (tuple, dict)")
            out = transfer.dumps(fn(*args, **kwargs), watch.limits.max_transfer_bytes)
            head["status"] = "ok"
        except Exception as exc:
            text = str(exc.args[0]) if len(exc.args) == 1 else str(exc)  # KeyError('k'): k
            head.update(status="error", type=type(exc).__name__, message=text[:2000])
            out = b""
        channel = self.worker.channel
        channel.settimeout(max(watch.remaining(), 0.05))  # a worker that stops reading: killed
        try:
            channel.sendall(b"".join(encode(head, out)))
        finally:
            channel.setblocking(False)


class Watch:
    """The time limits of one request: a soft interrupt first, the hard kill ``grace`` later."""

    def __init__(self, limits: Limits, start: float) -> None:
        self._lim = self.limits = limits
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


def discard(fd: int) -> None:
    """Read and drop whatever a non-blocking descriptor holds now."""
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, _READ_CHUNK):
            pass
