"""Trials: runs and calls in a throwaway fork of the worker, which stays as it was.

The worker forks; the copy runs the trial's steps (``run`` and ``call`` requests, as the
loop would run them) and writes each reply to a socket of its own, never to the host's
channel; the worker relays the replies once the copy has exited. The worker itself runs no
user code, so its interpreter state is untouched; it then kills what the copy left running,
puts the session's files back if the copy changed them, and resets its descriptors'
offsets (shared with the copy).

Limits: the request's CPU time is the whole trial's (each step gets what is left of it); a
SIGINT from the host (the wall clock, ``Session.interrupt``) is passed on to the copy. The
copy's replies are bounded by the request's ``max_bytes``; a copy that writes more, or
writes something that is not a frame, is killed and the trial says so.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from typing import TYPE_CHECKING, Any, NoReturn

from tracebox.worker import protocol, snapshot, tools

if TYPE_CHECKING:
    from tracebox.worker.loop import Worker

__all__ = ["run"]

_HEADER_MAX = 1 << 24


def run(worker: Worker, msg: dict[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes]:
    """Run the trial ``msg`` describes; the reply, and the steps' blobs end to end."""
    steps = msg.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        return {"status": "sandbox_error", "detail": "a trial needs a list of steps"}, b""
    files, sig, offsets = snapshot.capture_files(), snapshot.signature(), snapshot.capture_offsets()
    ours, theirs = socket.socketpair()
    try:
        pid = os.fork()
    except OSError as exc:
        ours.close()
        theirs.close()
        return {"status": "sandbox_error", "detail": f"no fork for the trial: {exc}"}, b""
    if pid == 0:
        ours.close()
        _copy(worker, msg, steps, blob, theirs)
    theirs.close()
    forward = signal.signal(signal.SIGINT, lambda *_: _signal(pid, signal.SIGINT))
    try:
        frames, broken = _collect(ours, pid, int(msg.get("max_bytes", 1 << 30)))
        _, status, usage = os.wait4(pid, 0)
    finally:
        signal.signal(signal.SIGINT, forward)
        ours.close()
    worker.settle(msg)
    if snapshot.signature() != sig:
        snapshot.restore_files(files)
    snapshot.restore_offsets(offsets)
    heads, blobs = [], []
    for head, data in frames:
        heads.append({**head, "blob": len(data)})
        blobs.append(data)
    reply: dict[str, Any] = {
        "status": "ok",
        "steps": heads,
        "exit_status": status,
        "copy_cpu": usage.ru_utime + usage.ru_stime,
    }
    if broken is not None:
        reply["detail"] = broken
    return reply, b"".join(blobs)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _collect(sock: socket.socket, pid: int, max_bytes: int) -> tuple[list[Any], str | None]:
    """The copy's frames until it exits; why they were cut short, if they were."""
    reader = protocol.FrameReader(max_header=_HEADER_MAX, max_blob=max_bytes)
    frames: list[tuple[dict[str, Any], bytes]] = []
    size, broken = 0, None
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    sock.setblocking(False)
    reading, exited = True, False
    try:
        while True:
            ready = {fd for fd, _ in poller.poll()}
            exited = exited or pidfd in ready
            while reading:  # what the copy wrote so far (all of it, once it exited)
                try:
                    data = sock.recv(1 << 16)
                except BlockingIOError:
                    break
                size += len(data)
                try:
                    if size > max_bytes + _HEADER_MAX:
                        raise protocol.FrameError(f"the trial's replies exceed {max_bytes} bytes")
                    frames.extend(reader.feed(data))
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
    out: socket.socket,
) -> NoReturn:
    """The copy: run each step, send its reply; stop at a cell that fails or a limit."""
    try:
        worker.pid = os.getpid()
        worker.reaps = False  # the worker kills our leftovers once we are gone
        worker.channel.close()
        tools.unbind("tools cannot be called in a trial")
        budget = float(msg.get("cpu_seconds", 10.0))
        start = time.process_time()
        view, at = memoryview(blob), 0
        for step in steps:
            size = int(step.get("blob", 0))
            data, at = bytes(view[at : at + size]), at + size
            left = max(0.001, budget - (time.process_time() - start))
            request = {**step, "cpu_seconds": left, "max_bytes": msg.get("max_bytes", 1 << 30)}
            t0 = time.monotonic()
            if step.get("op") == "run":
                reply, data = worker.run(request)
            elif step.get("op") == "call":
                reply, data = worker.call(request, data)
            else:
                reply, data = {"status": "sandbox_error", "detail": "unknown step"}, b""
            reply.update(op="step", worker_wall=time.monotonic() - t0)
            protocol.send(out, reply, data)
            status = reply["status"]
            if status in ("timeout", "memory") or (step.get("op") == "run" and status != "ok"):
                break
    except BaseException:  # whatever happens, the copy never returns
        os._exit(70)
    os._exit(0)
