"""Reading a journal: connections that never write, events, per-session summaries."""

from __future__ import annotations

import datetime
import json
import sqlite3
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tracebox.journal.model import Event, SessionStatus, SessionSummary

__all__ = ["connect_read", "read_events", "summarize_sessions"]

_COLUMNS = "seq, session, kind, at, data, blob, prev_hash, hash"
_BATCH = 256


def connect_read(path: str) -> sqlite3.Connection:
    """A read-only connection: it sees every committed row, the WAL's included, and never
    checkpoints or rewrites the file (which a verifier must not touch)."""
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA query_only=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def to_event(row: tuple[Any, ...]) -> Event:
    seq, session, kind, at, data, blob, prev_hash, hash_ = row
    return Event(
        seq=seq,
        session=session,
        kind=kind,
        at=at,
        data=json.loads(data),
        blob=None if blob is None else bytes(blob),
        prev_hash=bytes(prev_hash),
        hash=bytes(hash_),
    )


def read_events(conn: sqlite3.Connection, session: str | None) -> Iterator[Event]:
    if session is None:
        cur = conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq")
    else:
        cur = conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE session = ? ORDER BY seq", (session,)
        )
    while rows := cur.fetchmany(_BATCH):
        for row in rows:
            yield to_event(row)


@dataclass
class _Tally:
    first_seq: int
    last_seq: int = 0
    events: int = 0
    runs: int = 0
    failed: int = 0
    parent: str | None = None
    created: int | None = None
    closed: int | None = None
    dead: bool = False


def _loads(data: str) -> dict[str, Any]:
    """A row's data, or {} if it is not a JSON object (an edited row: ``verify`` says so)."""
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _when(at: int | None) -> datetime.datetime | None:
    return None if at is None else datetime.datetime.fromtimestamp(at / 1e9, tz=datetime.UTC)


def summarize_sessions(conn: sqlite3.Connection) -> list[SessionSummary]:
    tallies: dict[str, _Tally] = {}
    cur = conn.execute("SELECT seq, session, kind, at, data FROM events WHERE seq > 0 ORDER BY seq")
    while rows := cur.fetchmany(_BATCH):
        for seq, session, kind, at, data in rows:
            t = tallies.get(session)
            if t is None:
                t = tallies[session] = _Tally(first_seq=seq)
            t.events += 1
            t.last_seq = seq
            if kind == "created":
                t.created = at
                parent = _loads(data).get("parent")
                t.parent = parent if isinstance(parent, str) else None
            elif kind in ("run", "call"):
                t.runs += 1
                result = _loads(data).get("result") or {}
                if result.get("status") != "ok":
                    t.failed += 1
                t.dead = result.get("session_alive") is False
            elif kind == "restore":  # a checkpoint outlives the worker it was taken from
                t.dead = False
            elif kind == "close":
                t.closed = at
    out = []
    for sid, t in tallies.items():
        status: SessionStatus = "closed" if t.closed is not None else "dead" if t.dead else "open"
        out.append(
            SessionSummary(
                id=sid,
                events=t.events,
                runs=t.runs,
                failed_runs=t.failed,
                parent=t.parent,
                created=_when(t.created),
                closed=_when(t.closed),
                status=status,
                first_seq=t.first_seq,
                last_seq=t.last_seq,
            )
        )
    return out
