"""Verifying a journal: SQLite's integrity, the hash chain, the head record.

What is detected:

- **An edited row** (data, blob, session, kind, time or seq): its hash no longer matches
  its content (``content does not match its hash``), at that row's seq.
- **A deleted or inserted row in the middle**: a gap in seq, or a ``prev_hash`` that is not
  the previous row's hash, at the first seq affected.
- **A cut tail** (rows removed from the end, or a journal copied without its WAL): the head
  record says the chain reaches further than the journal does.
- **A torn or truncated file**: SQLite's ``integrity_check`` fails, or rows cannot be read;
  a torn WAL write loses only a commit that was never acknowledged (SQLite checksums WAL
  frames and ignores a torn tail), so it is not an error.

What is not:

- **A rewritten chain** (rows edited and every later hash and the head recomputed) in a
  journal without a key: anyone who can write the file can do that. With a key (an HMAC
  chain) it needs the key. Against someone who holds the key too, publish ``head_seq`` and
  the head hash somewhere they cannot write.
- **A cut tail together with a rewritten head record**, for the same reason.
- **Rows committed just before a crash, after the last head rewrite** (``unpinned``): they
  are chained, but if they were cut the head would not know.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from tracebox.journal import _chain
from tracebox.journal._chain import GENESIS, ZERO
from tracebox.journal.model import Problem, VerifyReport
from tracebox.journal.read import connect_read

__all__ = ["verify"]


def verify(path: str | os.PathLike[str], *, key: bytes | None = None) -> VerifyReport:
    """Check the journal at ``path``; never raises for what is wrong with the file."""
    path = os.fspath(path)
    problems: list[Problem] = []
    # the head is read before the rows: rows committed meanwhile only make the journal longer
    head: _chain.Head | None = None
    head_broken = False
    try:
        head = _chain.read_head(path)
    except (ValueError, OSError) as exc:
        head_broken = True
        problems.append(Problem(seq=None, what=f"head record: {exc}"))
    walk = _Walk(key)
    integrity: list[str] = []
    if not os.path.isfile(path):
        problems.append(Problem(seq=None, what=f"no journal file at {path}"))
    else:
        try:
            conn = connect_read(path)
        except sqlite3.Error as exc:
            problems.append(Problem(seq=None, what=f"not a readable SQLite file: {exc}"))
        else:
            try:
                integrity = _integrity(conn, problems)
                walk.run(conn, head)
            except sqlite3.DatabaseError as exc:
                seq = walk.expected if walk.expected > 0 else None
                problems.append(
                    Problem(seq=seq, what=f"the file is damaged; rows cannot be read: {exc}")
                )
            finally:
                conn.close()
    problems.extend(walk.problems)
    if walk.rows and not head_broken:
        problems.extend(_check_head(path, head, walk))
    problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
    last = walk.expected - 1 if walk.rows else None
    return VerifyReport(
        path=path,
        ok=not problems,
        events=walk.rows,
        last_seq=last,
        head_seq=head.seq if head is not None else None,
        unpinned=max(0, last - head.seq) if last is not None and head is not None else 0,
        keyed=walk.keyed,
        integrity=integrity,
        problems=problems,
    )


def _integrity(conn: sqlite3.Connection, problems: list[Problem]) -> list[str]:
    messages = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    if messages != ["ok"]:
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        problems.append(
            Problem(seq=None, what=f"SQLite integrity_check failed: {messages[0]}{more}")
        )
    return messages


class _Walk:
    """One pass over the rows in seq order, checking each link of the chain."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.rows = 0
        self.expected = 0  # the next seq the chain needs
        self.prev = ZERO
        self.journal_id: str | None = None
        self.keyed = False
        self.check_hashes = True
        self.head_hash: bytes | None = None  # the stored hash of the row the head names
        self.problems: list[Problem] = []

    def run(self, conn: sqlite3.Connection, head: _chain.Head | None) -> None:
        conn.execute("BEGIN")  # one snapshot for the whole walk
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "events" not in tables:
                self.problems.append(
                    Problem(
                        seq=None,
                        what="no events table: not a tracebox journal (or one copied "
                        "without its -wal file)",
                    )
                )
                return
            cur = conn.execute(
                "SELECT seq, session, kind, at, data, blob, prev_hash, hash FROM events "
                "ORDER BY seq"
            )
            while rows := cur.fetchmany(256):
                for row in rows:
                    self._row(row, head)
        finally:
            conn.execute("COMMIT")
        if self.rows == 0 and not self.problems:
            self.problems.append(Problem(seq=0, what="the journal has no rows (no genesis row)"))

    def _row(self, row: tuple[Any, ...], head: _chain.Head | None) -> None:
        seq, session, kind, at, data, blob, prev_hash, hash_ = row
        prev_hash, hash_ = bytes(prev_hash), bytes(hash_)
        if seq == 0:
            self._genesis(session, kind, data)
        problem = None
        if seq != self.expected:
            missing = (
                f"row {self.expected} is missing"
                if seq == self.expected + 1
                else f"rows {self.expected}-{seq - 1} are missing"
            )
            problem = Problem(seq=self.expected, what=f"{missing} (deleted)")
        elif prev_hash != self.prev:
            problem = Problem(
                seq=seq,
                what="its prev_hash is not the hash of the row before (a row was replaced, "
                "inserted or moved)",
            )
        if problem is not None:
            self.problems.append(problem)
        if self.check_hashes:
            try:
                digest = _chain.blob_digest(None if blob is None else bytes(blob))
                fields = (seq, str(session), str(kind), int(at), str(data), digest)
                want = _chain.row_hash(self.key, prev_hash, fields)
            except (TypeError, ValueError) as exc:
                self.problems.append(Problem(seq=seq, what=f"malformed row: {exc}"))
            else:
                if want != hash_:
                    self.problems.append(
                        Problem(
                            seq=seq,
                            what="its content does not match its hash (the data, blob, "
                            "session, kind or time was edited)",
                        )
                    )
        if head is not None and seq == head.seq:
            self.head_hash = hash_
        self.prev = hash_
        self.expected = seq + 1
        self.rows += 1

    def _genesis(self, session: object, kind: object, data: object) -> None:
        if session != "" or kind != GENESIS:
            self.problems.append(Problem(seq=0, what="row 0 is not a genesis row"))
            return
        try:
            meta = _chain.parse_genesis(str(data))
        except ValueError as exc:
            self.problems.append(Problem(seq=0, what=f"the genesis row is malformed: {exc}"))
            return
        self.journal_id = str(meta.get("journal"))
        key_id = meta.get("key_id")
        self.keyed = key_id is not None
        if key_id is not None and self.key is None:
            self.check_hashes = False
            self.problems.append(
                Problem(seq=None, what="the journal is keyed (HMAC): verifying it needs its key")
            )
        elif key_id is None and self.key is not None:
            self.key = None  # written without a key: a key given for it changes nothing
        elif key_id is not None and self.key is not None and key_id != _chain.key_id(self.key):
            self.check_hashes = False
            self.problems.append(Problem(seq=None, what="this is not the journal's key"))


def _check_head(path: str, head: _chain.Head | None, walk: _Walk) -> list[Problem]:
    last = walk.expected - 1
    if head is None:
        if last == 0:
            return []
        return [
            Problem(
                seq=None,
                what=f"no head record ({_chain.head_path(path)}): a cut tail cannot be ruled out",
            )
        ]
    if walk.journal_id is not None and head.journal_id != walk.journal_id:
        return [Problem(seq=None, what="the head record belongs to another journal")]
    if head.seq > last:
        return [
            Problem(
                seq=last + 1,
                what=f"the tail was cut: the head record says the chain reaches seq {head.seq}, "
                f"the journal ends at {last}",
            )
        ]
    if walk.head_hash != head.hash:
        return [
            Problem(
                seq=head.seq,
                what="the row the head record names is not the one it pinned (the tail was "
                "cut and rewritten)",
            )
        ]
    return []
