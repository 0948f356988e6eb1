"""Errors raised by tracebox itself.

Exceptions raised by *user code* are never raised at the caller: they are data in a
:class:`~tracebox.types.RunResult`. Everything below is about the runtime.

    TraceboxError
    ├── SandboxError                  a worker could not be started or confined
    │   └── IsolationUnavailable      a confinement layer is missing on this machine (fails closed)
    ├── ProtocolError                 a worker sent something malformed or oversized
    ├── SessionError
    │   ├── SessionDead               the worker died (hard kill, crash); the session is unusable
    │   ├── SessionClosed             the session was closed by its owner
    │   ├── SessionBusy               a second call arrived while a run was in progress
    │   └── CheckpointError           a checkpoint could not be taken or restored
    │       ├── CheckpointRefused     the session's state cannot be snapshot faithfully, or a
    │       │                         checkpoint limit (count, memory) would be exceeded
    │       └── CheckpointLost        the checkpoint was released, or its snapshot is gone
    ├── TransferError (ValueError)    put/get of a value failed
    │   ├── UnpicklableValue          the value cannot be pickled (or unpickled) on its way
    │   ├── ValueTooLarge             the pickled value exceeds Limits.max_transfer_bytes
    │   └── NameNotFound (KeyError)   get() of a name the session does not define
    ├── RuntimeClosed                 the Runtime was closed
    ├── JournalError                  the journal cannot be opened or written (tracebox.journal)
    ├── EndOfTrace (IndexError)       a trace cursor moved past either end of its trace
    └── LocalNotBound (KeyError)      a trace cursor was asked for a local not bound there

Control signals are BaseExceptions, not errors, and live beside what raises them:
``tracebox.trace.TraceBudgetExceeded`` stops user code when a trace budget runs out.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointLost",
    "CheckpointRefused",
    "IsolationUnavailable",
    "NameNotFound",
    "ProtocolError",
    "RuntimeClosed",
    "SandboxError",
    "SessionBusy",
    "SessionClosed",
    "SessionDead",
    "SessionError",
    "TraceboxError",
    "TransferError",
    "UnpicklableValue",
    "ValueTooLarge",
]


class TraceboxError(Exception):
    """Root of every error the runtime raises."""


class SandboxError(TraceboxError, RuntimeError):
    """A worker could not be started or confined."""


class IsolationUnavailable(SandboxError):
    """A required isolation layer is missing; nothing runs unconfined."""


class ProtocolError(TraceboxError):
    """The worker broke the wire protocol (malformed, oversized or unexpected frame)."""


class SessionError(TraceboxError):
    """A session cannot serve the request."""


class SessionDead(SessionError):
    """The session's worker is gone; create a new session."""


class SessionClosed(SessionError):
    """The session was closed."""


class SessionBusy(SessionError):
    """A session runs one request at a time."""


class TransferError(TraceboxError, ValueError):
    """A value could not be passed into or out of a session."""


class UnpicklableValue(TransferError):
    """The value cannot make the trip (pickling or safe unpickling failed)."""


class ValueTooLarge(TransferError):
    """The pickled value is larger than the session allows."""


class NameNotFound(TransferError, KeyError):
    """The session's namespace has no such name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(SessionError):
    """A checkpoint could not be taken, restored or forked from."""


class CheckpointRefused(CheckpointError):
    """The session cannot be checkpointed now: extra threads, or a limit would be exceeded."""


class CheckpointLost(CheckpointError):
    """The checkpoint was released, belongs to another session, or its snapshot is gone."""


class RuntimeClosed(TraceboxError):
    """The runtime was closed; start a new one."""
