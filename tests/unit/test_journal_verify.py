"""Verification catches an edited row or blob, a deleted row, a cut tail and a torn file.

Every tampering is done the way someone with the file would do it: with SQLite itself, or
by cutting the files; the journal is never told.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tracebox.journal import Journal, JournalError, VerifyReport, verify
from tracebox.journal._chain import canonical_json

N = 12  # events after the genesis row


def _fill(j: Journal) -> None:
    for i in range(1, N + 1):
        if i % 4 == 0:
            j.append("s", "put", {"name": f"v{i}", "size": 1000}, bytes([i]) * 1000)
        else:
            j.append("s", "run", {"code": f"x = {i}", "result": {"status": "ok"}})


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    with Journal(path) as j:
        _fill(j)
    assert verify(path).ok
    return path


def _sql(path: Path, statement: str, *args: object) -> None:
    conn = sqlite3.connect(path)
    conn.execute(statement, args)
    conn.commit()
    conn.close()


def _bad(path: Path, key: bytes | None = None) -> VerifyReport:
    report = verify(path, key=key)
    assert not report.ok
    assert report.problems
    assert "does not verify" in report.describe()
    return report


def test_a_sound_journal_verifies(journal: Path) -> None:
    report = verify(journal)
    assert report.ok
    assert (report.events, report.last_seq, report.head_seq, report.unpinned) == (N + 1, N, N, 0)
    assert report.integrity == ["ok"]
    assert report.first_bad_seq is None
    assert "chain verified" in report.describe()


def test_an_edited_row_is_caught_at_its_seq(journal: Path) -> None:
    _sql(journal, "UPDATE events SET data = ? WHERE seq = 5", canonical_json({"code": "x = 999"}))
    report = _bad(journal)
    assert report.first_bad_seq == 5
    assert "does not match its hash" in report.problems[0].what
    assert "first bad seq 5" in report.describe()


@pytest.mark.parametrize("column", ["session", "kind", "at"])
def test_editing_any_column_is_caught(journal: Path, column: str) -> None:
    value = 7 if column == "at" else "other"
    _sql(journal, f"UPDATE events SET {column} = ? WHERE seq = 3", value)
    assert _bad(journal).first_bad_seq == 3


def test_an_edited_blob_is_caught(journal: Path) -> None:
    _sql(journal, "UPDATE events SET blob = ? WHERE seq = 8", b"\x00" * 1000)
    report = _bad(journal)
    assert report.first_bad_seq == 8


def test_a_removed_blob_is_caught(journal: Path) -> None:
    _sql(journal, "UPDATE events SET blob = NULL WHERE seq = 4")
    assert _bad(journal).first_bad_seq == 4


def test_a_deleted_middle_row_is_caught(journal: Path) -> None:
    _sql(journal, "DELETE FROM events WHERE seq = 6")
    report = _bad(journal)
    assert report.first_bad_seq == 6
    assert "row 6 is missing" in report.problems[0].what


def test_deleted_rows_renumbered_to_close_the_gap_are_caught(journal: Path) -> None:
    _sql(journal, "DELETE FROM events WHERE seq = 6")
    _sql(journal, "UPDATE events SET seq = seq - 1 WHERE seq > 6")
    assert _bad(journal).first_bad_seq == 6


def test_swapped_rows_are_caught(journal: Path) -> None:
    conn = sqlite3.connect(journal)
    a = conn.execute("SELECT data FROM events WHERE seq = 2").fetchone()[0]
    b = conn.execute("SELECT data FROM events WHERE seq = 3").fetchone()[0]
    conn.execute("UPDATE events SET data = ? WHERE seq = 2", (b,))
    conn.execute("UPDATE events SET data = ? WHERE seq = 3", (a,))
    conn.commit()
    conn.close()
    assert _bad(journal).first_bad_seq == 2


def test_a_cut_tail_is_caught(journal: Path) -> None:
    _sql(journal, f"DELETE FROM events WHERE seq > {N - 3}")
    report = _bad(journal)
    assert report.first_bad_seq == N - 2
    assert "tail was cut" in report.problems[0].what
    assert report.head_seq == N


def test_a_cut_tail_with_its_last_row_rewritten_is_caught(journal: Path) -> None:
    """Cut the tail, then forge a new last row at the head's seq with a recomputed hash."""
    conn = sqlite3.connect(journal)
    conn.execute(f"DELETE FROM events WHERE seq >= {N}")
    prev = conn.execute(f"SELECT hash FROM events WHERE seq = {N - 1}").fetchone()[0]
    forged = hashlib.sha256(prev + b"forged").digest()
    conn.execute(
        "INSERT INTO events VALUES (?, 's', 'run', 0, '{}', NULL, ?, ?)", (N, prev, forged)
    )
    conn.commit()
    conn.close()
    assert _bad(journal).first_bad_seq == N


def test_a_journal_with_a_cut_tail_is_not_extended(journal: Path) -> None:
    _sql(journal, f"DELETE FROM events WHERE seq > {N - 1}")
    with pytest.raises(JournalError, match="does not reach its head record"):
        Journal(journal)
    assert _bad(journal).first_bad_seq == N  # and the evidence is still there


