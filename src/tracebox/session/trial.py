"""The host's side of a trial (``Session.trial``; the sandbox's side is ``worker.trial``):
the request, and the ``Trial`` made of the reply.

The steps' replies are written by the copy, which runs user code: each is validated as a
reply would be, and one that is not what a reply may be ends the trial there as a protocol
violation of the copy (the session's worker, which only relayed it, is not at fault).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from tracebox.errors import ProtocolError
from tracebox.session import transfer
from tracebox.session.channel import Exchange, Reply
from tracebox.session.process import describe_status, signal_name
from tracebox.session.results import call_result_of, result_of, unpack_trace
from tracebox.types import CallResult, ErrorInfo, Limits, RunResult, RunStatus, Trial

__all__ = ["Call", "request", "trial_of"]

Call = tuple[str, tuple[Any, ...], dict[str, Any]]
"""A function of the session's namespace to call: name, positional and keyword arguments."""


def request(
    cells: Sequence[str],
    calls: Sequence[Call],
    *,
    stateful: bool,
    limits: Limits,
    trace: dict[str, Any] | None,
) -> tuple[dict[str, Any], bytes]:
    """The trial's request frame and its blob (the calls' pickled arguments, end to end)."""
    steps: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    common: dict[str, Any] = {"max_value_chars": limits.max_value_chars}
    if trace is not None:
        common["trace"] = trace
    if isinstance(cells, str):
        raise TypeError("a trial's cells are a list of code strings: for one, pass [code]")
    for code in cells:
        if not isinstance(code, str):
            raise TypeError(f"a trial's cells must be str, not {type(code).__name__}")
        steps.append({**common, "op": "run", "code": code, "stateful": stateful})
    room = limits.max_transfer_bytes
    for call in calls:
        if not (
            isinstance(call, tuple)
            and len(call) == 3
            and isinstance(call[0], str)
            and isinstance(call[1], tuple)
            and isinstance(call[2], dict)
        ):
            raise TypeError(
                f"a trial's calls are (name: str, args: tuple, kwargs: dict), not {call!r:.80}"
            )
        name, args, kwargs = call
        data = transfer.dumps((args, kwargs), room)
        room -= len(data)
        steps.append({**common, "op": "call", "name": name, "blob": len(data)})
        blobs.append(data)
    msg = {
        "op": "trial",
        "steps": steps,
        "max_bytes": limits.max_transfer_bytes,
        "grace_seconds": limits.grace_seconds,
    }
    return msg, b"".join(blobs)


def trial_of(ex: Exchange, steps: list[dict[str, Any]], limits: Limits, *, alive: bool) -> Trial:
    """What the exchange of a trial amounts to."""
    overall = result_of(ex, limits, alive=alive)
    whole: dict[str, Any] = {
        "stdout": overall.stdout,
        "stderr": overall.stderr,
        "cpu_seconds": overall.cpu_seconds,
        "wall_seconds": overall.wall_seconds,
        "peak_memory_mb": overall.peak_memory_mb,
        "session_alive": alive,
    }
    r = ex.reply
    if r is None or r.status != "ok" or r.steps is None:  # the worker itself failed
        status: RunStatus = overall.status if overall.status != "ok" else "sandbox_error"
        return Trial(status=status, error=overall.error, exit_signal=overall.exit_signal, **whole)
    runs: list[RunResult] = []
    calls: list[CallResult] = []
    at = 0
    broken = r.detail
    stopped = False  # by the copy's own rule: after a cell that failed, or a limit
    for step, head in zip(steps, r.steps, strict=False):
        try:
            reply = Reply.model_validate({**head, "op": "reply", "seq": r.seq})
            size = reply.blob or 0
            if not 0 <= size <= len(ex.blob) - at:
                raise ProtocolError("a step's blob is longer than what was sent")
            one = Exchange(
                reply=reply,
                blob=ex.blob[at : at + size],
                cpu=reply.worker_cpu or 0.0,
                wall=reply.worker_wall or 0.0,
                peak_mb=ex.peak_mb,
                interrupted=ex.interrupted,
            )
            at += size
            recorded = unpack_trace(one, limits.max_transfer_bytes)
        except (ValidationError, ProtocolError) as exc:
            broken = f"the trial's copy sent a malformed reply: {str(exc)[:300]}"
            break
        stopped = reply.status in ("timeout", "memory") or (
            step["op"] == "run" and reply.status != "ok"
        )
        if step["op"] == "run":
            runs.append(result_of(one, limits, alive=True, recorded=recorded))
        else:
            calls.append(call_result_of(step["name"], one, limits, alive=True, recorded=recorded))
    finished = len(runs) + len(calls) == len(steps) or stopped
    status, error, sig = _ending(r, ex, broken, finished=finished)
    return Trial(
        status=status,
        runs=tuple(runs),
        calls=tuple(calls),
        error=error,
        exit_signal=sig,
        **whole,
    )


def _ending(
    r: Reply, ex: Exchange, broken: str | None, *, finished: bool
) -> tuple[RunStatus, ErrorInfo | None, str | None]:
    """How the copy ended: status, error and signal of the trial. ``finished``: it replied
    to every step, or stopped where it should (after a cell that failed, or a limit)."""
    if broken is not None:
        return "killed", ErrorInfo(type="ProtocolViolation", message=broken), None
    code = r.exit_status
    if code == 0 and finished:
        return "ok", None, None
    if ex.oom:
        err = ErrorInfo(type="OutOfMemory", message="the trial's copy ran out of memory: killed")
        return "memory", err, None
    sig = signal_name(code)
    if ex.interrupted is not None and sig == "SIGKILL":  # the worker killed it for the limit
        err = ErrorInfo(
            type="TimeLimitExceeded",
            message=(
                f"the {ex.interrupted} time limit: the trial's copy ignored the interrupt and "
                "was killed; the session is intact"
            ),
        )
        return "timeout", err, None
    why = describe_status(code).replace("the worker", "the trial's copy")
    return "killed", ErrorInfo(type="WorkerDied", message=why), sig
