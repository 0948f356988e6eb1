"""Typed models shared by the library, the worker protocol and (later) the server and client."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from tracebox.trace.model import Trace

__all__ = [
    "CallResult",
    "ErrorInfo",
    "Limits",
    "RunResult",
    "RunStatus",
    "SessionState",
    "Trial",
]

RunStatus = Literal["ok", "error", "timeout", "memory", "killed", "sandbox_error"]
"""How a run ended.

- ``ok``: the code ran to completion.
- ``error``: user code raised (the exception is in ``RunResult.error``), including syntax errors.
- ``timeout``: the CPU or wall limit was reached.
- ``memory``: the memory limit was reached (``MemoryError`` or the cgroup's OOM killer).
- ``killed``: the worker died of something else (a signal, ``os._exit``, a crash).
- ``sandbox_error``: the runtime failed, not the program.
"""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Limits(_Frozen):
    """Resource limits of a session: per-run limits apply to each run, the rest to the worker."""

    cpu_seconds: float = Field(10.0, gt=0)
    """CPU time one run may use (user + system, all of the session's processes)."""
    wall_seconds: float = Field(30.0, gt=0)
    """Wall-clock time one run may take; a guard behind the CPU limit."""
    session_cpu_seconds: float = Field(3600.0, gt=0)
    """CPU time each process of the session may use over its life (RLIMIT_CPU)."""
    grace_seconds: float = Field(1.0, ge=0.05)
    """After the soft interrupt (KeyboardInterrupt), how long before the worker is killed."""
    memory_mb: int = Field(512, ge=32)
    """Address space of each process, and (with cgroups) memory of the whole session."""
    disk_mb: int = Field(64, ge=1)
    """Size of the private working directory (tmpfs, shared with /tmp)."""
    max_processes: int = Field(64, ge=1)
    """Processes and threads the session may have at once."""
    max_open_files: int = Field(256, ge=16)
    """File descriptors per process."""
    max_output_bytes: int = Field(1 << 20, ge=0)
    """Bytes of stdout and of stderr kept per run; the rest is counted and marked."""
    max_transfer_bytes: int = Field(256 << 20, ge=1)
    """Largest pickled value that ``put``/``get`` will move."""
    max_value_chars: int = Field(10_000, ge=16)
    """Longest ``repr`` of a run's last expression kept in ``RunResult.value``."""
    max_checkpoints: int = Field(16, ge=0)
    """Checkpoints a session may hold at once."""
    checkpoint_memory_mb: int = Field(512, ge=0)
    """Memory the session's checkpoints may hold between them: pages a checkpoint no longer
    shares with the live session (copy-on-write). A new checkpoint is refused above it; the
    session's cgroup memory limit grows by this much to make room for them."""

    def spawn_key(self) -> tuple[int, int, int, int, float, int]:
        """The limits fixed when a worker starts; workers are pooled by this key."""
        return (
            self.memory_mb,
            self.disk_mb,
            self.max_processes,
            self.max_open_files,
            self.session_cpu_seconds,
            self.checkpoint_memory_mb,
        )


class ErrorInfo(_Frozen):
    """What went wrong in a run, in terms of the user's code."""

    type: str
    """Exception type name (``ZeroDivisionError``), or the runtime's name for the event."""
    message: str
    traceback: str = ""
    """Formatted traceback limited to user code."""


def _trace_in(value: Any) -> Trace | None:
    if value is None or isinstance(value, Trace):
        return value
    return Trace.from_wire(value)  # untrusted wire data: validated strictly


TraceField = Annotated[
    Trace | None,
    BeforeValidator(_trace_in),
    PlainSerializer(
        lambda t: None if t is None else t.to_wire(), return_type=dict[str, Any] | None
    ),
]
"""A ``Trace`` in a pydantic model: ``to_wire()`` JSON out, validated ``from_wire`` in."""


class RunResult(_Frozen):
    """The outcome of one ``Session.run``."""

    status: RunStatus
    stdout: str = ""
    stderr: str = ""
    value: str | None = None
    """``repr`` of the last expression, as a notebook cell shows it, or None."""
    error: ErrorInfo | None = None
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_memory_mb: float | None = None
    """High-water mark of the session's memory during the run (None when unmeasurable)."""
    session_alive: bool = True
    """False when the run ended the worker; the session is then dead."""
    exit_signal: str | None = None
    """For ``killed``: the signal the worker died of (``SIGKILL``, ``SIGSEGV`` ...), when the
    runtime did not send it: the program itself or another of its processes, a limit the
    program lowered, or something outside the sandbox."""
    trace: TraceField = None
    """The recording of a run made with ``trace=``: partial (with ``error`` set to the
    ``KeyboardInterrupt``) when a time limit interrupted it; None when the run was not
    traced, or the worker died before it could send the recording."""
    trace_error: str | None = None
    """Why a traced run has no trace (it was too large to send, or did not fit in memory)."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class CallResult(RunResult):
    """The outcome of one ``Session.call``: a run whose ``value`` is the returned object's
    repr, and whose ``returned`` is a copy of it (plain data only)."""

    returned: Any = None


class Trial(_Frozen):
    """The outcome of ``Session.trial``: cells and calls run in a throwaway copy of the
    session, which itself is left as it was.

    ``runs`` and ``calls`` hold one result per step the copy finished, in order; their
    ``stdout``/``stderr`` are empty (the trial's output is here, as one stream) and their
    CPU and wall times are the copy's own measure of the step."""

    status: RunStatus
    """How the copy ended: ``ok`` if it finished every step it was to run (whatever each
    step's own status); else ``timeout``, ``memory``, ``killed`` or ``sandbox_error``, as for
    a run, in the step after the last one in ``runs``/``calls``."""
    runs: tuple[RunResult, ...] = ()
    calls: tuple[CallResult, ...] = ()
    error: ErrorInfo | None = None
    """Why the copy ended early, when it did."""
    stdout: str = ""
    stderr: str = ""
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_memory_mb: float | None = None
    session_alive: bool = True
    """False only when the trial ended the session's own worker (a hard time limit)."""
    exit_signal: str | None = None
    """For ``killed``: the signal the copy (or the worker) died of."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class SessionState(enum.Enum):
    READY = "ready"
    RUNNING = "running"
    DEAD = "dead"
    CLOSED = "closed"
