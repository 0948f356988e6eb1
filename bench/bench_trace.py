"""Tracing overhead: tracebox's three modes next to other tracers, in one process.

The traced program is ``trace_workload.run(scale)`` (recursion, sorting, BFS, string building,
word counts; see that file). Every tracer records the workload's frames only, and runs in
this process on this interpreter, in interleaved repetitions:

  untraced          the workload alone, at every scale a tracer below uses (its baseline)
  settrace lines    a minimal ``sys.settrace`` recorder: the line number of each line event
  settrace locals   LDB/ExecVerify style: at each line event, ``repr()`` of every local
  pysnooper         ``pysnooper.snoop(depth=100, color=False)``, its text sent to a callable
                    that drops it
  sysmon lines      3.12+, for reference: a minimal ``sys.monitoring`` LINE recorder
  tracebox steps    ``Recorder(TraceConfig(mode="steps"))``: counts only
  tracebox steps, on_budget=stop   the same with ``on_budget="stop"``, which must look at
                    the budget at every line event
  tracebox coverage lines run and branch arcs taken
  tracebox full     every step with its changed locals

Expensive tracers run fewer rounds of the workload (the rounds are identical, so a tracer's
cost per event does not depend on how many run) and are compared with the untraced
workload at the same number of rounds, timed in the same repetition. In each repetition,
each group of rounds first waits for an idle machine (``common.wait_idle``); the order of
groups and of tracers rotates from one repetition to the next. Reported: best and median times, the
slowdown best/best and the median of the per-repetition slowdowns, and the added cost per
program step (line, call, return and exception events of the workload, counted exactly by
tracebox at that number of rounds).

Times are CPU time of this thread (``time.thread_time``), with wall-clock time next to it:
the machines we measure on are shared, and when other processes take the CPUs the wall
clock counts their time too, while CPU time moves much less. Every tracer here runs in
this thread, so its CPU time is all it costs. Targets are judged on CPU time.

Checks: every traced run returns the untraced checksum; no tracebox trace is truncated;
steps-mode counts equal the full trace's counts; the settrace recorder saw as many line
events as tracebox counted; coverage found the lines the settrace recorder saw.

Usage: python bench/bench_trace.py [--quick] [--reps N] [--out PATH]
Writes bench/results/trace-<python version>.json (or --out).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import json
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import trace_workload
from common import git_revision, machine_facts, wait_idle
from tracebox.trace import Recorder, TraceConfig

HERE = Path(__file__).resolve().parent
WORKLOAD = trace_workload.__file__
MONITORING = sys.version_info >= (3, 12)

# Rounds of the workload per group of tracers (trace_workload.ROUNDS is scale 1).
ROUNDS = {"large": 400, "medium": 100, "small": 10, "one": 1}
QUICK_ROUNDS = {"large": 100, "medium": 25, "small": 2, "one": 1}
UNTRACED_RUNS = {"large": 2, "medium": 3, "small": 5, "one": 9}  # best of, per repetition
EVENTS = ("line_events", "calls", "returns", "exceptions", "steps")
TARGETS = {
    "steps_slowdown": 1.5,
    "coverage_slowdown": 2.0,
    "full_speedup_vs_settrace_locals": 10.0,
    "full_us_per_step": 3.0,
}

console = Console(highlight=False)
if not console.is_terminal:
    console.width = 140


# -- the tracers ----------------------------------------------------------------------------------
# Each runs the workload at ``scale`` under its tracer and returns (checksum, records, info).

Outcome = tuple[int, int, dict[str, Any]]


def untraced(scale: float) -> Outcome:
    return trace_workload.run(scale), 0, {}


def is_workload(frame: types.FrameType) -> bool:
    return frame.f_code.co_filename == WORKLOAD


def settrace_lines(scale: float) -> Outcome:
    lines: list[int] = []
    add = lines.append

    def local(frame: types.FrameType, event: str, arg: object) -> Any:
        if event == "line":
            add(frame.f_lineno)
        return local

    def start(frame: types.FrameType, event: str, arg: object) -> Any:
        return local if frame.f_code.co_filename == WORKLOAD else None

    sys.settrace(start)
    try:
        result = trace_workload.run(scale)
    finally:
        sys.settrace(None)
    return result, len(lines), {"lines": sorted(set(lines))}


def settrace_locals(scale: float) -> Outcome:
    """The LDB / ExecVerify recipe: a snapshot of every local, as repr(), at every line."""
    states: list[tuple[str, int, dict[str, str]]] = []
    add = states.append

    def local(frame: types.FrameType, event: str, arg: object) -> Any:
        if event == "line":
            snapshot = {name: repr(value) for name, value in frame.f_locals.items()}
            add((frame.f_code.co_name, frame.f_lineno, snapshot))
        return local

    def start(frame: types.FrameType, event: str, arg: object) -> Any:
        return local if frame.f_code.co_filename == WORKLOAD else None

    sys.settrace(start)
    try:
        result = trace_workload.run(scale)
    finally:
        sys.settrace(None)
    chars = sum(len(v) for _, _, snap in states for v in snap.values())
    return result, len(states), {"repr_chars": chars}


def pysnooper_run(scale: float) -> Outcome:
    import pysnooper

    written = [0, 0]

    def drop(text: str) -> None:
        written[0] += 1
        written[1] += len(text)

    snooped = pysnooper.snoop(output=drop, depth=100, color=False)(trace_workload.run)
    result = snooped(scale)
    return result, written[0], {"output_chars": written[1]}


def sysmon_lines(scale: float) -> Outcome:
    """Line numbers from ``sys.monitoring`` LINE events of the workload's code objects."""
    m = sys.monitoring
    tool = next(t for t in (3, 4, 2, 0) if m.get_tool(t) is None)
    m.use_tool_id(tool, "bench_trace")
    lines: list[int] = []
    add = lines.append

    def line(code: types.CodeType, line: int) -> None:
        add(line)

    def start(code: types.CodeType, offset: int) -> Any:
        if code.co_filename == WORKLOAD:
            m.set_local_events(tool, code, m.events.LINE)
        return m.DISABLE

    m.register_callback(tool, m.events.LINE, line)
    m.register_callback(tool, m.events.PY_START, start)
    m.restart_events()
    m.set_events(tool, m.events.PY_START)
    try:
        result = trace_workload.run(scale)
    finally:
        m.set_events(tool, 0)
        for code in workload_codes():
            m.set_local_events(tool, code, 0)
        m.register_callback(tool, m.events.LINE, None)
        m.register_callback(tool, m.events.PY_START, None)
        m.free_tool_id(tool)
    return result, len(lines), {}


