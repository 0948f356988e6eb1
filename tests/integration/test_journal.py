"""A journaled runtime: every operation on a real session lands in the journal, durable
before it returns; replay reproduces deterministic sessions and flags the others."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracebox import Runtime, Session
from tracebox.journal import Event, Journal
from tracebox.journal.replay import replay

_SCRIPT = Path(sys.executable).with_name("tracebox")
TRACEBOX = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tracebox.cli"]
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "160"}


@pytest.fixture(scope="module")
def journal_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("journal") / "journal.db"


@pytest.fixture(scope="module")
def rt(journal_path: Path) -> Iterator[Runtime]:
    with Runtime(journal=journal_path, pool_size=2) as runtime:
        yield runtime


def _events(path: Path, session: str) -> list[Event]:
    return list(Journal(path, readonly=True).events(session))


def _kinds(path: Path, session: str) -> list[str]:
    return [e.kind for e in _events(path, session)]


def tracebox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRACEBOX, *args], capture_output=True, text=True, env=ENV, timeout=120, check=False
    )


def test_every_operation_is_journaled(rt: Runtime, journal_path: Path) -> None:
    s = rt.session()
    s.put("data", {"a": [1, 2]})
    s.run("def double(v):\n    return v * 2\nprint(len(data['a']))")
    assert s.call("double", v=21).returned == 42
    s.get("data")
    with pytest.raises(KeyError):
        s.get("missing")
    cp = s.checkpoint()
    s.run("data = None")
    s.restore(cp)
    cp.release()
    kids = s.fork(2)
    kids[0].run("data['a'].append(3)")
    for k in kids:
        k.close()
    s.close()
    assert _kinds(journal_path, s.id) == [
        "created",
        "put",
        "run",
        "call",
        "get",
        "get",
        "checkpoint",
        "run",
        "restore",
        "release",
        "fork",
        "close",
    ]
    ev = {e.kind: e for e in reversed(_events(journal_path, s.id))}  # first of each kind
    assert ev["created"].data["parent"] is None
    assert ev["created"].data["stateful"] is True
    assert ev["created"].data["limits"] == rt.limits.model_dump(mode="json")
    put = ev["put"]
    assert put.blob is not None
    assert pickle.loads(put.blob) == {"a": [1, 2]}
    assert put.data == {
        "name": "data",
        "sha256": hashlib.sha256(put.blob).hexdigest(),
        "size": len(put.blob),
    }
    run = ev["run"]
    assert run.data["code"].startswith("def double")
    assert run.data["result"]["status"] == "ok"
    assert run.data["result"]["stdout"] == "2\n"
    assert "trace" not in run.data["result"]
    assert ev["call"].data["name"] == "double"
    assert ev["call"].blob is not None
    assert pickle.loads(ev["call"].blob) == ((), {"v": 21})
    assert ev["get"].data["name"] == "data"
    assert ev["checkpoint"].data["checkpoint"] == cp.id
    assert ev["restore"].data["checkpoint"] == cp.id
    assert ev["fork"].data["children"] == [k.id for k in kids]
    for k in kids:
        created = _events(journal_path, k.id)[0]
        assert created.kind == "created"
        assert created.data["parent"] == s.id
    assert _kinds(journal_path, kids[0].id) == ["created", "run", "close"]
    assert Journal(journal_path, readonly=True).verify().ok


def test_an_operation_returns_only_once_its_entry_is_readable_elsewhere(
    rt: Runtime, journal_path: Path
) -> None:
    """Acknowledged means committed: another connection sees the row as soon as run returns."""
    s = rt.session()
    for i in range(5):
        s.run(f"n = {i}")
        last = _events(journal_path, s.id)[-1]
        assert (last.kind, last.data["code"]) == ("run", f"n = {i}")
    s.close()


def test_a_traced_run_is_journaled_by_digest(rt: Runtime, journal_path: Path) -> None:
    s = rt.session()
    r = s.run("total = sum(range(5))\ntotal", trace="full")
    s.close()
    assert r.trace is not None
    run = next(e for e in _events(journal_path, s.id) if e.kind == "run")
    assert run.data["trace"]["mode"] == "full"
    assert run.data["result"]["trace_sha256"] == hashlib.sha256(r.trace.to_json()).hexdigest()


def _deterministic(s: Session) -> None:
    s.put("numbers", [3, 1, 2])
    s.run("def f(k):\n    return sorted(numbers)[k]\nprint(sorted(numbers))")
    s.call("f", 1)
    s.run("x = f(0) + f(2)\nx", trace="steps")
    cp = s.checkpoint()
    s.run("x = 100")
    s.restore(cp)
    s.run("print(x)\n1 / 0")
    s.get("x")
    s.run("import sys\nprint('to stderr', file=sys.stderr)")


def test_replay_of_a_deterministic_session_matches(rt: Runtime, journal_path: Path) -> None:
    s = rt.session()
    _deterministic(s)
    s.close()
    report = replay(journal_path, s.id, runtime=rt)
    assert report.ok, [st for st in report.steps if st.outcome != "match"]
    assert [st.outcome for st in report.steps] == ["match"] * len(report.steps)
    assert [st.kind for st in report.steps] == _kinds(journal_path, s.id)


def test_replay_flags_time_and_randomness(rt: Runtime, journal_path: Path) -> None:
    s = rt.session()
    s.run("import time, random, uuid\nt = time.time()\nr = random.random()")
    s.run("print(t)")
    s.run("r")
    s.run("str(uuid.uuid4())")
    s.run("sorted([3, 2, 1])")
    s.close()
    report = replay(journal_path, s.id, runtime=rt)
    assert not report.ok
    by_code = {st.what: st for st in report.steps if st.kind == "run"}
    printed, drawn, named = by_code["print(t)"], by_code["r"], by_code["str(uuid.uuid4())"]
    assert (printed.outcome, drawn.outcome, named.outcome) == ("mismatch",) * 3
    assert [d.field for d in printed.diffs] == ["stdout"]
    assert {x.source for x in printed.suspects} == {"time"}
    assert printed.suspects[-1].seq == report.steps[1].seq  # where t was computed
    assert [d.field for d in drawn.diffs] == ["value"]
    assert {x.source for x in drawn.suspects} == {"random"}
    assert "uuid" in {x.source for x in named.suspects}
    assert by_code["sorted([3, 2, 1])"].outcome == "match"
    assert report.count("mismatch") == 3


def test_replay_of_a_forked_child_rebuilds_it_from_its_parent(
    rt: Runtime, journal_path: Path
) -> None:
    s = rt.session()
    s.run("x = [1]")
    a, b = s.fork(2)
    a.run("x.append(2)\nprint(x)")
    b.run("x.append(3)\nprint(x)")
    s.run("x.append(4)")
    for session in (a, b, s):
        session.close()
    report = replay(journal_path, b.id, runtime=rt)
    assert report.ok, report.steps
    assert [(st.session, st.kind) for st in report.steps] == [
        (s.id, "created"),
        (s.id, "run"),
        (b.id, "run"),
        (b.id, "close"),
    ]


def test_cli_lists_verifies_and_replays(rt: Runtime, journal_path: Path, tmp_path: Path) -> None:
    steady, clocked = rt.session(), rt.session()
    _deterministic(steady)
    clocked.run("import time\nt = time.time_ns()")
    clocked.run("t")
    steady.close()
    done = tracebox("journal", str(journal_path))
    assert done.returncode == 0, done.stderr
    assert steady.id in done.stdout
    assert "chain verified" in done.stdout
    assert "open" in done.stdout  # clocked is still open

    same = tracebox("replay", str(journal_path), steady.id[:8])
    assert same.returncode == 0, same.stdout + same.stderr
    assert "mismatch" not in same.stdout
    differs = tracebox("replay", str(journal_path), clocked.id)
    assert differs.returncode == 1, differs.stdout + differs.stderr
    assert "✘ mismatch" in differs.stdout
    assert "time (line 2: time.time_ns()" in differs.stdout
    clocked.close()

    copy = tmp_path / "copy.db"
    for suffix in ("", "-wal", "-head"):  # the files as they are on disk right now
        shutil.copyfile(f"{journal_path}{suffix}", f"{copy}{suffix}")
    conn = sqlite3.connect(copy)
    conn.execute("UPDATE events SET data = '{}' WHERE seq = 3")
    conn.commit()
    conn.close()
    tampered = tracebox("journal", str(copy))
    assert tampered.returncode == 1
    assert "first bad seq 3" in tampered.stderr
    refused = tracebox("replay", str(copy), steady.id)
    assert refused.returncode == 1
    assert "refusing to replay" in refused.stderr
    unknown = tracebox("replay", str(journal_path), "zzzz")
    assert unknown.returncode == 2
    assert "not a session" in unknown.stderr
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a journal" * 100)
    for args in (["journal", str(junk)], ["replay", str(junk), "x", "--no-verify"]):
        broken = tracebox(*args)
        assert broken.returncode == 1
        assert "does not verify" in broken.stderr
        assert "Traceback" not in broken.stderr
