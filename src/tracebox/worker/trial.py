"""Trials: runs and calls in a throwaway fork of the worker, which stays as it was.

The worker forks; the copy runs the trial's steps (``run`` and ``call`` requests, as the
loop would run them) and writes each reply to a socket of its own, never to the host's
channel; the worker relays the replies once the copy has exited. The worker itself runs no
user code, so its interpreter state is untouched; it then kills what the copy left running,
puts the session's files back if the copy changed them (``snapshot.changed``), and resets
its descriptors' offsets (shared with the copy).

The copy is forked without the interpreter's at-fork hooks (``_linux.fork_bare``; a trial
is refused while the worker has other threads), so it goes on with the session's random
state and costs about 150 page faults less.

The copy runs under one more seccomp filter (``seccomp.protecting_program``): it cannot
signal its worker or the session's snapshots (nor a process group, nor everyone), take a
pidfd of them, or change their limits; it shares their user and pid namespace otherwise.

Limits: the request's CPU time is the whole trial's (each step gets what is left of it), and
so is ``max_bytes`` (each step may send what the steps before it left); a SIGINT from the
host (the wall clock, ``Session.interrupt``) is passed on to the copy, which is killed if it
ignores it for half of ``grace_seconds`` (before the host would kill the worker). A copy that
writes more, or something that is not a frame, is killed and the trial says so.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from tracebox.sandbox import _linux as L
from tracebox.sandbox import seccomp
from tracebox.worker import protocol, snapshot, tools

if TYPE_CHECKING:
    from tracebox.worker.loop import Worker

__all__ = ["run"]

_HEADER_MAX = 1 << 24  # one step's reply header (values and tracebacks are bounded smaller)
_UNCONFINED = "unconfined"  # the copy's only frame when it could not load its filter
_TICK_MS = 50  # how often the worker looks at the time while the copy runs


def run(worker: Worker, msg: dict[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes]:
    """Run the trial ``msg`` describes; the reply, and the steps' blobs end to end."""
    steps = msg.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        return {"status": "sandbox_error", "detail": "a trial needs a list of steps"}, b""
    threads = len(os.listdir("/proc/self/task"))  # all of them, not only threading's
    if threads > 1:
        detail = (
            f"{threads} threads are running; a trial is a fork, which keeps only the calling "
            "thread, so it would not be faithful"
        )
        return {"status": "refused", "detail": detail}, b""
    try:
        guard = _guard(frozenset({os.getpid(), *(int(p) for p in msg.get("keep", ()))}))
    except Exception as exc:  # no filter, no trial: the copy must not run unguarded
        return {"status": "sandbox_error", "detail": f"no filter for the copy: {exc}"}, b""
    at = time.time_ns()
    files, sig, offsets = snapshot.capture_files(), snapshot.signature(), snapshot.capture_offsets()
    ours, theirs = socket.socketpair()
    copy = [0]  # the copy's pid once forked: a SIGINT before that is passed on after
    interrupted = [0.0]  # when the host's SIGINT came

    def forward(signum: int, frame: object) -> None:
        interrupted[0] = interrupted[0] or time.monotonic()
        if copy[0] > 0:
            _signal(copy[0], signal.SIGINT)
        else:
            copy[0] = -1

    def kill_at() -> float | None:
        """A copy that ignores the interrupt is killed here, well before the host would
        kill the worker for it (``grace_seconds`` after the interrupt)."""
        grace = float(msg.get("grace_seconds", 1.0))
        return interrupted[0] + grace / 2 if interrupted[0] else None

    previous = signal.signal(signal.SIGINT, forward)
    try:
        try:
            pid = L.fork_bare()  # one thread: the interpreter's at-fork hooks are not needed
        except OSError as exc:
            ours.close()
            theirs.close()
            return {"status": "sandbox_error", "detail": f"no fork for the trial: {exc}"}, b""
        if pid == 0:
            ours.close()
            _copy(worker, msg, steps, blob, out=theirs, guard=guard)
        theirs.close()
        early, copy[0] = copy[0] < 0, pid
        if early:
            _signal(pid, signal.SIGINT)
        budget = int(msg.get("max_bytes", 1 << 30))
        frames, broken = _collect(ours, pid, budget, len(steps), kill_at)
        _, status = os.waitpid(pid, 0)
    finally:
        signal.signal(signal.SIGINT, previous)
        ours.close()
    worker.settle(msg)
    if snapshot.changed(files, sig, at):
        snapshot.restore_files(files)
    snapshot.restore_offsets(offsets)
    if frames and frames[0][0].get("op") == _UNCONFINED:
        why = frames[0][0].get("detail")
        return {"status": "sandbox_error", "detail": f"the copy could not be confined: {why}"}, b""
    reply: dict[str, Any] = {
        "status": "ok",
        "steps": [{**head, "blob": len(data)} for head, data in frames],
        "exit_status": status,
    }
    if broken is not None:
        reply["detail"] = broken
    return reply, b"".join(data for _, data in frames)


