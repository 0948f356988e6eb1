"""What the host makes of an exchange with a worker: the caller's ``RunResult``, the trace
that came with it, and how results are journaled."""

from __future__ import annotations

import zlib
from typing import Any

from tracebox.errors import ProtocolError, TransferError
from tracebox.session import transfer
from tracebox.session.channel import Exchange
from tracebox.session.journaling import digest
from tracebox.trace.config import TraceConfig
from tracebox.trace.model import Trace
from tracebox.trace.settings import Mode
from tracebox.types import CallResult, ErrorInfo, Limits, RunResult, RunStatus

__all__ = [
    "call_result_of",
    "journaled",
    "result_of",
    "trace_config",
    "unpack_trace",
]


def unpack_trace(ex: Exchange, limit: int) -> Trace | str | None:
    """The trace the worker sent with its reply (the blob's tail, after a call's returned
    value, which is left in ``ex.blob``), or why there is none. A malformed trace raises
    ``ProtocolError``; one that inflates past ``limit`` bytes is refused unread."""
    r = ex.reply
    if r is None or (r.trace is None and r.trace_error is None):
        return None
    if r.trace is None or not 0 < r.trace <= len(ex.blob):
        return r.trace_error or "the worker sent no trace"
    packed, ex.blob = ex.blob[-r.trace :], ex.blob[: -r.trace]
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(packed, limit)
    except zlib.error as exc:
        raise ProtocolError(f"the trace does not inflate: {exc}") from None
    if inflate.unconsumed_tail or not inflate.eof:
        return f"the trace is larger than {limit} bytes (Limits.max_transfer_bytes)"
    return Trace.from_json(raw)


def result_of(
    ex: Exchange, limits: Limits, *, alive: bool, recorded: Trace | str | None = None
) -> RunResult:
    """What a request's exchange amounts to, as the caller sees it."""
    status: RunStatus
    error: ErrorInfo | None = None
    value: str | None = None
    lim = limits
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
        exit_signal=ex.exit_signal if status == "killed" else None,
        status=status,
        stdout=ex.stdout,
        stderr=ex.stderr,
        value=value,
        error=error,
        cpu_seconds=round(ex.cpu, 6),
        wall_seconds=round(ex.wall, 6),
        peak_memory_mb=None if ex.peak_mb is None else round(ex.peak_mb, 3),
        session_alive=alive,
        trace=recorded if isinstance(recorded, Trace) else None,
        trace_error=recorded if isinstance(recorded, str) else None,
    )


def call_result_of(
    name: str, ex: Exchange, limits: Limits, *, alive: bool, recorded: Trace | str | None = None
) -> CallResult:
    """What a call's exchange amounts to: the returned value copied if it is plain data
    (``session.transfer``), else an ``UntransferableValue`` error; a function that is not
    there is a ``NameError``."""
    r = ex.reply
    why = None
    if r is not None and r.status == "missing":
        err = ErrorInfo(type="NameError", message=f"name {name!r} is not defined")
        ex.reply = r.model_copy(update={"status": "error", "error": err})
    elif r is not None and r.status == "too_large":
        why = f"a value of {r.size} bytes pickled (Limits.max_transfer_bytes)"
    elif r is not None and r.status == "unpicklable":
        why = f"a value that cannot be pickled ({r.error.message if r.error else '?'})"
    if why is not None:  # the call itself went fine: the result is what's wrong
        ex.reply = r.model_copy(update={"status": "ok"})  # type: ignore[union-attr]
    result = dict(result_of(ex, limits, alive=alive, recorded=recorded))
    if why is None and result["status"] == "ok":
        try:
            return CallResult(**result, returned=transfer.loads_untrusted(ex.blob))
        except TransferError as exc:
            why = str(exc)
    if why is not None:
        error = ErrorInfo(type="UntransferableValue", message=f"{name}() returned {why}")
        result.update(status="error", error=error)
    return CallResult(**result)


def journaled(result: RunResult) -> dict[str, Any]:
    """A result as the journal keeps it: the trace by digest (it can be re-recorded)."""
    data = result.model_dump(mode="json", exclude={"trace", "returned"})
    if result.trace is not None:
        data["trace_sha256"] = digest(result.trace.to_json())
    return data


def trace_config(trace: TraceConfig | Mode) -> TraceConfig:
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