def test_a_missing_or_edited_head_record_is_reported(journal: Path) -> None:
    head = Path(f"{journal}-head")
    saved = head.read_bytes()
    head.unlink()
    assert "no head record" in _bad(journal).describe()
    with pytest.raises(JournalError, match="no head record"):
        Journal(journal)
    head.write_bytes(saved.replace(f"{N:020d}".encode(), f"{N + 5:020d}".encode()))
    assert "checksum" in _bad(journal).describe()


def test_a_torn_database_file_is_caught(journal: Path) -> None:
    size = journal.stat().st_size
    with open(journal, "r+b") as f:
        f.truncate(size // 2 + 100)  # mid-page
    report = _bad(journal)  # reported, not raised
    assert report.problems


def test_garbage_in_the_middle_of_the_file_is_caught(journal: Path) -> None:
    size = journal.stat().st_size
    with open(journal, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xff" * 3000)
    _bad(journal)


def test_a_file_that_is_not_sqlite_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database" * 100)
    report = _bad(path)
    assert report.events == 0


def _copy_while_open(src: Path, dst: Path, *suffixes: str) -> None:
    for suffix in suffixes:
        shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")


def test_a_torn_wal_loses_only_the_torn_commit_and_the_head_shows_it(tmp_path: Path) -> None:
    """A host that died mid-write leaves a torn WAL: SQLite drops the torn commit; the head
    record was written only after the last complete commit, so nothing acknowledged is lost.
    A WAL cut further back loses acknowledged rows: the head record shows that."""
    src, dst = tmp_path / "live.db", tmp_path / "copy.db"
    with Journal(src) as j:
        _fill(j)
        # the files as a crash would leave them: rows in the WAL, not checkpointed
        _copy_while_open(src, dst, "", "-wal", "-head")
    ok = verify(dst)
    assert ok.ok, ok.problems
    wal = Path(f"{dst}-wal")
    wal_size = wal.stat().st_size
    frame = 24 + 1024  # WAL frame header + one page
    with open(wal, "r+b") as f:
        f.truncate(wal_size - frame // 2)  # the last frame torn in half
    report = verify(dst)
    assert not report.ok  # the last commit is gone, and the head record said it was there
    assert report.last_seq is not None and report.last_seq < N
    assert report.first_bad_seq == report.last_seq + 1
    assert "tail was cut" in report.describe()


def test_a_copy_without_its_wal_is_caught(tmp_path: Path) -> None:
    src, dst = tmp_path / "live.db", tmp_path / "copy.db"
    with Journal(src) as j:
        _fill(j)  # closing checkpoints these into the main file
    with Journal(src) as j:
        _fill(j)  # these stay in the WAL while the journal is open
        _copy_while_open(src, dst, "", "-head")  # the WAL left behind
    report = _bad(dst)
    assert (report.last_seq, report.head_seq) == (N, 2 * N)
    assert report.first_bad_seq == N + 1
    assert "tail was cut" in report.describe()


def test_a_copy_of_a_new_journal_without_its_wal_is_caught(tmp_path: Path) -> None:
    src, dst = tmp_path / "live.db", tmp_path / "copy.db"
    with Journal(src) as j:
        _fill(j)
        _copy_while_open(src, dst, "", "-head")  # even the schema is in the WAL
    assert "not a tracebox journal" in _bad(dst).describe()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: _sql(p, "UPDATE events SET data = '{}' WHERE seq = 5"),
        lambda p: _sql(p, "DELETE FROM events WHERE seq = 5"),
    ],
    ids=["edit", "delete"],
)
def test_a_rewritten_chain_is_caught_only_with_a_key(
    tmp_path: Path, tamper: Callable[[Path], None]
) -> None:
    """Editing a row and recomputing every later hash (and the head) needs no secret in a
    plain SHA-256 chain; in a keyed journal (HMAC) the forger needs the key."""
    key = b"secret" * 6
    for keyed in (False, True):
        path = tmp_path / f"journal-{keyed}.db"
        with Journal(path, key=key if keyed else None) as j:
            _fill(j)
        tamper(path)
        _rechain(path)
        report = verify(path, key=key if keyed else None)
        assert report.ok is (not keyed), report.problems


def _rechain(path: Path) -> None:
    """What a forger without the key does: renumber, recompute every hash, rewrite the head."""
    from tracebox.journal._chain import Head, HeadFile, blob_digest, head_path, row_hash

    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
    conn.execute("DELETE FROM events")
    prev = bytes(32)
    for new_seq, (_, session, kind, at, data, blob, _p, _h) in enumerate(rows):
        h = row_hash(None, prev, (new_seq, session, kind, at, data, blob_digest(blob)))
        conn.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (new_seq, session, kind, at, data, blob, prev, h),
        )
        prev = h
    conn.commit()
    journal_id = conn.execute("SELECT data FROM events WHERE seq = 0").fetchone()[0]
    conn.close()
    head = HeadFile(head_path(str(path)))
    head.write(Head(__import__("json").loads(journal_id)["journal"], len(rows) - 1, prev))
    head.close()
