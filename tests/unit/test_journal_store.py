"""The journal store: append and read back, durability settings, threads, keys, reopening."""

from __future__ import annotations

import math
import sqlite3
import threading
from pathlib import Path

import pytest

from tracebox.errors import TraceboxError
from tracebox.journal import Journal, JournalError


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


def test_append_returns_seqs_and_events_read_back(path: Path) -> None:
    with Journal(path) as j:
        assert j.append("s1", "created", {"limits": {}, "stateful": True, "parent": None}) == 1
        assert j.append("s1", "put", {"name": "x", "size": 3}, b"abc") == 2
        assert j.append("s2", "run", {"code": "1 + 1", "result": {"status": "ok"}}) == 3
        events = list(j.events())
        assert [(e.seq, e.session, e.kind) for e in events] == [
            (0, "", "genesis"),
            (1, "s1", "created"),
            (2, "s1", "put"),
            (3, "s2", "run"),
        ]
        assert events[2].blob == b"abc"
        assert events[1].blob is None
        assert events[3].data == {"code": "1 + 1", "result": {"status": "ok"}}
        assert [e.seq for e in j.events("s1")] == [1, 2]
        assert events[2].prev_hash == events[1].hash
        assert events[1].time.year >= 2024


def test_data_is_stored_as_canonical_json(path: Path) -> None:
    with Journal(path) as j:
        j.append("s", "run", {"b": 1, "a": {"z": "é", "y": [1.5, None]}})
    conn = sqlite3.connect(path)
    raw = conn.execute("SELECT data FROM events WHERE seq = 1").fetchone()[0]
    conn.close()
    assert raw == '{"a":{"y":[1.5,null],"z":"é"},"b":1}'


@pytest.mark.parametrize(
    "data",
    [{"x": math.nan}, {"x": object()}, {"x": {1, 2}}],
    ids=["nan", "object", "set"],
)
def test_data_must_be_json(path: Path, data: dict[str, object]) -> None:
    with Journal(path) as j:
        with pytest.raises((ValueError, TypeError)):
            j.append("s", "run", data)
        assert j.append("s", "run", {}) == 1  # nothing half-written


@pytest.mark.parametrize(("session", "kind"), [("", "run"), ("s", ""), ("s", "genesis")])
def test_bad_session_or_kind_is_refused(path: Path, session: str, kind: str) -> None:
    with Journal(path) as j, pytest.raises(ValueError, match=r"session|kind"):
        j.append(session, kind, {})


def test_reopening_continues_the_chain(path: Path) -> None:
    with Journal(path) as j:
        j.append("s", "run", {"i": 1})
        first_id = j.id
    with Journal(path) as j:
        assert j.id == first_id
        assert j.append("s", "run", {"i": 2}) == 2
        report = j.verify()
    assert report.ok, report.problems
    assert (report.events, report.last_seq, report.head_seq) == (3, 2, 2)


def test_no_fsync_mode_appends_and_verifies(path: Path) -> None:
    with Journal(path, fsync=False) as j:
        for i in range(20):
            j.append("s", "run", {"i": i})
        assert j.verify().ok


def test_closed_and_readonly_journals_refuse_appends(path: Path) -> None:
    j = Journal(path)
    j.append("s", "run", {})
    j.close()
    j.close()  # idempotent
    with pytest.raises(JournalError, match="closed"):
        j.append("s", "run", {})
    ro = Journal(path, readonly=True)
    with pytest.raises(JournalError, match="read-only"):
        ro.append("s", "run", {})
    assert [e.seq for e in ro.events()] == [0, 1]
    assert issubclass(JournalError, TraceboxError)


