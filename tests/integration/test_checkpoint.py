"""Checkpoint and restore: whole-interpreter snapshots of real sessions."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tracebox import Limits, Session
from tracebox.errors import CheckpointLost, CheckpointRefused, SessionDead

FILES_HASH = """\
import hashlib, os
def tree_hash(top="."):
    h = hashlib.sha256()
    for here, dirs, files in sorted(os.walk(top)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(here, name)
            h.update(path.encode() + b"\\0" + open(path, "rb").read())
    return h.hexdigest()
"""

STATE = """\
import hashlib, itertools, os
a = [1, 2, {"k": "v"}]
b = a                       # aliasing
squares = (i * i for i in range(100))
next(squares)
counter = itertools.count(10)
next(counter)
adder = lambda n: n + len(a)
digest = hashlib.sha256(b"half")   # a C object with internal state
os.makedirs("data/sub", exist_ok=True)
open("data/sub/kept.txt", "w").write("kept")
log = open("log.txt", "w")
log.write("first ")
log.flush()
"""

SNAPSHOT_OF_STATE = (
    "(a, b is a, next(squares), next(counter), adder(1), digest.copy().hexdigest()[:12], "
    "open('data/sub/kept.txt').read(), log.tell(), sorted(os.listdir('.')))"
)


def test_restore_brings_back_values_identity_generators_files_and_handles(
    session: Session,
) -> None:
    assert session.run(FILES_HASH + STATE).ok
    before = session.run(SNAPSHOT_OF_STATE).value
    files = session.run("tree_hash()").value
    cp = session.checkpoint()
    # the same probe once more moves the generator and counter on: that is what we expect back
    expected = session.run(SNAPSHOT_OF_STATE).value
    session.restore(cp)
    assert session.run(SNAPSHOT_OF_STATE).value == expected
    changed = session.run(
        "a.append(99); b = None; next(squares); digest.update(b'more')\n"
        "open('data/sub/kept.txt', 'w').write('changed'); open('new.txt', 'w').write('x')\n"
        "log.write('second '); log.flush()\n"
        "import shutil; shutil.rmtree('data')"
    )
    assert changed.ok, changed.error
    session.restore(cp)
    assert session.run(SNAPSHOT_OF_STATE).value == expected
    assert session.run("tree_hash()").value == files
    assert before != expected  # the probe itself moves state on: the comparison can fail
    # the open handle writes into the restored file at the restored offset
    session.run("log.write('again'); log.flush()")
    assert session.run("open('log.txt').read()").value == "'first again'"


def test_one_checkpoint_restores_many_times(session: Session) -> None:
    session.run("n = 0")
    cp = session.checkpoint()
    for i in range(5):
        assert session.run(f"n += {i + 1}; n").value == str(i + 1)
        session.restore(cp)
        assert session.run("n").value == "0"


def test_a_restore_gives_back_the_random_state_too(session: Session) -> None:
    """A checkpoint is the state exactly: every restore draws the same numbers next."""
    assert session.run("import random").ok
    cp = session.checkpoint()
    draws = []
    for _ in range(3):
        session.restore(cp)
        draws.append(session.run("random.random(), random.getrandbits(64)").value)
    assert draws[0] == draws[1] == draws[2]


def test_nested_checkpoints(session: Session) -> None:
    session.run("trail = ['root']")
    first = session.checkpoint()
    session.run("trail.append('one')")
    second = session.checkpoint()
    session.run("trail.append('two')")
    session.restore(first)
    assert session.run("trail").value == "['root']"
    session.restore(second)
    assert session.run("trail").value == "['root', 'one']"
    session.run("trail.append('three')")
    third = session.checkpoint()
    session.restore(first)
    session.restore(third)
    assert session.run("trail").value == "['root', 'one', 'three']"
    assert {cp.id for cp in session.checkpoints()} == {first.id, second.id, third.id}


def test_a_checkpoint_survives_failed_timed_out_and_fatal_runs(
    new_session: Callable[..., Session],
) -> None:
    s = new_session(limits=Limits(cpu_seconds=0.3, grace_seconds=0.2))
    s.run("x = 'safe'")
    cp = s.checkpoint()
    assert s.run("raise ValueError('boom')").status == "error"
    assert s.run("while True: pass").status == "timeout"
    s.restore(cp)
    assert s.run("x").value == "'safe'"
    stubborn = s.run(
        "import signal\nfor sig in (signal.SIGINT, signal.SIGPROF):\n"
        "    signal.signal(sig, signal.SIG_IGN)\nwhile True: pass"
    )
    assert (stubborn.status, stubborn.session_alive) == ("timeout", False)
    with pytest.raises(SessionDead, match="restore a checkpoint"):
        s.run("x")
    s.restore(cp)
    assert s.run("x").value == "'safe'"
    died = s.run("import os; os._exit(7)")
    assert died.error is not None and "status 7" in died.error.message
    s.restore(cp)
    assert s.run("x").value == "'safe'"


def test_threads_are_refused_with_the_reason(session: Session) -> None:
    session.run("import threading\nstop = threading.Event()\n"
                "threading.Thread(target=stop.wait, daemon=True).start()")  # fmt: skip
    with pytest.raises(CheckpointRefused, match="threads"):
        session.checkpoint()
    session.run("stop.set()")
    session.run("import time\nwhile threading.active_count() > 1: time.sleep(0.01)")
    assert session.checkpoint() is not None


def test_the_number_of_checkpoints_is_limited(new_session: Callable[..., Session]) -> None:
    s = new_session(limits=Limits(max_checkpoints=2))
    first = s.checkpoint()
    s.checkpoint()
    with pytest.raises(CheckpointRefused, match="max_checkpoints"):
        s.checkpoint()
    first.release()
    assert s.checkpoint() is not None


def test_the_memory_checkpoints_hold_is_limited_and_measured(
    new_session: Callable[..., Session],
) -> None:
    s = new_session(limits=Limits(checkpoint_memory_mb=16))
    s.run("block = bytearray(40 << 20)")
    cp = s.checkpoint()
    assert cp.memory_mb() < 8  # everything is still shared with the session
    s.run("block = None\nblock = bytearray(40 << 20)")  # the old pages now live only in cp
    assert cp.memory_mb() > 30
    with pytest.raises(CheckpointRefused, match="checkpoint_memory_mb"):
        s.checkpoint()
    cp.release()
    assert s.checkpoint() is not None


def test_released_foreign_and_killed_checkpoints_are_lost(
    new_session: Callable[..., Session],
) -> None:
    s, other = new_session(), new_session()
    cp = s.checkpoint()
    with pytest.raises(CheckpointLost, match="not a checkpoint of session"):
        other.restore(cp)
    cp.release()
    cp.release()  # idempotent
    with pytest.raises(CheckpointLost, match="released"):
        s.restore(cp)
    victim = s.checkpoint()
    s.run("import os, signal\nfor p in os.listdir('/proc'):\n"
          "    if p.isdigit() and int(p) > 2:\n"
          "        os.kill(int(p), signal.SIGKILL)")  # fmt: skip
    with pytest.raises(CheckpointLost, match="gone"):
        s.restore(victim)
    assert s.run("1 + 1").value == "2"  # the session itself is untouched


def test_code_in_the_session_cannot_make_a_snapshot_restore_itself(session: Session) -> None:
    session.run("x = 'checkpointed'")
    cp = session.checkpoint()
    session.run("x = 'live'")
    poke = session.run(
        "import os, signal, time\nfor p in os.listdir('/proc'):\n"
        "    if p.isdigit() and int(p) != os.getpid():\n"
        "        try: os.kill(int(p), signal.SIGUSR1)\n        except OSError: pass\n"
        "time.sleep(0.2)"
    )
    assert poke.ok
    assert session.run("x").value == "'live'"
    assert cp.alive
    session.restore(cp)
    assert session.run("x").value == "'checkpointed'"


def test_closing_the_session_releases_its_checkpoints(new_session: Callable[..., Session]) -> None:
    s = new_session()
    cp = s.checkpoint()
    s.close()
    assert cp.released and not cp.alive


def test_forked_sessions_are_independent_and_start_from_the_parent(
    new_session: Callable[..., Session],
) -> None:
    parent = new_session()
    parent.run("import os\nstate = ['start']\nopen('who.txt', 'w').write('parent')")
    kids = parent.fork(3)
    assert len({k.id for k in kids} | {parent.id}) == 4
    for i, kid in enumerate(kids):
        r = kid.run(f"state.append({i}); open('who.txt', 'w').write('kid{i}'); state")
        assert r.value == f"['start', {i}]"
    for i, kid in enumerate(kids):  # each kept its own memory and its own files
        assert kid.run("state, open('who.txt').read()").value == f"(['start', {i}], 'kid{i}')"
    assert parent.run("state, open('who.txt').read()").value == "(['start'], 'parent')"
    # a child's own checkpoints work while its siblings run in between
    cp = kids[0].checkpoint()
    kids[0].run("state.append('late')")
    kids[1].run("state.append('sibling')")
    kids[0].restore(cp)
    assert kids[0].run("state").value == "['start', 0]"
    assert kids[1].run("state").value == "['start', 1, 'sibling']"
    # closing one member leaves the rest of the family running
    kids[2].close()
    assert kids[1].run("len(state)").value == "3"
    assert parent.run("len(state)").value == "1"


def test_a_fork_of_a_fork_and_a_dead_member(new_session: Callable[..., Session]) -> None:
    parent = new_session(limits=Limits(cpu_seconds=0.3, grace_seconds=0.2))
    parent.run("depth = 0")
    (child,) = parent.fork(1)
    child.run("depth = 1")
    (grandchild,) = child.fork(1)
    assert grandchild.run("depth").value == "1"
    dead = child.run("import os; os._exit(1)")
    assert not dead.session_alive
    with pytest.raises(SessionDead):
        child.run("depth")
    assert grandchild.run("depth + 1").value == "2"
    assert parent.run("depth").value == "0"


def test_fork_needs_a_positive_count(session: Session) -> None:
    with pytest.raises(ValueError, match="positive"):
        session.fork(0)
