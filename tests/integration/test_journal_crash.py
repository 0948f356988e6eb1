"""Crash safety: a host killed with SIGKILL at random points never loses an acknowledged
journal entry, and the chain still verifies.

A child process runs a journaled Runtime: two sessions in two threads do runs, checkpoints
and restores in a loop and print an ``ack`` line after each operation returns. The test
kills the child at a random moment, then checks that every acked operation is in the
journal, that the journal verifies, and that the next host can open it and append.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from tracebox.journal import Journal

CHILD = textwrap.dedent(
    """
    import sys, threading
    from tracebox import Runtime

    out = threading.Lock()

    def ack(*words):
        with out:
            sys.stdout.write(" ".join(map(str, words)) + "\\n")
            sys.stdout.flush()

    def work(rt, k):
        s = rt.session()
        ack("created", s.id)
        i = 0
        while True:
            i += 1
            s.run(f"i = {i}")
            ack("run", s.id, f"i = {i}")
            if i % 4 == k:
                cp = s.checkpoint()
                ack("checkpoint", s.id, cp.id)
                s.run("i = -1")
                s.restore(cp)
                ack("restore", s.id, cp.id)
                cp.release()
                ack("release", s.id, cp.id)

    rt = Runtime(journal=sys.argv[1], pool_size=2)
    threads = [threading.Thread(target=work, args=(rt, k), daemon=True) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    """
)
ROUNDS = 12
BUDGET = 20.0  # seconds: stop early (after at least 4 rounds) on a slow machine


def _kill_at_random(path: Path, script: Path, rng: random.Random) -> list[str]:
    """One host life: start it, wait a random while, SIGKILL it; return the ack lines."""
    child = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert child.stdout is not None
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            if raw.endswith(b"\n"):  # a line cut by the kill was never acknowledged
                lines.append(raw.decode())
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started.wait(30)
    time.sleep(rng.uniform(0.0, 0.35))  # somewhere in the middle of runs and checkpoints
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    reader.join(30)
    child.stdout.close()
    return lines


def test_sigkilled_hosts_never_lose_an_acknowledged_entry(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4))
    rng = random.Random(seed)
    script = tmp_path / "host.py"
    script.write_text(CHILD)
    path = tmp_path / "journal.db"
    acked: list[tuple[str, str, str]] = []
    began = time.monotonic()
    rounds = 0
    while rounds < ROUNDS and (rounds < 4 or time.monotonic() - began < BUDGET):
        rounds += 1
        lines = _kill_at_random(path, script, rng)
        assert lines, f"round {rounds} (seed {seed}): the host acknowledged nothing"
        for line in lines:
            kind, session, *rest = line.rstrip("\n").split(" ", 2)
            acked.append((kind, session, rest[0] if rest else ""))
        report = Journal(path, readonly=True).verify()
        assert report.ok, f"round {rounds} (seed {seed}): {report.describe()}"
        stored = set()
        for e in Journal(path, readonly=True).events():
            detail = e.data.get("code") or e.data.get("checkpoint") or ""
            stored.add((e.kind, e.session, str(detail)))
        lost = [a for a in acked if a not in stored]
        assert not lost, f"round {rounds} (seed {seed}): acknowledged but not journaled: {lost}"
    kinds = {kind for kind, _, _ in acked}
    assert {"created", "run", "checkpoint", "restore"} <= kinds
    assert len(acked) > 10 * rounds
    with Journal(path) as j:  # the next host can open it and go on
        j.append("after", "close", {})
        assert j.verify().ok