def test_readonly_needs_an_existing_journal(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="no journal"):
        Journal(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()


def test_an_sqlite_file_that_is_not_a_journal_is_refused(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="not a tracebox journal"):
        Journal(path)


def test_threads_append_concurrently_without_gaps_or_reordering(path: Path) -> None:
    threads, per_thread = 8, 60
    seqs: dict[int, list[int]] = {}
    with Journal(path) as j:

        def work(t: int) -> None:
            seqs[t] = [j.append(f"s{t}", "run", {"i": i}) for i in range(per_thread)]

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        everything = sorted(s for got in seqs.values() for s in got)
        assert everything == list(range(1, threads * per_thread + 1))
        for t, got in seqs.items():
            assert got == sorted(got)  # a thread's events keep its order
            assert [e.data["i"] for e in j.events(f"s{t}")] == list(range(per_thread))
        assert j.verify().ok


def test_two_writers_on_one_file_keep_one_chain(path: Path) -> None:
    """Another writer (process) appending to the same file: each chains onto the other."""
    with Journal(path) as a, Journal(path) as b:
        got = []
        for i in range(10):
            got.append(a.append("a", "run", {"i": i}))
            got.append(b.append("b", "run", {"i": i}))
        assert got == list(range(1, 21))
        report = a.verify()
    assert report.ok, report.problems


def test_large_blobs_round_trip(path: Path) -> None:
    blob = bytes(range(256)) * 40_000  # 10 MB
    with Journal(path) as j:
        seq = j.append("s", "put", {"name": "big", "size": len(blob)}, blob)
        (event,) = [e for e in j.events("s") if e.seq == seq]
        assert event.blob == blob
        assert j.verify().ok


def test_sessions_are_summarized(path: Path) -> None:
    with Journal(path) as j:
        j.append("a", "created", {"parent": None})
        j.append("a", "run", {"result": {"status": "ok", "session_alive": True}})
        j.append("a", "run", {"result": {"status": "error", "session_alive": True}})
        j.append("b", "created", {"parent": "a"})
        j.append("b", "run", {"result": {"status": "killed", "session_alive": False}})
        j.append("a", "close", {})
        j.append("c", "created", {"parent": None})
        by_id = {s.id: s for s in j.sessions()}
    assert list(by_id) == ["a", "b", "c"]
    a, b, c = by_id["a"], by_id["b"], by_id["c"]
    assert (a.events, a.runs, a.failed_runs, a.status) == (4, 2, 1, "closed")
    assert a.closed is not None and a.created is not None
    assert (b.parent, b.status, b.failed_runs) == ("a", "dead", 1)
    assert (c.status, c.runs, c.closed) == ("open", 0, None)


def test_a_keyed_journal_needs_its_key(path: Path) -> None:
    key = b"k" * 32
    with Journal(path, key=key) as j:
        j.append("s", "run", {})
    with pytest.raises(JournalError, match="not it"):
        Journal(path, key=b"other key")
    with pytest.raises(JournalError, match="with a key"):
        Journal(path)
    assert Journal(path, key=key, readonly=True).verify().ok
    report = Journal(path, readonly=True).verify()
    assert not report.ok
    assert report.keyed
    assert "needs its key" in report.problems[0].what


def test_genesis_row_names_the_format_and_journal(path: Path) -> None:
    with Journal(path) as j:
        (genesis,) = [e for e in j.events() if e.seq == 0]
        assert genesis.data == {"format": 1, "journal": j.id, "key_id": None}
    head = Path(f"{path}-head").read_text().split()
    assert head[:3] == ["tracebox-journal-head", "1", j.id]
    assert int(head[3]) == 0


def test_closing_under_concurrent_appends_loses_nothing_acknowledged(path: Path) -> None:
    j = Journal(path)
    acked: list[int] = []
    refused = threading.Event()
    lock = threading.Lock()

    def work(t: int) -> None:
        while True:
            try:
                seq = j.append(f"s{t}", "run", {})
            except JournalError:
                refused.set()
                return
            with lock:
                acked.append(seq)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in pool:
        th.start()
    while len(acked) < 50:
        threading.Event().wait(0.001)
    j.close()
    for th in pool:
        th.join()
    assert refused.is_set()
    ro = Journal(path, readonly=True)
    stored = {e.seq for e in ro.events()}
    assert set(acked) <= stored
    assert ro.verify().ok


def test_journal_files_are_private(path: Path) -> None:
    with Journal(path) as j:
        j.append("s", "run", {})
        for suffix in ("", "-wal", "-shm", "-head"):
            assert Path(f"{path}{suffix}").stat().st_mode & 0o777 == 0o600, suffix


def test_verifying_while_another_thread_appends_never_sees_a_false_cut(path: Path) -> None:
    """The head record is read before the rows: rows committed meanwhile only add length."""
    with Journal(path) as j:
        stop, going = threading.Event(), threading.Event()

        def write() -> None:
            while not stop.is_set():
                if j.append("s", "run", {"x": 1}) >= 10:
                    going.set()

        writer = threading.Thread(target=write)
        writer.start()
        going.wait(30)
        try:
            reports = [Journal(path, readonly=True).verify() for _ in range(30)]
        finally:
            stop.set()
            writer.join()
    assert all(r.ok for r in reports), [r.problems for r in reports if not r.ok]


def test_a_new_journal_replaces_a_stale_head_record(path: Path) -> None:
    with Journal(path) as j:
        for _ in range(3):
            j.append("s", "run", {})
    for suffix in ("", "-wal", "-shm"):  # the database deleted, its head record left behind
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with Journal(path) as j:
        assert j.append("s", "run", {}) == 1
        assert j.verify().ok
