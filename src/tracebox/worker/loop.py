"""The worker's request loop: the only code between the host's channel and user code.

Runs confined, as PID 1 of the session's pid namespace. One request at a time:
``run`` (a cell), ``call`` (a function of the namespace), ``put``/``get`` (pickled values),
``checkpoint``, ``trial`` (runs and calls in a throwaway fork: ``worker.trial``), ``ping``.
While a request runs, user code may call the host's tools (``worker.tools``).
After every request all other processes in the namespace are killed and reaped, so nothing
user code started outlives it.

Time limits: an ``ITIMER_PROF`` timer (CPU time of this process) and the host's SIGINT (wall
clock, or CPU of the whole session) raise ``KeyboardInterrupt`` in user code, once per
request. Code that swallows it is killed by the host at the hard deadline.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from types import FrameType
from typing import Any, NoReturn

from tracebox.sandbox import _linux as L
from tracebox.worker import protocol, snapshot, tools, trial
from tracebox.worker.cell import CellRunner, bounded_repr, describe


class _Interrupts:
    """Turns the first limit signal of a request into KeyboardInterrupt.

    Outside a request (a late SIGINT from the host racing the reply) signals are ignored, so
    they can never break the loop itself.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.active = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if not self.active or self.reason is not None:
            return
        self.reason = "cpu" if signum == signal.SIGPROF else "signal"
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def armed(self, cpu_seconds: float) -> Any:
        self.reason = None
        for sig in (signal.SIGINT, signal.SIGPROF):
            if signal.getsignal(sig) != self.handler:  # first request, or user code replaced it
                signal.signal(sig, self.handler)
        self.active = True
        signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            self.active = False


_OURS: dict[str, io.TextIOWrapper] = {}


def _fresh_streams() -> None:
    """Point sys.stdout/stderr at fds 1/2, unbuffered (user code may have replaced them)."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = _OURS.get(name)
        if stream is None or stream.closed:
            stream = io.TextIOWrapper(
                io.FileIO(fd, "w", closefd=False),
                encoding="utf-8",
                errors="backslashreplace",
                write_through=True,
            )
            _OURS[name] = stream
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _kill_strays(keep: frozenset[int]) -> None:
    """Kill every process this request left behind, except the snapshots in ``keep``.

    The worker is a child subreaper, so everything its code started is its descendant and
    ends up its child: once ``waitpid`` finds no child, nobody is left. With snapshots to
    spare, ``kill(-1)`` cannot be used; the namespace is listed in /proc instead (if even
    that fails, say for want of descriptors, the host kills what is left by cgroup).
    """
    if not keep:
        while True:
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)  # everyone we may signal but init
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return
    spared = keep | {1, os.getpid()}
    deadline = time.monotonic() + 2.0
    while True:
        with contextlib.suppress(OSError):
            for pid in _live_pids(spared):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.001)


def _live_pids(spared: frozenset[int] | set[int]) -> list[int]:
    """Processes of this namespace that are not ``spared`` and not zombies."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in spared:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            found.append(int(name))
    return found


def _warm() -> dict[str, Any]:
    """A ping takes the whole path of a run (timers, compile, exec) except the cell count: the
    first one, sent before a worker is handed out, faults in the pages every run touches."""
    exec(compile("None", "<ping>", "exec"), {})
    return {"status": "ok"}


