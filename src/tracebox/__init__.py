"""tracebox: an execution-grounded runtime for code written by language models."""

from tracebox.errors import (
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
from tracebox.session.runtime import AsyncRuntime, AsyncSession, Runtime
from tracebox.session.session import Session
from tracebox.types import ErrorInfo, Limits, RunResult, RunStatus, SessionState

__version__ = "0.1.0"

__all__ = [
    "AsyncRuntime",
    "AsyncSession",
    "ErrorInfo",
    "IsolationUnavailable",
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
    "TraceboxError",
    "TransferError",
    "UnpicklableValue",
    "ValueTooLarge",
]