def workload_codes() -> list[types.CodeType]:
    found: list[types.CodeType] = []
    todo = [f.__code__ for f in vars(trace_workload).values() if isinstance(f, types.FunctionType)]
    while todo:
        code = todo.pop()
        if code.co_filename == WORKLOAD and all(code is not c for c in found):
            found.append(code)
            todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return found


def config(mode: str, **extra: Any) -> TraceConfig:
    """The workload file is user code; budgets far above what the workload needs."""
    return TraceConfig(
        mode=mode,  # type: ignore[arg-type]
        files=(WORKLOAD,),
        include=(),
        max_steps=1 << 40,
        max_bytes=1 << 40,
        **extra,
    )


def tracebox(mode: str, **extra: Any) -> Callable[[float], Outcome]:
    cfg = config(mode, **extra)

    def run(scale: float) -> Outcome:
        with Recorder(cfg) as rec:
            result = trace_workload.run(scale)
        trace = rec.trace()
        if trace.truncation is not None:
            raise RuntimeError(f"tracebox {mode} truncated the trace: {trace.truncation}")
        info: dict[str, Any] = {"counts": trace.step_counts(), "backend": trace.backend}
        if mode == "coverage":
            assert trace.coverage is not None
            lines = trace.coverage.lines.get(WORKLOAD, ())
            arcs = trace.coverage.arcs.get(WORKLOAD, ())
            info.update(lines=list(lines), arcs=len(arcs))
            return result, len(lines) + len(arcs), info
        records = len(trace) if mode == "full" else trace.step_counts()["steps"] or 0
        return result, records, info

    return run