class Worker:
    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        self.pid = os.getpid()
        _become_subreaper()
        self.runner = CellRunner()
        self.interrupts = _Interrupts()
        self.reaps = True
        """Kill what a request left running after it (not in a trial's copy: its parent does)."""

    def _guarded(self, msg: dict[str, Any], action: Any) -> dict[str, Any]:
        """Run ``action`` under the request's CPU timer; classify interrupts."""
        start = time.process_time()
        try:
            with self.interrupts.armed(float(msg.get("cpu_seconds", 10.0))):
                reply: dict[str, Any] = action()
        except KeyboardInterrupt as exc:
            if self.interrupts.reason is None:  # user code raised it itself
                reply = {"status": "error", "error": describe(exc)}
            else:  # where the code was when it was stopped
                reply = {
                    "status": "timeout",
                    "interrupt": self.interrupts.reason,
                    "error": describe(exc),
                }
        except MemoryError as exc:
            reply = {"status": "memory", "error": describe(exc)}
        if os.getpid() != self.pid:  # a fork made by user code, back in our code: end it
            os._exit(1)
        _flush()
        if self.reaps:
            self.settle(msg)
        reply["worker_cpu"] = time.process_time() - start
        return reply

    def settle(self, msg: dict[str, Any]) -> None:
        """Kill what the request left running, sparing the snapshots the host listed."""
        _kill_strays(frozenset(int(p) for p in msg.get("keep", ())))

    def run(self, msg: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        _fresh_streams()
        trace = msg.get("trace")
        reply = self._guarded(
            msg,
            lambda: self.runner.run(
                str(msg["code"]),
                stateful=bool(msg.get("stateful", True)),
                max_value_chars=int(msg.get("max_value_chars", 10_000)),
                trace=trace if isinstance(trace, dict) else None,
            ),
        )
        return reply, self._take_trace(reply, int(msg.get("max_bytes", 0)))

    def _take_trace(self, reply: dict[str, Any], budget: int) -> bytes:
        """The last recording, compressed for the reply's blob (noted in ``reply``)."""
        recorded, self.runner.trace = self.runner.trace, None
        if recorded is None:
            return b""
        try:  # JSON compresses about 10x; level 1 is the cheap end of that
            blob = zlib.compress(recorded.to_json(), 1)
        except MemoryError:
            reply["trace_error"] = "the trace did not fit in memory to be sent"
            return b""
        if len(blob) > budget:
            reply["trace_error"] = (
                f"the trace compresses to {len(blob)} bytes, over the "
                f"{budget} left of Limits.max_transfer_bytes"
            )
            return b""
        reply["trace"] = len(blob)
        return blob

    def put(self, msg: dict[str, Any], blob: bytes) -> dict[str, Any]:
        def action() -> dict[str, Any]:
            try:
                value = pickle.loads(blob)
            except Exception as exc:
                return {"status": "error", "error": describe(exc)}
            self.runner.namespace[str(msg["name"])] = value
            return {"status": "ok"}

        return self._guarded(msg, action)

    def get(self, msg: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        out: list[bytes] = []

        def action() -> dict[str, Any]:
            name = str(msg["name"])
            if name not in self.runner.namespace:
                return {"status": "missing"}
            try:
                data = pickle.dumps(self.runner.namespace[name], protocol=5)
            except Exception as exc:
                return {"status": "error", "error": describe(exc)}
            if len(data) > int(msg["max_bytes"]):
                return {"status": "too_large", "size": len(data)}
            out.append(data)
            return {"status": "ok", "size": len(data)}

        reply = self._guarded(msg, action)
        return reply, (out[0] if out and reply["status"] == "ok" else b"")

    def call(self, msg: dict[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes]:
        """Call a function of the namespace with pickled arguments; pickle what it returns."""
        out: list[bytes] = []
        trace = msg.get("trace")

        def action() -> dict[str, Any]:
            fn = self.runner.namespace.get(str(msg["name"]))
            if fn is None:
                return {"status": "missing"}
            try:
                args, kwargs = pickle.loads(blob)
                if isinstance(trace, dict):
                    value = self.runner.recorded(trace, lambda: fn(*args, **kwargs))
                else:
                    value = fn(*args, **kwargs)
            except (KeyboardInterrupt, MemoryError):
                raise
            except BaseException as exc:  # SystemExit too: the function's outcome
                return {"status": "error", "error": describe(exc)}
            shown = bounded_repr(value, int(msg.get("max_value_chars", 10_000)))
            try:
                data = pickle.dumps(value, protocol=5)
            except Exception as exc:
                return {"status": "unpicklable", "value": shown, "error": describe(exc)}
            if len(data) > int(msg["max_bytes"]):
                return {"status": "too_large", "value": shown, "size": len(data)}
            out.append(data)
            return {"status": "ok", "value": shown, "size": len(data)}

        _fresh_streams()
        reply = self._guarded(msg, action)
        value = out[0] if out and reply["status"] == "ok" else b""
        budget = int(msg["max_bytes"]) - len(value)
        return reply, value + self._take_trace(reply, budget)  # the trace, if any, comes last

    def checkpoint(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        """Fork a snapshot of this worker (``worker.snapshot``); None in a restored worker,
        which then announces itself instead of answering the checkpoint request."""
        threads = threading.active_count()
        if threads > 1:
            return {
                "status": "refused",
                "detail": f"{threads} threads are running; a checkpoint is a fork, which keeps "
                "only the calling thread, so it would not be faithful",
            }
        r, w = os.pipe()
        try:
            restored = snapshot.take(w, self.channel)
        except Exception as exc:  # no memory or no process left for the fork
            os.close(r)
            os.close(w)
            return {"status": "error", "error": describe(exc)}
        if restored:
            os.close(r)
            return None
        os.close(w)
        raw = os.read(r, 4)
        os.close(r)
        if len(raw) != 4:
            return {"status": "error", "detail": "the snapshot died before it was ready"}
        return {"status": "ok", "snapshot": struct.unpack("<i", raw)[0]}

    def serve(self) -> NoReturn:
        while True:
            try:
                msg, blob = protocol.recv_blocking(self.channel)
            except (EOFError, OSError):
                os._exit(0)
            op = msg.get("op")
            out_blob = b""
            if op == "run":
                reply, out_blob = self.run(msg)
            elif op == "put":
                reply = self.put(msg, blob)
            elif op == "get":
                reply, out_blob = self.get(msg)
            elif op == "call":
                reply, out_blob = self.call(msg, blob)
            elif op == "trial":
                reply, out_blob = trial.run(self, msg, blob)
            elif op == "ping":
                reply = self._guarded(msg, _warm)
            elif op == "checkpoint":
                made = self.checkpoint(msg)
                if made is None:  # we are a restored worker: say so, and serve
                    self.pid = os.getpid()
                    _become_subreaper()
                    protocol.send(self.channel, {"op": "ready"})
                    continue
                reply = made
            elif op in ("tool_reply", "go"):  # a late tool answer; a restore's repeated go-ahead
                continue
            else:
                os._exit(0)
            if os.getpid() != self.pid:  # a fork of user code that returned into our loop
                os._exit(1)
            head = {"op": "reply", "seq": msg.get("seq")}
            try:
                protocol.send(self.channel, {**reply, **head}, out_blob)
            except (TypeError, ValueError) as exc:  # unserialisable reply: report, don't die
                protocol.send(
                    self.channel, {**head, "status": "sandbox_error", "detail": repr(exc)}
                )
            except OSError:
                os._exit(0)


def _become_subreaper() -> None:
    """Orphans of the code we run come back to us, not to init: see ``_kill_strays``."""
    L.prctl(L.PR_SET_CHILD_SUBREAPER, 1)


def serve(channel: socket.socket) -> NoReturn:
    sys.argv = [""]
    sys.path[:] = [
        "",
        *(p for p in sys.path if p not in ("", "/")),
    ]  # cwd importable, as in Jupyter
    _fresh_streams()
    tools.bind(channel)
    Worker(channel).serve()
