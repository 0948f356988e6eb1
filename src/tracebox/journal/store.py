"""The journal: an append-only, hash-chained SQLite file of everything sessions did.

One row per event. ``append`` returns only once the row is durable: committed with
``synchronous=FULL`` in WAL mode, so on disk (fsync) by default, or with ``fsync=False`` in
the operating system's cache (it then survives the host process being killed, not a power
cut or a kernel crash). Appends from many threads are grouped: one thread commits every row
queued so far in one transaction, and the others wait for that commit instead of paying for
their own (group commit); a lone appender pays one commit and no hand-off.

The hash chain and the head record are described in ``tracebox.journal._chain``; what
``verify`` can and cannot detect is in ``tracebox.journal._verify``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from tracebox.journal import _chain
from tracebox.journal._chain import GENESIS, ZERO, Head, HeadFile
from tracebox.journal._verify import verify
from tracebox.journal.errors import JournalError
from tracebox.journal.model import Event, SessionSummary, VerifyReport
from tracebox.journal.read import connect_read, read_events, summarize_sessions

__all__ = ["Journal"]

# No index besides seq: a commit then touches one B-tree page, not two. Reading one session
# scans the table (without reading blobs, which sit in overflow pages after the columns
# filtered on), which only listing and replay do.
SCHEMA = (
    """CREATE TABLE events (
    seq       INTEGER PRIMARY KEY,  -- 0 is the genesis row, then 1, 2, ... without gaps
    session   TEXT    NOT NULL,     -- '' for the genesis row
    kind      TEXT    NOT NULL,
    at        INTEGER NOT NULL,     -- Unix time in nanoseconds
    data      TEXT    NOT NULL,     -- canonical JSON (sorted keys, no spaces)
    blob      BLOB,                 -- put: the pickle, call: the pickled (args, kwargs)
    prev_hash BLOB    NOT NULL,
    hash      BLOB    NOT NULL
)""",
)
_INSERT = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_PAGE_SIZE = 1024  # small pages: a commit of one small row writes about 1 KB of WAL
# The WAL is checkpointed into the main file every 1000 pages (SQLite's default: 1 MB here),
# then rewritten from its start: once it has grown to that size, a commit overwrites blocks
# the file already has, and its sync need not commit file-size metadata (about 90 µs less
# per commit on ext4 here than while the WAL still grows, in the first ~500 commits after
# the journal is opened). A big put grows the WAL; it is cut back to this size afterwards.
_WAL_LIMIT = 4 << 20


class _Pending:
    """A row on its way: queued by its appender, committed by whichever thread leads."""

    __slots__ = ("at", "blob", "data", "digest", "error", "kind", "seq", "session")

    def __init__(
        self, session: str, kind: str, data: str, blob: bytes | None, digest: str | None
    ) -> None:
        self.session = session
        self.kind = kind
        self.data = data  # canonical JSON
        self.blob = blob
        self.digest = digest  # of the blob
        self.at = time.time_ns()
        self.seq: int | None = None  # set once the row is committed
        self.error: BaseException | None = None


class Journal:
    """An append-only journal in the SQLite file at ``path`` (created if missing).

    ``key`` makes every row's hash an HMAC under it: rewriting the chain then needs the key,
    not only write access to the file; verifying needs it too. ``fsync=False`` trades
    power-cut durability for speed (see the module docstring). ``readonly=True`` opens an
    existing journal to read and verify it without writing anything.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        fsync: bool = True,
        readonly: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.key = key
        self.fsync = fsync
        self.readonly = readonly
        self._queue: list[_Pending] = []
        # guards _queue, _leading and _closed; released while the leader commits
        self._cond = threading.Condition(threading.Lock())
        self._leading = False  # a thread is committing a batch
        self._closed = False
        self._conn: sqlite3.Connection | None = None
        self._head: HeadFile | None = None
        self._tail: tuple[int, bytes] = (0, ZERO)  # seq and hash of the last row written
        self.id = ""
        if readonly:
            if not os.path.exists(self.path):
                raise JournalError(f"no journal at {self.path}")
            return
        try:
            self._open()
        except sqlite3.Error as exc:
            self._close_files()
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc
        except BaseException:
            self._close_files()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _open(self) -> None:
        # code, outputs and values of every session: readable by the host's owner only (SQLite
        # gives the -wal and -shm files the database's mode)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        conn = self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=60.0
        )
        conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")  # only matters for a new file
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            created = not tables
            if created:
                self._create(conn)
            elif "events" not in tables:
                raise JournalError(f"{self.path} is an SQLite file but not a tracebox journal")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        genesis = conn.execute("SELECT data, hash FROM events WHERE seq = 0").fetchone()
        if genesis is None:
            raise JournalError(f"{self.path} has no genesis row: not a tracebox journal")
        try:
            meta = _chain.parse_genesis(genesis[0])
        except ValueError as exc:
            raise JournalError(f"{self.path}: the genesis row is malformed ({exc})") from None
        if meta.get("format") != _chain.FORMAT:
            raise JournalError(f"{self.path} has journal format {meta.get('format')!r}")
        self.id = str(meta.get("journal"))
        want = meta.get("key_id")
        have = None if self.key is None else _chain.key_id(self.key)
        if want != have:
            raise JournalError(
                f"{self.path} was written {'with a key' if want else 'without a key'}; "
                + ("this key is not it" if want and have else "open it the same way")
            )
        self._tail = self._read_tail(conn)
        if not created:  # a head file beside a new journal is a stale one: overwritten
            self._check_head(conn, self._tail[0])
        self._head = HeadFile(_chain.head_path(self.path))
        self._head.write(Head(self.id, *self._tail))

    def _create(self, conn: sqlite3.Connection) -> None:
        for statement in SCHEMA:  # not executescript: it would commit
            conn.execute(statement)
        journal_id = secrets.token_hex(8)
        data = _chain.canonical_json(
            {
                "format": _chain.FORMAT,
                "journal": journal_id,
                "key_id": None if self.key is None else _chain.key_id(self.key),
            }
        )
        at = time.time_ns()
        h = _chain.row_hash(self.key, ZERO, (0, "", GENESIS, at, data, None))
        conn.execute(
            "INSERT INTO events VALUES (0, '', ?, ?, ?, NULL, ?, ?)", (GENESIS, at, data, ZERO, h)
        )

    def _check_head(self, conn: sqlite3.Connection, last_seq: int) -> None:
        """Refuse to extend a journal that has lost its tail: appending would hide it."""
        try:
            head = _chain.read_head(self.path)
        except ValueError as exc:
            raise JournalError(
                f"{self.path}: {exc}; run `tracebox journal {self.path}` to check it"
            ) from None
        if head is None:
            if last_seq == 0:
                return  # created, then stopped before the head was first written
            raise JournalError(
                f"{self.path} has {last_seq} events but no head record "
                f"({_chain.head_path(self.path)}): a cut tail cannot be ruled out. If the "
                "journal was copied, copy its head file with it"
            )
        row = conn.execute("SELECT hash FROM events WHERE seq = ?", (head.seq,)).fetchone()
        if head.journal_id != self.id or row is None or bytes(row[0]) != head.hash:
            raise JournalError(
                f"{self.path} does not reach its head record (seq {head.seq}; it ends at "
                f"{last_seq}): its tail was lost or it was edited. Appending would hide that; "
                f"run `tracebox journal {self.path}` to see what is wrong"
            )

    # -- writing ---------------------------------------------------------------------------

    def append(
        self, session: str, kind: str, data: Mapping[str, Any], blob: bytes | None = None
    ) -> int:
        """Append one event and return its seq, once it is durable. Thread-safe.

        ``data`` must be JSON data (no NaN); it is stored in canonical form. Raises
        ``JournalError`` if the row could not be written: the operation it records must then
        not be acknowledged.
        """
        if not session or not isinstance(session, str):
            raise ValueError(f"session must be a non-empty str, not {session!r}")
        if not kind or not isinstance(kind, str) or kind == GENESIS:
            raise ValueError(f"not an event kind: {kind!r}")
        if blob is not None and not isinstance(blob, bytes):
            blob = bytes(blob)
        entry = _Pending(
            session, kind, _chain.canonical_json(dict(data)), blob, _chain.blob_digest(blob)
        )
        with self._cond:
            if self._closed or self._conn is None:
                raise JournalError(
                    "the journal is read-only" if self.readonly else "the journal is closed"
                )
            self._queue.append(entry)
            while entry.seq is None and entry.error is None:
                if self._leading:  # its commit may already hold this entry: wait for it
                    self._cond.wait()
                else:
                    self._lead()
        if entry.error is not None:
            raise JournalError(f"the journal could not write a {kind!r} event: {entry.error}")
        assert entry.seq is not None
        return entry.seq

    def _lead(self) -> None:
        """Commit every queued row in one transaction, as the leader of a group commit.

        Called holding ``_cond``, which is released during the commit: rows queued meanwhile
        wait for the next leader, one of their own threads, and go in its one commit.
        """
        self._leading = True
        batch, self._queue = self._queue, []
        self._cond.release()
        try:
            self._commit(batch)
        finally:
            self._cond.acquire()
            self._leading = False
            self._cond.notify_all()

    def _commit(self, batch: list[_Pending]) -> None:
        """Write ``batch``; set each entry's seq, or its error."""
        conn = self._conn
        try:
            if conn is None:
                raise JournalError("the journal is closed")
            for _attempt in range(100):
                try:
                    seqs = self._insert(conn, batch)
                    break
                except sqlite3.IntegrityError:  # another process appended: chain onto its rows
                    self._tail = self._read_tail(conn)
            else:
                raise JournalError("another writer keeps taking the next seq")
        except BaseException as exc:
            for e in batch:
                e.error = exc
            if not isinstance(exc, sqlite3.Error | JournalError):
                raise
            return
        if self._head is not None:
            with contextlib.suppress(OSError):  # the rows are durable; the head may lag
                self._head.write(Head(self.id, *self._tail))
        for e, seq in zip(batch, seqs, strict=True):
            e.seq = seq

    def _insert(self, conn: sqlite3.Connection, batch: list[_Pending]) -> list[int]:
        """Chain ``batch`` onto the cached tail and commit it; the tail moves on success."""
        seq, prev = self._tail
        rows, seqs = [], []
        for e in batch:
            seq += 1
            h = _chain.row_hash(self.key, prev, (seq, e.session, e.kind, e.at, e.data, e.digest))
            rows.append((seq, e.session, e.kind, e.at, e.data, e.blob, prev, h))
            seqs.append(seq)
            prev = h
        if len(rows) == 1:  # autocommit: one statement, one transaction, one sync
            conn.execute(_INSERT, rows[0])
        else:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        self._tail = (seq, prev)
        return seqs

    @staticmethod
    def _read_tail(conn: sqlite3.Connection) -> tuple[int, bytes]:
        seq, h = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return int(seq), bytes(h)

    def close(self) -> None:
        """Commit what is queued and close the file. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            while self._leading:
                self._cond.wait()
            if self._queue:
                self._lead()
            self._close_files()

    def _close_files(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        if self._head is not None:
            self._head.close()
            self._head = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Journal {self.path}{' closed' if self._closed else ''}>"

    # -- reading ---------------------------------------------------------------------------

    def sessions(self) -> list[SessionSummary]:
        """Every session in the journal, in the order they first appear."""
        with self._reader() as conn:
            return summarize_sessions(conn)

    def events(self, session: str | None = None) -> Iterator[Event]:
        """The events of ``session`` (of every session and the genesis row if None), by seq."""
        with self._reader() as conn:
            yield from read_events(conn, session)

    def verify(self) -> VerifyReport:
        """Check the whole journal: SQLite's integrity, the hash chain, the head record."""
        return verify(self.path, key=self.key)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = connect_read(self.path)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {self.path}: {exc}") from exc
        try:
            yield conn
        except (sqlite3.DatabaseError, ValueError) as exc:  # ValueError: data that is not JSON
            raise JournalError(f"cannot read the journal {self.path}: {exc}") from exc
        finally:
            conn.close()
