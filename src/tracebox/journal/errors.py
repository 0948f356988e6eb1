"""Errors of the journal (a branch of ``TraceboxError``)."""

from __future__ import annotations

from tracebox.errors import TraceboxError

__all__ = ["JournalError"]


class JournalError(TraceboxError):
    """The journal cannot be opened or written: not a tracebox journal, a wrong key, a lost
    tail, a closed journal, or a failed write. An operation whose entry could not be
    written is not acknowledged: the error is raised instead."""
