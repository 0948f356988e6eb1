"""tracebox: an execution-grounded runtime for code written by language models.

Names are imported on first use: the sandbox's template process imports this package too,
and must not pay for (or hand every worker a copy of) pydantic and the host-side modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracebox._lazy import lazy_names
from tracebox.errors import (
    CheckpointError,
    CheckpointLost,
    CheckpointRefused,
    IsolationUnavailable,
    NameNotFound,
    ProtocolError,
    RuntimeClosed,
    SandboxError,
    SessionBusy,
    SessionClosed,
    SessionDead,
    SessionError,
    TraceboxError,
    TransferError,
    UnpicklableValue,
    ValueTooLarge,
)

if TYPE_CHECKING:
    from tracebox.journal.errors import JournalError
    from tracebox.session.checkpoint import Checkpoint
    from tracebox.session.runtime import AsyncRuntime, AsyncSession, Runtime
    from tracebox.session.session import Session
    from tracebox.trace.config import TraceConfig
    from tracebox.types import (
        CallResult,
        ErrorInfo,
        Limits,
        RunResult,
        RunStatus,
        SessionState,
        Trial,
    )

__version__ = "0.1.0"

_LAZY = {
    "AsyncRuntime": "tracebox.session.runtime",
    "AsyncSession": "tracebox.session.runtime",
    "Runtime": "tracebox.session.runtime",
    "Session": "tracebox.session.session",
    "JournalError": "tracebox.journal.errors",
    "Checkpoint": "tracebox.session.checkpoint",
    "TraceConfig": "tracebox.trace.config",
    "CallResult": "tracebox.types",
    "ErrorInfo": "tracebox.types",
    "Limits": "tracebox.types",
    "RunResult": "tracebox.types",
    "RunStatus": "tracebox.types",
    "SessionState": "tracebox.types",
    "Trial": "tracebox.types",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)

__all__ = [
    "AsyncRuntime",
    "AsyncSession",
    "CallResult",
    "Checkpoint",
    "CheckpointError",
    "CheckpointLost",
    "CheckpointRefused",
    "ErrorInfo",
    "IsolationUnavailable",
    "JournalError",
    "Limits",
    "NameNotFound",
    "ProtocolError",
    "RunResult",
    "RunStatus",
    "Runtime",
    "RuntimeClosed",
    "SandboxError",
    "Session",
    "SessionBusy",
    "SessionClosed",
    "SessionDead",
    "SessionError",
    "SessionState",
    "TraceConfig",
    "TraceboxError",
    "TransferError",
    "Trial",
    "UnpicklableValue",
    "ValueTooLarge",
]
