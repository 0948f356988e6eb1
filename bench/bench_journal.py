"""Journal benchmarks: what journaling costs a run, measured on the same sessions, interleaved.

1. floor:      ``pwrite`` + ``fdatasync`` of 200 bytes in the journal's directory: what any
               durable append costs on this disk, whatever stores it.
2. append:     ``Journal.append`` of a real run's payload (the ``RunResult`` a session
               journals), one thread, with ``fsync=True`` (the default: durable on disk) and
               ``fsync=False`` (durable against a crash of the host process, not of the
               machine). Journals are warmed past their first WAL checkpoint (steady state);
               the first appends to a new file are shown apart (the WAL still grows then,
               and each sync also commits the file's new size).
3. group:      T threads appending at once (1, 4, 16): appends per second and the cost of
               one append in wall time; one commit covers every row queued while the previous
               one synced.
4. per run:    ``x = x + 1`` in one session with journaling off, on (fsync) and on (no fsync),
               switched on the same session in alternating blocks, so machine noise hits all
               three alike. The overhead is the difference of the medians.
5. concurrent: 8 sessions run from 8 threads, journal off and on (fsync), alternating rounds:
               the per-run overhead once group commit shares syncs between sessions.

Usage: python bench/bench_journal.py [--quick] [--dir DIR] [--out FILE]
Writes bench/results/journal.json (or --out).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common import Summary, machine_facts, summarize, wait_idle
from tracebox import Runtime, Session
from tracebox.journal import Journal

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "journal.json"
console = Console(highlight=False)
if not console.is_terminal:
    console.width = 120

FULL = {"floor": 500, "append": 1000, "group": 200, "block": 100, "rounds": 12, "concurrent": 50}
QUICK = {"floor": 100, "append": 200, "group": 50, "block": 50, "rounds": 4, "concurrent": 20}


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


def quiet(label: str, idle_log: dict[str, Any], timeout: float) -> None:
    gc.collect()
    idle = wait_idle(timeout=timeout)
    idle_log[label] = asdict(idle)
    if idle.timed_out:
        console.print(f"[yellow]  ! machine {idle.busy:.0%} busy; timing '{label}' anyway[/]")


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def table(title: str, rows: list[tuple[str, Summary, str]]) -> Table:
    t = Table(title=title, title_justify="left")
    for name in ("what", "p50 µs", "p90 µs", "p99 µs", "mean µs", "n", "note"):
        t.add_column(name, justify="left" if name in ("what", "note") else "right")
    for what, s, note in rows:
        t.add_row(what, us(s.p50), us(s.p90), us(s.p99), us(s.mean), str(s.n), note)
    return t


# -- 1. the disk's floor ----------------------------------------------------------------------


def section_floor(d: Path, n: int) -> Summary:
    path = d / "floor.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, bytes(64 * 4096))
        os.fsync(fd)
        i = 0

        def one() -> None:
            nonlocal i
            os.pwrite(fd, b"x" * 200, (i % 64) * 4096)
            os.fdatasync(fd)
            i += 1

        return summarize(timed(one, n))
    finally:
        os.close(fd)
        path.unlink()


# -- 2. one appender --------------------------------------------------------------------------


def run_payload(rt: Runtime) -> dict[str, Any]:
    """What a session journals for ``x = x + 1``: taken from a real run."""
    with rt.session() as s:
        s.run("x = 0")
        result = s.run("x = x + 1")
    data = result.model_dump(mode="json", exclude={"trace"})
    return {"code": "x = x + 1", "trace": None, "tools": [], "result": data}


WARM = 1500  # appends that take a new journal's WAL past its first checkpoint


def warm(j: Journal, payload: dict[str, Any]) -> None:
    """Append until the WAL has been checkpointed once and is rewritten in place."""
    for _ in range(WARM):
        j.append("warm", "run", payload)


def section_append(d: Path, payload: dict[str, Any], n: int) -> dict[str, Summary]:
    out = {}
    for fsync in (True, False):
        with Journal(d / f"append-{fsync}.db", fsync=fsync) as j:
            one = lambda j=j: j.append("a1b2c3d4e5f6", "run", payload)  # noqa: E731
            if fsync:  # a journal just opened: its WAL file still grows with each commit
                out["fsync=True, new file"] = summarize(timed(one, min(n, 400)))
            warm(j, payload)
            out[f"fsync={fsync}"] = summarize(timed(one, n))
    return out


# -- 3. group commit --------------------------------------------------------------------------


def section_group(d: Path, payload: dict[str, Any], per_thread: int) -> list[dict[str, Any]]:
    rows = []
    for threads in (1, 4, 16):
        with Journal(d / f"group-{threads}.db") as j:
            warm(j, payload)
            latencies: list[float] = []
            lock = threading.Lock()

            def work(
                k: int, j: Journal = j, lock: threading.Lock = lock, out: list[float] = latencies
            ) -> None:
                mine = timed(lambda: j.append(f"s{k}", "run", payload), per_thread)
                with lock:
                    out.extend(mine)

            pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
            t0 = time.perf_counter()
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            wall = time.perf_counter() - t0
        total = threads * per_thread
        rows.append(
            {
                "threads": threads,
                "appends": total,
                "per_second": round(total / wall),
                "wall_per_append_us": round(wall / total * 1e6, 1),
                "latency": summarize(latencies).ms(),
            }
        )
    return rows


# -- 4. per run, one session ------------------------------------------------------------------


def section_per_run(
    rt: Runtime, sync: Journal, nosync: Journal, block: int, rounds: int
) -> dict[str, Summary]:
    """Alternate the journal of one session between off, fsync and no fsync, block by block.

    ``Session._journal`` is switched directly: the same session (same worker, same cgroup)
    serves all three, so the differences are the journal's alone.
    """
    modes: dict[str, Journal | None] = {"off": None, "fsync": sync, "no fsync": nosync}
    samples: dict[str, list[float]] = {m: [] for m in modes}
    s = rt.session()
    s.run("x = 0")
    timed(lambda: s.run("x = x + 1"), 50)  # warm
    order = list(modes)
    for r in range(rounds):
        for m in order[r % 3 :] + order[: r % 3]:  # rotate which mode goes first
            s._journal = modes[m]
            samples[m] += timed(lambda: s.run("x = x + 1"), block)
    s._journal = sync
    total = 50 + rounds * 3 * block + 1
    assert s.run("x").value == str(total - 1), "runs went missing"
    s.close()
    return {m: summarize(v) for m, v in samples.items()}


# -- 5. concurrent sessions -------------------------------------------------------------------


def section_concurrent(rt: Runtime, sync: Journal, runs: int, rounds: int) -> dict[str, Any]:
    sessions = [rt.session() for _ in range(8)]
    for s in sessions:
        s.run("x = 0")
    walls: dict[str, list[float]] = {"off": [], "fsync": []}

    def one_round(journal: Journal | None) -> float:
        for s in sessions:
            s._journal = journal
        barrier = threading.Barrier(len(sessions) + 1)

        def work(s: Session) -> None:
            barrier.wait()
            for _ in range(runs):
                s.run("x = x + 1")

        pool = [threading.Thread(target=work, args=(s,)) for s in sessions]
        for t in pool:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in pool:
            t.join()
        return time.perf_counter() - t0

    for r in range(rounds):
        for mode in ("off", "fsync") if r % 2 == 0 else ("fsync", "off"):
            walls[mode].append(one_round(None if mode == "off" else sync))
    for s in sessions:
        s._journal = sync
        s.close()
    total = len(sessions) * runs
    off, on = statistics.median(walls["off"]), statistics.median(walls["fsync"])
    return {
        "sessions": len(sessions),
        "runs_per_round": total,
        "rounds": rounds,
        "runs_per_second_off": round(total / off),
        "runs_per_second_fsync": round(total / on),
        "wall_per_run_off_us": round(off / total * 1e6, 1),
        "wall_per_run_fsync_us": round(on / total * 1e6, 1),
        "overhead_per_run_us": round((on - off) / total * 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="what the journal costs a run")
    ap.add_argument("--quick", action="store_true", help="small sample counts (smoke test)")
    ap.add_argument("--dir", type=Path, default=None, help="where the journals go (a temp dir)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--idle-timeout", type=float, default=None)
    args = ap.parse_args(argv)
    n = QUICK if args.quick else FULL
    idle_timeout = args.idle_timeout or (10.0 if args.quick else 60.0)
    idle_log: dict[str, Any] = {}
    base = Path(tempfile.mkdtemp(prefix="tracebox-bench-journal-", dir=args.dir))
    res: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "dir": str(base),
        "samples": n,
    }
    console.print(f"[bold]journal benchmark[/] in {base} (python {sys.version.split()[0]})")

    quiet("floor", idle_log, idle_timeout)
    floor = section_floor(base, n["floor"])
    quiet("append", idle_log, idle_timeout)
    with Runtime(pool_size=1) as plain:
        payload = run_payload(plain)
    appends = section_append(base, payload, n["append"])
    console.print(
        table(
            "1-2. one durable append",
            [
                ("pwrite + fdatasync (the disk's floor)", floor, ""),
                ("Journal.append, fsync=True", appends["fsync=True"], "default, steady state"),
                (
                    "Journal.append, fsync=True, first appends",
                    appends["fsync=True, new file"],
                    "WAL still growing",
                ),
                ("Journal.append, fsync=False", appends["fsync=False"], "process-crash safe"),
            ],
        )
    )
    quiet("group", idle_log, idle_timeout)
    group = section_group(base, payload, n["group"])
    g = Table(title="3. group commit (fsync=True)", title_justify="left")
    for name in ("threads", "appends/s", "wall per append µs", "latency p50 µs", "p99 µs"):
        g.add_column(name, justify="right")
    for row in group:
        lat = row["latency"]
        g.add_row(
            str(row["threads"]),
            str(row["per_second"]),
            str(row["wall_per_append_us"]),
            f"{lat['p50'] * 1e3:.0f}",
            f"{lat['p99'] * 1e3:.0f}",
        )
    console.print(g)

    with (
        Journal(base / "runs.db") as sync,
        Journal(base / "runs-nosync.db", fsync=False) as nosync,
        Runtime(journal=sync, pool_size=2) as rt,
    ):
        warm(sync, payload)
        warm(nosync, payload)
        quiet("per_run", idle_log, idle_timeout)
        per_run = section_per_run(rt, sync, nosync, n["block"], n["rounds"])
        off = per_run["off"]
        rows = []
        for mode, s in per_run.items():
            note = (
                ""
                if mode == "off"
                else f"+{us(s.p50 - off.p50)} µs p50, +{us(s.mean - off.mean)} µs mean, "
                f"{s.p50 / off.p50:.2f}x"
            )
            rows.append((f"run x = x + 1, journal {mode}", s, note))
        console.print(table("4. per run, one session, modes interleaved", rows))
        quiet("concurrent", idle_log, idle_timeout)
        conc = section_concurrent(rt, sync, n["concurrent"], max(2, n["rounds"] // 2))
        console.print(
            f"5. {conc['sessions']} sessions x {conc['runs_per_round'] // conc['sessions']} runs "
            f"from {conc['sessions']} threads: off {conc['runs_per_second_off']} runs/s, "
            f"fsync {conc['runs_per_second_fsync']} runs/s; "
            f"overhead {conc['overhead_per_run_us']} µs of wall time per run"
        )
    res.update(
        floor=floor.ms(),
        append={k: v.ms() for k, v in appends.items()},
        group=group,
        per_run={k: v.ms() for k, v in per_run.items()},
        per_run_overhead_us={
            m: {
                "p50": round((s.p50 - off.p50) * 1e6, 1),
                "mean": round((s.mean - off.mean) * 1e6, 1),
                "ratio_p50": round(s.p50 / off.p50, 3),
            }
            for m, s in per_run.items()
            if m != "off"
        },
        concurrent=conc,
        idle=idle_log,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    console.print(f"wrote {args.out}")
    for f in base.iterdir():
        f.unlink()
    base.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
