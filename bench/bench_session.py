"""Session benchmarks: tracebox next to a Jupyter kernel, measured in one run on one machine.

1. start:      a session that is ready to run code. tracebox: ``rt.session()`` plus a first
               ``pass``; (a) warm pool refilled before each sample (the headline), (b) back to
               back with a pool of 2 that is never waited for, (c) on demand with no pool (a
               fork from the template plus confinement). Jupyter: ``start_new_kernel()`` until
               the kernel_info reply.
2. round trip: ``x = x + 1`` in a warm session. Jupyter: ``execute`` until the shell
               execute_reply; iopub is drained afterwards, untimed.
3. concurrent: 100 sessions open at once: time to open, run latency while all exist, memory
               (RSS and PSS) per idle session, host memory before and after, and a check that
               closing leaves no process or cgroup behind. One idle ipykernel for reference.

Every timed block first waits for an idle machine (see ``common.wait_idle``). The machine is
shared, so absolute times move from run to run; the ratios between tools measured in the same
run are what matter.

Usage: python bench/bench_session.py [--quick] [--samples NAME=N ...] [--no-jupyter]
Writes bench/results/session.json (or --out).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common import (
    Summary,
    descendants,
    git_revision,
    machine_facts,
    meminfo_kb,
    proc_memory,
    summarize,
    tracebox_cgroups,
    wait_idle,
)
from tracebox import Runtime, Session, TraceboxError

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "session.json"

FULL: dict[str, int] = {
    "start": 50,  # tracebox session + first run, per mode (warm, back-to-back, on demand)
    "jupyter_start": 8,
    "roundtrip": 2000,
    "jupyter_roundtrip": 1000,
    "sessions": 100,
    "rounds": 5,  # rounds of one run per session while all sessions exist
}
QUICK: dict[str, int] = {
    "start": 10,
    "jupyter_start": 2,
    "roundtrip": 300,
    "jupyter_roundtrip": 100,
    "sessions": 20,
    "rounds": 2,
}
TARGETS = {
    "start_p50_ms": 20.0,
    "start_ratio": 10.0,
    "roundtrip_p50_ms": 0.5,
    "roundtrip_ratio": 5.0,
}
WARM_POOL = 2
ROUNDTRIP_REPS = 4  # section 2 runs in this many interleaved blocks
SETTLE = 0.01  # after the pool refills, before the next start sample
REPLY_TIMEOUT = 30.0

console = Console(highlight=False)
if not console.is_terminal:  # piped or logged: 80 columns would wrap every table
    console.width = 120


# -- running the benchmark ----------------------------------------------------------------------


@dataclass
class Bench:
    samples: dict[str, int]
    idle_timeout: float
    jupyter: bool
    threads: int
    idle_log: dict[str, dict[str, Any]] = field(default_factory=dict)

    def quiet(self, label: str) -> None:
        """Wait for an idle machine before the timed block ``label`` and record what we saw."""
        gc.collect()
        idle = wait_idle(timeout=self.idle_timeout)
        self.idle_log[label] = asdict(idle)
        if idle.timed_out:
            console.print(
                f"[yellow]  ! machine still {idle.busy:.0%} busy after {idle.waited_s:.0f} s; "
                f"timing '{label}' anyway[/yellow]"
            )


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def fmt_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1f}x"


def ratio(slow: Summary | None, fast: Summary | None) -> float | None:
    if slow is None or fast is None or fast.p50 <= 0:
        return None
    return slow.p50 / fast.p50


def check_ok(result: Any, what: str) -> None:
    if result.status != "ok":
        raise RuntimeError(f"{what}: run ended {result.status}: {result.error}")


def latency_table(title: str, rows: list[tuple[str, Summary | None, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("measurement")
    for col in ("n", "p50 ms", "p90 ms", "p99 ms", "min ms", "max ms"):
        table.add_column(col, justify="right")
    table.add_column("note")
    for label, s, note in rows:
        if s is None:
            table.add_row(label, "-", "-", "-", "-", "-", "-", note)
            continue
        table.add_row(
            label,
            str(s.n),
            fmt_ms(s.p50),
            fmt_ms(s.p90),
            fmt_ms(s.p99),
            fmt_ms(s.min),
            fmt_ms(s.max),
            note,
        )
    return table


# -- Jupyter ------------------------------------------------------------------------------------


def jupyter_versions() -> dict[str, str] | None:
    try:
        return {name: importlib.metadata.version(name) for name in ("jupyter_client", "ipykernel")}
    except importlib.metadata.PackageNotFoundError:
        return None


def start_kernel() -> tuple[Any, Any]:
    """Start an ipykernel and return (manager, client) once it answers kernel_info."""
    from jupyter_client.manager import start_new_kernel

    return start_new_kernel(kernel_name="python3", stderr=subprocess.DEVNULL)


def stop_kernel(km: Any, kc: Any) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def kernel_pid(km: Any) -> int | None:
    process = getattr(km.provisioner, "process", None)
    pid = getattr(process, "pid", None)
    return pid if isinstance(pid, int) else None


def execute_reply(kc: Any, code: str) -> dict[str, Any]:
    """Send ``code`` and wait for its shell execute_reply (iopub is left unread)."""
    msg_id = kc.execute(code)
    while True:
        msg: dict[str, Any] = kc.get_shell_msg(timeout=REPLY_TIMEOUT)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


def drain_iopub(kc: Any, msg_id: str) -> None:
    """Read iopub up to the request's status=idle. Unread iopub messages pile up past ZMQ's
    high-water mark, are dropped, and a later execute_interactive then waits forever."""
    while True:
        msg = kc.get_iopub_msg(timeout=REPLY_TIMEOUT)
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
        ):
            return


def jupyter_run(kc: Any, code: str) -> float:
    """Seconds from ``execute`` to the shell reply; iopub is drained after the clock stops."""
    t0 = time.perf_counter()
    reply = execute_reply(kc, code)
    elapsed = time.perf_counter() - t0
    drain_iopub(kc, reply["parent_header"]["msg_id"])
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"jupyter execute failed: {reply['content']}")
    return elapsed


def jupyter_value(kc: Any, expr: str) -> str:
    reply = kc.execute_interactive("", user_expressions={"v": expr}, timeout=REPLY_TIMEOUT)
    return str(reply["content"]["user_expressions"]["v"]["data"]["text/plain"])


# -- 1. start -----------------------------------------------------------------------------------


@dataclass
class StartSamples:
    total: list[float] = field(default_factory=list)
    session: list[float] = field(default_factory=list)  # rt.session()
    first_run: list[float] = field(default_factory=list)  # the first s.run("pass")

    def summaries(self) -> dict[str, Any]:
        return {k: summarize(v).ms() for k, v in asdict(self).items()}


def tracebox_starts(rt: Runtime, n: int, *, refill: bool) -> StartSamples:
    out = StartSamples()
    for _ in range(n):
        if refill:
            if not rt.wait_warm(60):
                raise RuntimeError("the warm pool did not refill within 60 s")
            time.sleep(SETTLE)
        t0 = time.perf_counter()
        s = rt.session()
        t1 = time.perf_counter()
        r = s.run("pass")
        t2 = time.perf_counter()
        check_ok(r, "first run")
        s.close()
        out.total.append(t2 - t0)
        out.session.append(t1 - t0)
        out.first_run.append(t2 - t1)
    return out


def warm_up_starts(rt: Runtime, n: int = 3) -> None:
    for _ in range(n):
        with rt.session() as s:
            check_ok(s.run("pass"), "warm-up run")


def section_start(b: Bench) -> dict[str, Any]:
    console.rule("1. Session ready to run code")
    n = b.samples["start"]
    res: dict[str, Any] = {}
    with Runtime(pool_size=WARM_POOL) as rt:
        if not rt.wait_warm(60):
            raise RuntimeError("the warm pool did not fill within 60 s")
        warm_up_starts(rt)
        b.quiet("start.warm")
        warm = tracebox_starts(rt, n, refill=True)
        b.quiet("start.burst")
        burst = tracebox_starts(rt, n, refill=False)
    with Runtime(pool_size=0) as rt:
        warm_up_starts(rt)
        b.quiet("start.on_demand")
        cold = tracebox_starts(rt, n, refill=False)
    res["tracebox_warm"] = warm.summaries()
    res["tracebox_back_to_back"] = burst.summaries()
    res["tracebox_on_demand"] = cold.summaries()
    s_warm, s_burst, s_cold = (summarize(x.total) for x in (warm, burst, cold))

    j_ready: Summary | None = None
    j_first: Summary | None = None
    if b.jupyter:
        ready, first = [], []
        stop_kernel(*start_kernel())  # untimed: page cache and imports, as for tracebox
        for i in range(b.samples["jupyter_start"]):
            b.quiet(f"start.jupyter.{i}")
            t0 = time.perf_counter()
            km, kc = start_kernel()
            t1 = time.perf_counter()
            jupyter_run(kc, "pass")
            t2 = time.perf_counter()
            stop_kernel(km, kc)
            ready.append(t1 - t0)
            first.append(t2 - t0)
        j_ready, j_first = summarize(ready), summarize(first)
        res["jupyter_ready"] = j_ready.ms()
        res["jupyter_first_execute"] = j_first.ms()
    res["ratio_p50_jupyter_ready_over_warm"] = ratio(j_ready, s_warm)
    res["ratio_p50_jupyter_ready_over_on_demand"] = ratio(j_ready, s_cold)

    split = (
        f"session() p50 {fmt_ms(summarize(warm.session).p50)}"
        f" + run {fmt_ms(summarize(warm.first_run).p50)}"
    )
    console.print(
        latency_table(
            "session ready (tracebox: session() + first run 'pass')",
            [
                (
                    f"tracebox, warm pool of {WARM_POOL} refilled (headline)",
                    s_warm,
                    split,
                ),
                (
                    f"tracebox, back to back, pool of {WARM_POOL} not waited for",
                    s_burst,
                    "pool hits mixed with on-demand starts",
                ),
                ("tracebox, on demand (pool_size=0)", s_cold, "fork from template + confinement"),
                ("jupyter start_new_kernel -> kernel_info", j_ready, "kernel ready"),
                ("jupyter start -> first execute_reply", j_first, "for reference"),
            ],
        )
    )
    console.print(
        f"  ratio jupyter/tracebox p50: warm pool {fmt_ratio(ratio(j_ready, s_warm))}, "
        f"on demand {fmt_ratio(ratio(j_ready, s_cold))}"
    )
    return res


# -- 2. round trip ------------------------------------------------------------------------------


def timed_calls(fn: Callable[[], Any], n: int) -> tuple[list[float], list[Any]]:
    """Call ``fn`` ``n`` times; (seconds per call, what each call returned)."""
    times, values = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
        values.append(value)
    return times, values


def section_roundtrip(b: Bench) -> dict[str, Any]:
    """Tracebox and Jupyter blocks interleaved in ROUNDTRIP_REPS reps, each after an idle wait,
    so a burst of foreign load disturbs both sides alike and shows up as one odd rep."""
    console.rule("2. Round trip of a trivial run in a warm session")
    n, jn, reps = b.samples["roundtrip"], b.samples["jupyter_roundtrip"], ROUNDTRIP_REPS
    res: dict[str, Any] = {"reps": reps}
    lat: list[float] = []
    ping: list[float] = []
    jlat: list[float] = []
    rep_p50: dict[str, list[float]] = {"tracebox": [], "tracebox_ping": [], "jupyter": []}
    km = kc = None
    with Runtime(pool_size=1) as rt, rt.session() as s:
        try:
            check_ok(s.run("x = 0"), "setup")
            for _ in range(200):
                s.run("x = x + 0")
            if b.jupyter:
                km, kc = start_kernel()
                jupyter_run(kc, "x = 0")
                for _ in range(50):
                    jupyter_run(kc, "x = x + 0")
            for rep in range(reps):
                b.quiet(f"roundtrip.tracebox.{rep}")
                block, results = timed_calls(lambda: s.run("x = x + 1"), max(1, n // reps))
                for r in results:
                    check_ok(r, "x = x + 1")
                lat += block
                rep_p50["tracebox"].append(summarize(block).p50)
                b.quiet(f"roundtrip.tracebox_ping.{rep}")
                block, pongs = timed_calls(s.ping, max(1, n // reps))
                if not all(pongs):
                    raise RuntimeError("tracebox: a ping went unanswered")
                ping += block
                rep_p50["tracebox_ping"].append(summarize(block).p50)
                if kc is not None:
                    b.quiet(f"roundtrip.jupyter.{rep}")
                    block = [jupyter_run(kc, "x = x + 1") for _ in range(max(1, jn // reps))]
                    jlat += block
                    rep_p50["jupyter"].append(summarize(block).p50)
            final = s.run("x").value
            if final != str(len(lat)):
                raise RuntimeError(f"tracebox: x is {final}, expected {len(lat)}")
            if kc is not None and (jfinal := jupyter_value(kc, "x")) != str(len(jlat)):
                raise RuntimeError(f"jupyter: x is {jfinal}, expected {len(jlat)}")
        finally:
            if km is not None:
                stop_kernel(km, kc)
    tb, tb_ping = summarize(lat), summarize(ping)
    jp = summarize(jlat) if jlat else None
    res["tracebox"], res["tracebox_ping"] = tb.ms(), tb_ping.ms()
    if jp is not None:
        res["jupyter_reply"] = jp.ms()
    res["rep_p50_ms"] = {k: [round(v * 1e3, 4) for v in vs] for k, vs in rep_p50.items()}
    rep_ratios = [j / t for j, t in zip(rep_p50["jupyter"], rep_p50["tracebox"], strict=False)]
    res["rep_ratios"] = [round(r, 2) for r in rep_ratios]
    res["ratio_p50_jupyter_over_tracebox"] = ratio(jp, tb)

    def reps_note(key: str) -> str:
        return "rep p50s " + " / ".join(fmt_ms(v) for v in rep_p50[key])

    console.print(
        latency_table(
            "round trip 'x = x + 1'",
            [
                ("tracebox Session.run", tb, reps_note("tracebox")),
                ("tracebox Session.ping (no code runs)", tb_ping, reps_note("tracebox_ping")),
                ("jupyter execute -> execute_reply", jp, reps_note("jupyter") if jp else ""),
            ],
        )
    )
    console.print(
        f"  ratio jupyter/tracebox p50: {fmt_ratio(ratio(jp, tb))}"
        + (f" (per rep: {', '.join(fmt_ratio(r) for r in rep_ratios)})" if rep_ratios else "")
        + "; Session.run reports value, output, CPU and peak memory; iopub drained untimed"
    )
    return res


# -- 3. many sessions at once -------------------------------------------------------------------


def memory_of(pids: list[int]) -> dict[str, Any]:
    rss = pss = 0
    seen = 0
    for pid in pids:
        m = proc_memory(pid)
        if m is None:
            continue
        seen += 1
        rss += m.rss_kb
        pss += m.pss_kb or 0
    return {"processes": seen, "rss_kb": rss, "pss_kb": pss}


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if os.path.exists(f"/proc/{p}")]


def section_concurrent(b: Bench) -> dict[str, Any]:
    n, threads, rounds = b.samples["sessions"], b.threads, b.samples["rounds"]
    console.rule(f"3. {n} sessions at once")
    res: dict[str, Any] = {"sessions": n, "threads": threads, "warm_pool": WARM_POOL}
    rt = Runtime(pool_size=WARM_POOL)
    sessions: list[Session] = []
    try:
        if not rt.wait_warm(60):
            raise RuntimeError("the warm pool did not fill within 60 s")
        template_pid: int = rt._template._proc.pid
        prefix: str = rt._template._prefix
        b.quiet("concurrent.open")
        mem0 = meminfo_kb()

        def open_one(_: int) -> tuple[Session, float]:
            t0 = time.perf_counter()
            s = rt.session()
            return s, time.perf_counter() - t0

        def run_one(s: Session) -> float:
            t0 = time.perf_counter()
            r = s.run("x = 1")
            elapsed = time.perf_counter() - t0
            check_ok(r, "x = 1")
            return elapsed

        with ThreadPoolExecutor(threads) as ex:
            t0 = time.perf_counter()
            opened = list(ex.map(open_one, range(n)))
            open_all = time.perf_counter() - t0
            sessions = [s for s, _ in opened]
            first = list(ex.map(run_one, sessions))
            b.quiet("concurrent.runs")
            t0 = time.perf_counter()
            conc = [t for _ in range(rounds) for t in ex.map(run_one, sessions)]
            conc_wall = time.perf_counter() - t0
        b.quiet("concurrent.sequential")
        t0 = time.perf_counter()
        seq = [run_one(s) for _ in range(rounds) for s in sessions]
        seq_wall = time.perf_counter() - t0

        rt.wait_warm(60)
        b.quiet("concurrent.memory")
        pids = [s._worker.pid for s in sessions]
        mem1 = meminfo_kb()
        workers = memory_of(pids)
        template = memory_of([template_pid])
        live = descendants(template_pid)
        ours = tracebox_cgroups(prefix)

        t0 = time.perf_counter()
        for s in sessions:
            s.close()
        close_all = time.perf_counter() - t0
        after_close: dict[str, Any] = {
            "session_pids_alive": len(alive(pids)),
            "template_descendants": len(descendants(template_pid)),
            "cgroups_ours": len(tracebox_cgroups(prefix)),
            "expected_left": f"{WARM_POOL} idle pool workers and their cgroups",
        }
    finally:
        for s in sessions:
            s.close()
        rt.close()
    after_rt: dict[str, Any] = {
        "template_alive": os.path.exists(f"/proc/{template_pid}"),
        "session_pids_alive": len(alive(pids)),
        "cgroups_ours": len(tracebox_cgroups(prefix)),
        "cgroups_all_tracebox": len(tracebox_cgroups()),
    }
    s_open, s_open_each = summarize([open_all]), summarize([t for _, t in opened])
    s_first, s_conc, s_seq = summarize(first), summarize(conc), summarize(seq)
    avail_drop_kb = mem0["MemAvailable"] - mem1["MemAvailable"]
    res.update(
        open_all_s=round(open_all, 4),
        open_each=s_open_each.ms(),
        first_run=s_first.ms(),
        run_concurrent=s_conc.ms(),
        run_sequential=s_seq.ms(),
        runs_per_s_concurrent=round(len(conc) / conc_wall, 1),
        runs_per_s_sequential=round(len(seq) / seq_wall, 1),
        close_all_s=round(close_all, 4),
        workers=workers,
        per_session_rss_kb=workers["rss_kb"] / max(1, workers["processes"]),
        per_session_pss_kb=workers["pss_kb"] / max(1, workers["processes"]),
        template=template,
        processes_under_template=len(live),
        cgroups_ours_open=len(ours),
        host_mem_before_kb={k: mem0[k] for k in ("MemFree", "MemAvailable")},
        host_mem_after_kb={k: mem1[k] for k in ("MemFree", "MemAvailable")},
        host_available_drop_per_session_kb=avail_drop_kb / n,
        after_close=after_close,
        after_runtime_close=after_rt,
    )

    console.print(
        latency_table(
            f"{n} sessions, {threads} client threads",
            [
                (f"open all {n} (wall)", s_open, f"{n / open_all:.0f} sessions/s"),
                ("  one rt.session() while opening", s_open_each, "seen by each thread"),
                ("first run 'x = 1' in each", s_first, f"{threads} threads"),
                (
                    f"run 'x = 1', {rounds} rounds",
                    s_conc,
                    f"{threads} threads: {len(conc) / conc_wall:.0f} runs/s",
                ),
                (
                    f"run 'x = 1', {rounds} rounds",
                    s_seq,
                    f"1 thread: {len(seq) / seq_wall:.0f} runs/s",
                ),
            ],
        )
    )

    jupyter_mem: dict[str, Any] | None = None
    if b.jupyter:
        km, kc = start_kernel()
        try:
            jupyter_run(kc, "x = 1")
            time.sleep(1.0)
            pid = kernel_pid(km)
            jupyter_mem = memory_of([pid]) if pid else None
        finally:
            stop_kernel(km, kc)
    res["jupyter_idle_kernel"] = jupyter_mem

    mem = Table(title="memory of idle sessions", title_justify="left")
    for col in ("what", "RSS MB", "PSS MB", "note"):
        mem.add_column(col, justify="left" if col in ("what", "note") else "right")
    mb = 1024.0
    mem.add_row(
        f"all {workers['processes']} tracebox workers",
        f"{workers['rss_kb'] / mb:.1f}",
        f"{workers['pss_kb'] / mb:.1f}",
        "forked from the template: pages shared",
    )
    mem.add_row(
        "per tracebox session",
        f"{res['per_session_rss_kb'] / mb:.2f}",
        f"{res['per_session_pss_kb'] / mb:.2f}",
        "PSS is the fair share",
    )
    mem.add_row(
        "tracebox template",
        f"{template['rss_kb'] / mb:.1f}",
        f"{template['pss_kb'] / mb:.1f}",
        "one per Runtime",
    )
    mem.add_row(
        "host MemAvailable drop per session",
        f"{avail_drop_kb / n / mb:.2f}",
        "",
        "includes kernel memory (page tables, cgroups)",
    )
    if jupyter_mem:
        mem.add_row(
            "one idle ipykernel",
            f"{jupyter_mem['rss_kb'] / mb:.1f}",
            f"{jupyter_mem['pss_kb'] / mb:.1f}",
            "for reference",
        )
    console.print(mem)
    console.print(
        f"  host MemAvailable {mem0['MemAvailable'] / mb:.0f}"
        f" -> {mem1['MemAvailable'] / mb:.0f} MB,"
        f" MemFree {mem0['MemFree'] / mb:.0f} -> {mem1['MemFree'] / mb:.0f} MB;"
        f" open {open_all:.2f} s, close all {close_all:.2f} s"
    )
    console.print(
        f"  while open: {len(live)} processes under the template, {len(ours)} of our cgroups."
        f" After closing the sessions: {after_close['session_pids_alive']} session pids alive,"
        f" {after_close['template_descendants']} processes under the template,"
        f" {after_close['cgroups_ours']} of our cgroups (expected: {WARM_POOL} pool workers)."
        f" After rt.close(): template alive={after_rt['template_alive']},"
        f" {after_rt['session_pids_alive']} session pids, {after_rt['cgroups_ours']} of our"
        f" cgroups ({after_rt['cgroups_all_tracebox']} tracebox cgroups of anyone)."
    )
    leaks = after_close["session_pids_alive"] + after_rt["session_pids_alive"]
    leaks += after_rt["cgroups_ours"] + int(after_rt["template_alive"])
    res["leaked"] = leaks
    if leaks:
        console.print(f"[red]  ! {leaks} processes or cgroups were left behind[/red]")
    return res


# -- summary and entry point --------------------------------------------------------------------


def summary_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    start, rtrip = res["start"], res["roundtrip"]
    tb_start = start["tracebox_warm"]["total"]["p50"]
    tb_rt = rtrip["tracebox"]["p50"]
    j_start = start.get("jupyter_ready", {}).get("p50")
    j_rt = rtrip.get("jupyter_reply", {}).get("p50")
    r_start = start["ratio_p50_jupyter_ready_over_warm"]
    r_rt = rtrip["ratio_p50_jupyter_over_tracebox"]
    return [
        {
            "metric": "session ready p50 (warm pool)",
            "tracebox_ms": tb_start,
            "jupyter_ms": j_start,
            "ratio": r_start,
            "target": f"< {TARGETS['start_p50_ms']:g} ms and >= {TARGETS['start_ratio']:g}x",
            "met": tb_start < TARGETS["start_p50_ms"]
            and (r_start is None or r_start >= TARGETS["start_ratio"]),
        },
        {
            "metric": "session ready p50 (on demand)",
            "tracebox_ms": start["tracebox_on_demand"]["total"]["p50"],
            "jupyter_ms": j_start,
            "ratio": start["ratio_p50_jupyter_ready_over_on_demand"],
            "target": "",
            "met": None,
        },
        {
            "metric": "round trip 'x = x + 1' p50",
            "tracebox_ms": tb_rt,
            "jupyter_ms": j_rt,
            "ratio": r_rt,
            "target": f"< {TARGETS['roundtrip_p50_ms']:g} ms and >= "
            f"{TARGETS['roundtrip_ratio']:g}x",
            "met": tb_rt < TARGETS["roundtrip_p50_ms"]
            and (r_rt is None or r_rt >= TARGETS["roundtrip_ratio"]),
        },
    ]


def print_summary(rows: list[dict[str, Any]]) -> None:
    table = Table(title="summary (p50; ratio = jupyter / tracebox)", title_justify="left")
    for col in ("metric", "tracebox ms", "jupyter ms", "ratio", "target", "met"):
        table.add_column(col, justify="left" if col in ("metric", "target") else "right")
    for row in rows:
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: ""}[row["met"]]
        j = row["jupyter_ms"]
        table.add_row(
            row["metric"],
            fmt_ms(row["tracebox_ms"] / 1e3),
            "-" if j is None else fmt_ms(j / 1e3),
            fmt_ratio(row["ratio"]),
            row["target"],
            met,
        )
    console.print(table)
    console.print("Ratios from the same run are what matter; absolute times move with the load.")


def parse_samples(items: list[str], base: dict[str, int]) -> dict[str, int]:
    out = dict(base)
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in out or not value.isdigit() or int(value) < 1:
            raise SystemExit(
                f"--samples wants NAME=N (N >= 1) with NAME in {sorted(out)}: {item!r}"
            )
        out[name] = int(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="tracebox sessions next to a Jupyter kernel")
    ap.add_argument("--quick", action="store_true", help="small sample counts (smoke test)")
    ap.add_argument(
        "--samples",
        action="append",
        default=[],
        metavar="NAME=N",
        help=f"override a sample count; names: {', '.join(FULL)}",
    )
    ap.add_argument("--threads", type=int, default=16, help="client threads in section 3")
    ap.add_argument("--no-jupyter", action="store_true", help="skip the Jupyter side")
    ap.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="longest wait for an idle machine per block (s); 60, or 10 with --quick",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = ap.parse_args(argv)

    versions = {"tracebox": importlib.metadata.version("tracebox"), "git": git_revision()}
    jv = None if a.no_jupyter else jupyter_versions()
    if jv is None and not a.no_jupyter:
        console.print(
            "[yellow]jupyter_client/ipykernel missing: pip install -e '.[bench]'; "
            "measuring tracebox only[/yellow]"
        )
    versions.update(jv or {})
    b = Bench(
        samples=parse_samples(a.samples, QUICK if a.quick else FULL),
        idle_timeout=a.idle_timeout if a.idle_timeout is not None else (10.0 if a.quick else 60.0),
        jupyter=jv is not None,
        threads=a.threads,
    )
    facts = machine_facts()
    console.rule("tracebox session benchmark")
    console.print(
        f"python {facts['python']} ({facts['executable']}), nproc {facts['nproc']}, "
        f"kernel {facts['kernel']} {facts['machine']}, {facts['cpu_model']}, "
        f"{facts['mem_total_mb']} MB RAM, load {facts['loadavg']}"
    )
    console.print(
        ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; samples {b.samples}"
        + (" (quick)" if a.quick else "")
    )
    console.print(
        "Each timed block waits for an idle machine first (<15% busy over 0.5 s). "
        "Ratios from the same run are what matter."
    )

    started = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": facts,
        "versions": versions,
        "config": {
            "quick": a.quick,
            "samples": b.samples,
            "threads": b.threads,
            "idle_timeout_s": b.idle_timeout,
            "warm_pool": WARM_POOL,
        },
        "targets": TARGETS,
        "note": "times in ms unless named _s or _kb; ratios = jupyter p50 / tracebox p50",
    }
    try:
        results["start"] = section_start(b)
        results["roundtrip"] = section_roundtrip(b)
        results["concurrent"] = section_concurrent(b)
    except TraceboxError as exc:
        console.print(f"[red]tracebox could not run: {exc}[/red]")
        return 2
    results["summary"] = summary_rows(results)
    results["idle_waits"] = b.idle_log
    results["duration_s"] = round(time.monotonic() - started, 1)
    console.rule("Summary")
    print_summary(results["summary"])

    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=1) + "\n")
    console.print(f"wrote {a.out} ({results['duration_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
