"""What a journal holds and what reading it reports: events, session summaries, verification."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["Event", "Problem", "SessionStatus", "SessionSummary", "VerifyReport"]


def _when(at: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(at / 1e9, tz=datetime.UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the journal, as stored."""

    seq: int
    """Position in the journal: 0 is the genesis row, then 1, 2, ... without gaps."""
    session: str
    """The session it is about ("" for the genesis row)."""
    kind: str
    """``created``, ``run``, ``call``, ``put``, ``get``, ``checkpoint``, ``restore``,
    ``release``, ``fork``, ``close`` (and ``genesis``)."""
    at: int
    """When it was appended: Unix time in nanoseconds (the host's clock)."""
    data: dict[str, Any]
    blob: bytes | None
    """The bytes that came with it: the pickle of a ``put``, the arguments of a ``call``."""
    prev_hash: bytes
    hash: bytes

    @property
    def time(self) -> datetime.datetime:
        return _when(self.at)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


SessionStatus = Literal["open", "closed", "dead"]
"""``closed``: its ``close`` event is in the journal. ``dead``: a run ended its worker and no
``close`` followed. ``open``: neither; it is still in use, or its host stopped without closing
it (a crash), or the journal lost its tail (``verify`` tells that apart)."""


class SessionSummary(_Frozen):
    """One session as the journal tells it."""

    id: str
    events: int
    runs: int
    """``run`` and ``call`` events."""
    failed_runs: int
    """Runs and calls whose status was not ``ok``."""
    parent: str | None
    """The session it was forked from, if any."""
    created: datetime.datetime | None
    closed: datetime.datetime | None
    status: SessionStatus
    first_seq: int
    last_seq: int


class Problem(_Frozen):
    """One thing wrong with a journal; ``seq`` is where, when a row can be named."""

    seq: int | None
    what: str


class VerifyReport(_Frozen):
    """The result of ``Journal.verify()``: ``ok`` when nothing at all is wrong."""

    path: str
    ok: bool
    events: int
    """Rows read, the genesis row included."""
    last_seq: int | None
    head_seq: int | None
    """Where the head record says the chain ends (None: no head record was found)."""
    unpinned: int
    """Rows after the head record: written just before a crash (the head is rewritten after
    each commit) or by another process; the chain covers them but a cut among them would not
    show."""
    keyed: bool
    """Whether rows are HMAC-ed: then editing the chain needs the key, not just write access."""
    integrity: list[str]
    """SQLite's own ``integrity_check`` messages (``["ok"]`` when sound)."""
    problems: list[Problem]

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None

    def describe(self) -> str:
        """One line: what verified, or the first problem."""
        if self.ok:
            return (
                f"chain verified: {self.events} events, seq 0-{self.last_seq}, "
                f"head at {self.head_seq}"
            )
        first = self.problems[0] if self.problems else Problem(seq=None, what="unknown")
        bad = self.first_bad_seq
        where = f"first bad seq {bad}: " if bad is not None else ""
        return f"journal does not verify: {where}{first.what}"