@dataclass
class Tracer:
    name: str
    group: str
    run: Callable[[float], Outcome]
    note: str
    records_are: str
    # (wall, cpu) seconds per repetition; base: the untraced workload, same group and
    # repetition, best of UNTRACED_RUNS
    times: list[tuple[float, float]] = field(default_factory=list)
    base: list[tuple[float, float]] = field(default_factory=list)
    records: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def tracers() -> list[Tracer]:
    out = [
        Tracer(
            "tracebox steps",
            "large",
            tracebox("steps"),
            "counts only (on_budget='continue', the default)",
            "steps counted",
        ),
        Tracer(
            "tracebox steps, on_budget=stop",
            "large",
            tracebox("steps", on_budget="stop"),
            "budget looked at on every line event",
            "steps counted",
        ),
        Tracer(
            "tracebox coverage",
            "large",
            tracebox("coverage"),
            "lines run, branch arcs taken",
            "lines + arcs",
        ),
        Tracer(
            "settrace lines",
            "medium",
            settrace_lines,
            "minimal settrace recorder: line numbers",
            "line events",
        ),
        Tracer(
            "tracebox full",
            "small",
            tracebox("full"),
            "every step, changed locals (bounded reprs)",
            "steps recorded",
        ),
        Tracer(
            "settrace locals (LDB-style)",
            "one",
            settrace_locals,
            "repr() of every local at every line",
            "snapshots",
        ),
        Tracer(
            "pysnooper",
            "one",
            pysnooper_run,
            "depth=100, color=False, output dropped",
            "writes",
        ),
    ]
    if MONITORING:
        out.insert(
            3,
            Tracer(
                "sysmon lines (reference)",
                "medium",
                sysmon_lines,
                "minimal sys.monitoring LINE recorder",
                "line events",
            ),
        )
    return out


# -- running ----------------------------------------------------------------------------------


def timed(fn: Callable[[float], Outcome], scale: float) -> tuple[tuple[float, float], Outcome]:
    """Wall-clock and CPU time (of this thread) of one run."""
    gc.collect()
    cpu, wall = time.thread_time(), time.perf_counter()
    out = fn(scale)
    return (time.perf_counter() - wall, time.thread_time() - cpu), out


@dataclass
class Bench:
    rounds: dict[str, int]
    reps: int
    idle_timeout: float
    rows: list[Tracer]
    expected: dict[str, int] = field(default_factory=dict)  # checksum per group
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)  # exact counts per group
    idle_log: list[dict[str, Any]] = field(default_factory=list)

    def scale(self, group: str) -> float:
        return self.rounds[group] / trace_workload.ROUNDS

    def prepare(self) -> None:
        """Untimed: the checksum and the program's exact step counts at every scale, and
        the exactness check of steps mode against a full trace."""
        for group in self.rounds:
            _, (checksum, _, _) = timed(untraced, self.scale(group))
            _, (_, _, info) = timed(tracebox("steps"), self.scale(group))
            self.expected[group] = checksum
            self.steps[group] = info["counts"]
        _, (_, _, full) = timed(tracebox("full"), self.scale("small"))
        steps = {k: self.steps["small"][k] for k in EVENTS}
        if steps != {k: full["counts"][k] for k in EVENTS}:
            raise RuntimeError(f"steps-mode counts {steps} differ from the full trace's")

    def run(self) -> None:
        groups = list(self.rounds)
        for rep in range(self.reps):
            order = groups[rep % len(groups) :] + groups[: rep % len(groups)]
            for group in order:
                rows = [t for t in self.rows if t.group == group]
                if not rows:
                    continue
                gc.collect()
                idle = wait_idle(timeout=self.idle_timeout)
                self.idle_log.append({"rep": rep, "group": group, **vars(idle)})
                if idle.timed_out:
                    console.print(
                        f"[yellow]  ! machine still {idle.busy:.0%} busy after "
                        f"{idle.waited_s:.0f} s; timing rep {rep + 1} {group} anyway[/yellow]"
                    )
                scale = self.scale(group)
                runs = [timed(untraced, scale)[0] for _ in range(UNTRACED_RUNS[group])]
                base = (min(w for w, _ in runs), min(c for _, c in runs))
                shift = rep % len(rows)
                for t in rows[shift:] + rows[:shift]:
                    elapsed, (checksum, records, info) = timed(t.run, scale)
                    if checksum != self.expected[group]:
                        raise RuntimeError(f"{t.name} changed the result: {checksum}")
                    t.times.append(elapsed)
                    t.base.append(base)
                    t.records, t.info = records, info
            done = ", ".join(
                f"{t.name} {t.times[-1][1] / t.base[-1][1]:.1f}x" for t in self.rows if t.times
            )
            console.print(f"  rep {rep + 1}/{self.reps}: {done}")


# -- results ----------------------------------------------------------------------------------


