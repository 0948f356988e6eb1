"""Checkpoint, restore and fork latency against saving and loading the same state with pickle
and cloudpickle, for sessions holding 10 MB, 100 MB and 1 GB of live Python objects.

    .venv/bin/python bench/bench_checkpoint.py [--sizes 10,100,1000] [--reps 5] [--quick]

Everything runs in one process, on one machine, side by side. The state is a list of small
Python objects (ints, strings, tuples, dicts: the shape agents' variables have), built inside
a real session. ``pickle`` and ``cloudpickle`` are timed inside the same session on the same
object graph (``dumps`` then ``loads``), so the sandbox costs them nothing extra. They are
also asked to save what a checkpoint keeps besides plain data (a generator, a lambda, an open
file), and what they fail on is printed.

Targets (issue 4): checkpoint and restore of a 1 GB session each under 10 ms and at least 100x
faster than pickling it; fork(8) under 20 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common import machine_facts, wait_idle
from tracebox import Limits, Runtime

BUILD = """\
import gc
def _build(mb):
    rows, size = [], 0
    i = 0
    while size < mb << 20:
        row = (i, str(i) * 3, {"k": i, "v": [i, i + 1]})
        rows.append(row)
        size += 360  # measured: about 360 bytes per row with its containers
        i += 1
    return rows
state = _build({mb})
gc.collect()
"""

EXTRAS = """\
gen = (i * i for i in range(10))
next(gen)
fn = lambda x: x + 1
handle = open("notes.txt", "w")
handle.write("kept")
"""

PICKLE_TIMING = """\
import time, pickle
try:
    import cloudpickle
except ImportError:
    cloudpickle = None
def _time(mod, obj):
    t0 = time.perf_counter()
    data = mod.dumps(obj, protocol=5)
    t1 = time.perf_counter()
    mod.loads(data)
    t2 = time.perf_counter()
    return (t1 - t0, t2 - t1, len(data))
def _fails(mod):
    out = {}
    for name in ("gen", "fn", "handle"):
        try:
            mod.dumps(globals()[name])
            out[name] = "ok"
        except Exception as exc:
            out[name] = type(exc).__name__
    return out
({"pickle": _time(pickle, state)}
 | ({"cloudpickle": _time(cloudpickle, state)} if cloudpickle else {})
 | {"fails": {"pickle": _fails(pickle)} | ({"cloudpickle": _fails(cloudpickle)}
                                             if cloudpickle else {})})
"""


def _ms(xs: list[float]) -> dict[str, float]:
    return {"best": round(min(xs) * 1e3, 3), "median": round(statistics.median(xs) * 1e3, 3)}


def measure(rt: Runtime, mb: int, reps: int) -> dict[str, object]:
    limits = Limits(
        memory_mb=max(512, 5 * mb + 512),
        checkpoint_memory_mb=max(512, 2 * mb),
        cpu_seconds=600,
        wall_seconds=1200,
        max_checkpoints=64,
    )
    with rt.session(limits=limits) as s:
        r = s.run(BUILD.replace("{mb}", str(mb)) + EXTRAS)
        assert r.ok, r.error
        rss = s.run("int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) // 1024")
        checkpoint_s, restore_s, fork_s = [], [], []
        for _ in range(reps):
            wait_idle()
            t0 = time.perf_counter()
            cp = s.checkpoint()
            checkpoint_s.append(time.perf_counter() - t0)
            s.run("state.append('changed')")
            t0 = time.perf_counter()
            s.restore(cp)
            restore_s.append(time.perf_counter() - t0)
            assert s.run("state[-1] != 'changed'").value == "True"
            cp.release()
        for _ in range(max(1, reps // 2)):
            wait_idle()
            t0 = time.perf_counter()
            kids = s.fork(8)
            fork_s.append(time.perf_counter() - t0)
            for kid in kids:
                kid.close()
        wait_idle()
        timing = s.run(PICKLE_TIMING)
        assert timing.ok, timing.error
        peers = json.loads(json.dumps(eval(timing.value or "{}")))  # the session's repr
    row: dict[str, object] = {
        "mb": mb,
        "rss_mb": int(rss.value or 0),
        "checkpoint_ms": _ms(checkpoint_s),
        "restore_ms": _ms(restore_s),
        "fork8_ms": _ms(fork_s),
        "fails": peers.pop("fails"),
    }
    for name, (dump, load, size) in peers.items():
        row[name] = {"dumps_ms": round(dump * 1e3, 1), "loads_ms": round(load * 1e3, 1),
                     "bytes": size}  # fmt: skip
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="10 and 100 MB, 3 reps")
    ap.add_argument("--huge-pages", action="store_true", help="Runtime(huge_pages=True)")
    args = ap.parse_args()
    sizes = [10, 100] if args.quick else [int(x) for x in args.sizes.split(",")]
    reps = 3 if args.quick else args.reps
    rows = []
    with Runtime(pool_size=0, huge_pages=args.huge_pages) as rt:
        for mb in sizes:
            rows.append(measure(rt, mb, reps))
            print(json.dumps(rows[-1]), flush=True)
    print()
    head = (f"{'state':>8} {'RSS':>7} {'checkpoint':>11} {'restore':>9} {'fork(8)':>9} "
            f"{'pickle dumps+loads':>19} {'cloudpickle':>12} {'ckpt vs pickle':>15}")  # fmt: skip
    print(head)
    for row in rows:
        cp, rs, fk = row["checkpoint_ms"], row["restore_ms"], row["fork8_ms"]
        pk = row.get("pickle", {})
        cpk = row.get("cloudpickle", {})
        pk_ms = pk.get("dumps_ms", 0) + pk.get("loads_ms", 0)  # type: ignore[union-attr]
        cpk_ms = cpk.get("dumps_ms", 0) + cpk.get("loads_ms", 0)  # type: ignore[union-attr]
        ratio = pk_ms / max(cp["median"] + rs["median"], 1e-9)  # type: ignore[index]
        print(f"{row['mb']:>6}MB {row['rss_mb']:>5}MB {cp['median']:>9.2f}ms "  # type: ignore[index]
              f"{rs['median']:>7.2f}ms {fk['median']:>7.2f}ms {pk_ms:>17.0f}ms "  # type: ignore[index]
              f"{cpk_ms:>10.0f}ms {ratio:>14.0f}x")  # fmt: skip
    print()
    print("what pickling fails on (a checkpoint keeps all of them):", rows[0]["fails"])
    out = Path(__file__).parent / "results" / "checkpoint.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine_facts(), "rows": rows}, indent=1))
    print(f"saved {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
