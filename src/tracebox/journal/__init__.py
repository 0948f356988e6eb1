"""The journal: every operation on every session, append-only and hash-chained, and replay.

``Runtime(journal="path.db")`` appends one row per event (``created``, ``run``, ``call``,
``put``, ``get``, ``checkpoint``, ``restore``, ``release``, ``fork``, ``close``) to an SQLite
file in WAL mode, and acknowledges an operation only once its row is durable.
``Journal(path).verify()`` (or ``verify(path)``) checks the chain;
``tracebox.journal.replay.replay(path, session_id)`` re-executes a session in a fresh
sandbox and compares every step.

Names are imported on first use: the session layer imports ``Journal``, and replay imports
the session layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracebox._lazy import lazy_names

if TYPE_CHECKING:
    from tracebox.journal._verify import verify
    from tracebox.journal.errors import JournalError
    from tracebox.journal.model import Event, Problem, SessionSummary, VerifyReport
    from tracebox.journal.nondeterminism import Suspect, find_suspects
    from tracebox.journal.replay import FieldDiff, ReplayReport, ReplayStep
    from tracebox.journal.store import Journal

_LAZY = {
    "Event": "tracebox.journal.model",
    "FieldDiff": "tracebox.journal.replay",
    "Journal": "tracebox.journal.store",
    "JournalError": "tracebox.journal.errors",
    "Problem": "tracebox.journal.model",
    "ReplayReport": "tracebox.journal.replay",
    "ReplayStep": "tracebox.journal.replay",
    "SessionSummary": "tracebox.journal.model",
    "Suspect": "tracebox.journal.nondeterminism",
    "VerifyReport": "tracebox.journal.model",
    "find_suspects": "tracebox.journal.nondeterminism",
    "verify": "tracebox.journal._verify",
}

__getattr__, __dir__ = lazy_names(__name__, _LAZY)

__all__ = [
    "Event",
    "FieldDiff",
    "Journal",
    "JournalError",
    "Problem",
    "ReplayReport",
    "ReplayStep",
    "SessionSummary",
    "Suspect",
    "VerifyReport",
    "find_suspects",
    "verify",
]