def clock(b: Bench, t: Tracer, k: int) -> dict[str, Any]:
    """One clock's numbers (k: 0 wall, 1 CPU) for a tracer."""
    steps = b.steps[t.group]["steps"]
    times, base = [x[k] for x in t.times], [x[k] for x in t.base]
    best, best_base = min(times), min(base)
    med, med_base = statistics.median(times), statistics.median(base)
    ratios = [x / u for x, u in zip(times, base, strict=True)]
    return {
        "untraced_ms": {"best": best_base * 1e3, "median": med_base * 1e3},
        "traced_ms": {"best": best * 1e3, "median": med * 1e3},
        "slowdown_best": best / best_base,
        "slowdown_median": statistics.median(ratios),
        "slowdown_per_rep": [round(r, 3) for r in ratios],
        "overhead_ns_per_step": (med - med_base) / steps * 1e9,
        "overhead_ns_per_step_best": (best - best_base) / steps * 1e9,
        "times_ms": [round(x * 1e3, 3) for x in times],
        "untraced_times_ms": [round(x * 1e3, 3) for x in base],
    }


def summary(b: Bench, t: Tracer) -> dict[str, Any]:
    """The CPU-time numbers at the top level (the headline), wall-clock ones under "wall"."""
    return {
        "tracer": t.name,
        "group": t.group,
        "rounds": b.rounds[t.group],
        "note": t.note,
        "program_steps": b.steps[t.group]["steps"],
        "records": t.records,
        "records_are": t.records_are,
        **clock(b, t, 1),
        "wall": clock(b, t, 0),
    }


def cross_checks(b: Bench) -> dict[str, Any]:
    by_name = {t.name: t for t in b.rows}
    lines = by_name["settrace lines"]
    cov = by_name["tracebox coverage"]
    return {
        "settrace_line_events_equal_tracebox_line_events": lines.records
        == b.steps["medium"]["line_events"],
        "coverage_lines_equal_settrace_lines": cov.info.get("lines") == lines.info.get("lines"),
        "steps_counts_equal_full_counts": True,  # prepare() raised otherwise
        "no_truncation": True,  # tracebox() raised otherwise
        "checksums_equal": True,  # run() raised otherwise
    }