@functools.lru_cache(maxsize=8)
def _guard(pids: frozenset[int]) -> Callable[[], None]:
    """What loads the copy's filter, made once per set of processes to protect."""
    return seccomp.prepare(seccomp.protecting_program(pids))


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _collect(
    sock: socket.socket,
    pid: int,
    max_bytes: int,
    steps: int,
    kill_at: Callable[[], float | None],
) -> tuple[list[tuple[dict[str, Any], bytes]], str | None]:
    """The copy's frames until it exits (at most one per step, their blobs together at most
    ``max_bytes``; killed once past ``kill_at()``); why they were cut short, if they were."""
    reader = protocol.FrameReader(max_header=_HEADER_MAX, max_blob=max_bytes)
    frames: list[tuple[dict[str, Any], bytes]] = []
    size, broken = 0, None
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    sock.setblocking(False)
    reading, exited, killed = True, False, False
    try:
        while True:
            ready = {fd for fd, _ in poller.poll(_TICK_MS)}  # a SIGINT does not end a poll
            exited = exited or pidfd in ready
            when = kill_at()
            if not killed and when is not None and time.monotonic() >= when:
                _signal(pid, signal.SIGKILL)
                killed = True
            while reading:  # what the copy wrote so far (all of it, once it exited)
                try:
                    data = sock.recv(1 << 16)
                except BlockingIOError:
                    break
                try:
                    new = reader.feed(data)
                    frames.extend(new)
                    size += sum(len(b) for _, b in new)
                    if len(frames) > max(steps, 1) or size > max_bytes:
                        raise protocol.FrameError(
                            f"more than its {steps} replies, or over {max_bytes} bytes"
                        )
                except protocol.FrameError as exc:
                    broken = f"the trial's copy broke the protocol: {exc}; it was killed"
                    _signal(pid, signal.SIGKILL)
                if not data or broken is not None:  # only the exit is left to wait for
                    reading = False
                    poller.unregister(sock.fileno())
            if exited:
                return frames, broken
    finally:
        os.close(pidfd)


def _copy(
    worker: Worker,
    msg: dict[str, Any],
    steps: list[dict[str, Any]],
    blob: bytes,
    *,
    out: socket.socket,
    guard: Callable[[], None],
) -> NoReturn:
    """The copy: run each step, send its reply; stop at a cell that fails or a limit."""
    try:
        worker.channel.close()
        try:
            guard()
        except Exception as exc:
            protocol.send(out, {"op": _UNCONFINED, "detail": str(exc)[:500]})
            os._exit(0)
        worker.pid = os.getpid()
        worker.reaps = False  # the worker kills our leftovers once we are gone
        tools.unbind("tools cannot be called in a trial")
        cpu, room = float(msg.get("cpu_seconds", 10.0)), int(msg.get("max_bytes", 1 << 30))
        start = time.process_time()
        view, at = memoryview(blob), 0
        for step in steps:
            size = int(step.get("blob", 0))
            data, at = bytes(view[at : at + size]), at + size
            left = max(0.001, cpu - (time.process_time() - start))
            request = {**step, "cpu_seconds": left, "max_bytes": room}
            t0 = time.monotonic()
            if step.get("op") == "run":
                reply, data = worker.run(request)
            elif step.get("op") == "call":
                reply, data = worker.call(request, data)
            else:
                reply, data = {"status": "sandbox_error", "detail": "unknown step"}, b""
            reply.update(op="step", worker_wall=time.monotonic() - t0)
            protocol.send(out, reply, data)
            room -= len(data)
            status = reply["status"]
            if status in ("timeout", "memory") or (step.get("op") == "run" and status != "ok"):
                break
    except BaseException:  # whatever happens, the copy never returns into the loop
        os._exit(70)
    os._exit(0)