def targets(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    steps = rows["tracebox steps"]["slowdown_median"]
    cov = rows["tracebox coverage"]["slowdown_median"]
    full = rows["tracebox full"]
    locals_ = rows["settrace locals (LDB-style)"]
    speedup = locals_["slowdown_median"] / full["slowdown_median"]
    us = full["overhead_ns_per_step"] / 1e3
    applies = MONITORING
    return [
        {
            "target": f"steps <= {TARGETS['steps_slowdown']:g}x untraced",
            "measured": f"{steps:.2f}x",
            "met": steps <= TARGETS["steps_slowdown"] if applies else None,
        },
        {
            "target": f"coverage <= {TARGETS['coverage_slowdown']:g}x untraced",
            "measured": f"{cov:.2f}x",
            "met": cov <= TARGETS["coverage_slowdown"] if applies else None,
        },
        {
            "target": "full >= "
            f"{TARGETS['full_speedup_vs_settrace_locals']:g}x faster than settrace locals",
            "measured": f"{speedup:.0f}x",
            "met": speedup >= TARGETS["full_speedup_vs_settrace_locals"] if applies else None,
        },
        {
            "target": f"full < {TARGETS['full_us_per_step']:g} us per recorded step",
            "measured": f"{us:.2f} us",
            "met": us < TARGETS["full_us_per_step"] if applies else None,
        },
    ]


def print_results(rows: list[dict[str, Any]], b: Bench) -> None:
    table = Table(
        title="CPU time against the untraced workload (same rounds, same repetition)",
        title_justify="left",
    )
    for col in (
        "tracer",
        "rounds",
        "untraced ms best/med",
        "traced ms best/med",
        "slowdown best",
        "slowdown med",
        "wall: med",
        "ns/step added",
        "records",
    ):
        table.add_column(col, justify="left" if col == "tracer" else "right")
    for group in b.rounds:
        first = next((r for r in rows if r["group"] == group), None)
        if first is None:
            continue
        u = first["untraced_ms"]
        table.add_row(
            "untraced",
            str(b.rounds[group]),
            f"{u['best']:.1f} / {u['median']:.1f}",
            "",
            "1.00x",
            "1.00x",
            "1.00x",
            "",
            f"{b.steps[group]['steps']:,}",
        )
    for r in rows:
        u, x = r["untraced_ms"], r["traced_ms"]
        table.add_row(
            r["tracer"],
            str(r["rounds"]),
            f"{u['best']:.1f} / {u['median']:.1f}",
            f"{x['best']:.1f} / {x['median']:.1f}",
            f"{r['slowdown_best']:.2f}x",
            f"{r['slowdown_median']:.2f}x",
            f"{r['wall']['slowdown_median']:.2f}x",
            f"{r['overhead_ns_per_step']:,.0f}",
            f"{r['records']:,}",
        )
    console.print(table)
    console.print(
        "  times are CPU time of this thread; 'wall: med' is the median wall-clock slowdown. "
        "untraced records: program steps (line, call, return and exception events, counted "
        "by tracebox); ns/step added: (traced - untraced) / program steps, medians"
    )
    for r in rows:
        console.print(f"  {r['tracer']}: {r['note']}; records: {r['records_are']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="tracebox's tracing overhead next to other tracers")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and repetitions")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (5, or 2 with --quick)")
    ap.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="longest wait for an idle machine per group (s); 60, or 10 with --quick",
    )
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    out = a.out or HERE / "results" / f"trace-{python}.json"
    b = Bench(
        rounds=QUICK_ROUNDS if a.quick else ROUNDS,
        reps=a.reps or (2 if a.quick else 5),
        idle_timeout=a.idle_timeout if a.idle_timeout is not None else (10.0 if a.quick else 60.0),
        rows=tracers(),
    )
    versions = {
        "tracebox": importlib.metadata.version("tracebox"),
        "git": git_revision(),
        "pysnooper": importlib.metadata.version("pysnooper"),
    }
    facts = machine_facts()
    console.rule("tracebox tracing benchmark")
    console.print(
        f"python {facts['python']} ({facts['executable']}), tracebox backend "
        f"{'sys.monitoring' if MONITORING else 'settrace (3.11 fallback)'}, nproc "
        f"{facts['nproc']}, {facts['cpu_model']}, load {facts['loadavg']}"
    )
    console.print(
        f"{versions}; rounds per group {b.rounds}; {b.reps} repetitions"
        + (" (quick)" if a.quick else "")
    )
    started = time.monotonic()
    b.prepare()
    console.print(
        "program steps per group: "
        + ", ".join(f"{g} {c['steps']:,}" for g, c in b.steps.items())
        + "; steps-mode counts equal the full trace's"
    )
    b.run()
    rows = [summary(b, t) for t in b.rows]
    by_name = {r["tracer"]: r for r in rows}
    full, locals_ = by_name["tracebox full"], by_name["settrace locals (LDB-style)"]
    full_extra = {
        "us_per_step_added": full["overhead_ns_per_step"] / 1e3,
        "us_per_step_total": full["traced_ms"]["median"] * 1e3 / full["records"],
        "speedup_vs_settrace_locals": locals_["slowdown_median"] / full["slowdown_median"],
        "speedup_vs_settrace_locals_best": locals_["slowdown_best"] / full["slowdown_best"],
    }
    checks = cross_checks(b)
    goals = targets(by_name)
    console.rule("Results")
    print_results(rows, b)
    console.print(
        f"  tracebox full: {full_extra['us_per_step_added']:.2f} us added per recorded step "
        f"({full_extra['us_per_step_total']:.2f} us in all), "
        f"{full_extra['speedup_vs_settrace_locals']:.0f}x faster than settrace locals "
        f"(best/best {full_extra['speedup_vs_settrace_locals_best']:.0f}x)"
    )
    console.print(
        "  checks: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in checks.items())
    )
    goal_table = Table(
        title="targets (3.12+; medians of per-repetition ratios)", title_justify="left"
    )
    for col in ("target", "measured", "met"):
        goal_table.add_column(col, justify="left" if col == "target" else "right")
    for g in goals:
        met = {True: "[green]met[/green]", False: "[red]unmet[/red]", None: "n/a (3.11)"}
        goal_table.add_row(g["target"], g["measured"], met[g["met"]])
    console.print(goal_table)
    if not MONITORING:
        console.print(
            "  3.11 records with sys.settrace: the targets are for the 3.12+ backend, shown "
            "for reference"
        )

    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": facts,
        "versions": versions,
        "config": {
            "quick": a.quick,
            "reps": b.reps,
            "rounds": b.rounds,
            "untraced_best_of": UNTRACED_RUNS,
            "idle_timeout_s": b.idle_timeout,
            "workload": "bench/trace_workload.py",
        },
        "program_steps": b.steps,
        "tracers": rows,
        "full": full_extra,
        "checks": checks,
        "targets": goals,
        "idle_waits": b.idle_log,
        "duration_s": round(time.monotonic() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    console.print(f"wrote {out} ({results['duration_s']} s)")
    ok = all(checks.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
