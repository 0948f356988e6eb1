"""Helpers shared by the benchmarks: percentiles, waiting for an idle machine, machine facts,
and per-process memory. Standard library only, so any bench can import it.

The machines we measure on are shared (other people's tests and builds run next to us), so a
timed block should start with :func:`wait_idle` and record what it returned.
"""

from __future__ import annotations

import glob
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "Idle",
    "ProcMemory",
    "Summary",
    "busy_fraction",
    "descendants",
    "git_revision",
    "machine_facts",
    "meminfo_kb",
    "percentile",
    "proc_memory",
    "summarize",
    "tracebox_cgroups",
    "wait_idle",
]


# -- statistics ---------------------------------------------------------------------------------


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), interpolating linearly between the closest ranks."""
    if not samples:
        raise ValueError("percentile of no samples")
    xs = sorted(samples)
    rank = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(rank), math.ceil(rank)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


@dataclass(frozen=True)
class Summary:
    """Distribution of latencies, in seconds."""

    n: int
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    def ms(self) -> dict[str, float]:
        """The same numbers in milliseconds (``n`` unchanged), rounded for JSON."""
        return {k: (v if k == "n" else round(v * 1e3, 4)) for k, v in asdict(self).items()}


def summarize(samples: Sequence[float]) -> Summary:
    return Summary(
        n=len(samples),
        min=min(samples),
        p50=percentile(samples, 50),
        p90=percentile(samples, 90),
        p99=percentile(samples, 99),
        max=max(samples),
        mean=statistics.fmean(samples),
    )


# -- waiting for a quiet machine ----------------------------------------------------------------


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies over all CPUs; iowait counts as idle, steal as busy."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[3] + values[4], sum(values)


def busy_fraction(window: float = 0.5) -> float:
    """Fraction of all CPUs' time that was not idle during the next ``window`` seconds."""
    idle0, total0 = _cpu_times()
    time.sleep(window)
    idle1, total1 = _cpu_times()
    elapsed = total1 - total0
    return 0.0 if elapsed <= 0 else 1.0 - (idle1 - idle0) / elapsed


@dataclass(frozen=True)
class Idle:
    """What :func:`wait_idle` saw: how long it waited and the last busy fraction."""

    waited_s: float
    busy: float
    timed_out: bool


def wait_idle(
    threshold: float = 0.15, window: float = 0.5, timeout: float = 60.0, pause: float = 0.5
) -> Idle:
    """Block until the machine is less than ``threshold`` busy over ``window`` seconds.

    Gives up after ``timeout`` seconds (the result says so) rather than hanging a run.
    """
    start = time.monotonic()
    while True:
        busy = busy_fraction(window)
        waited = time.monotonic() - start
        if busy < threshold:
            return Idle(round(waited, 2), round(busy, 3), timed_out=False)
        if waited >= timeout:
            return Idle(round(waited, 2), round(busy, 3), timed_out=True)
        time.sleep(pause)


# -- machine facts ------------------------------------------------------------------------------


def _first_line(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def meminfo_kb() -> dict[str, int]:
    """``/proc/meminfo`` as kB integers (MemTotal, MemFree, MemAvailable, ...)."""
    out: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0])
    return out


def machine_facts() -> dict[str, Any]:
    """What a reader needs to compare runs: interpreter, CPUs, kernel, memory, load."""
    mem = meminfo_kb()
    return {
        "python": sys.version.split()[0],
        "python_full": sys.version.replace("\n", " "),
        "executable": sys.executable,
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "mem_total_mb": mem.get("MemTotal", 0) // 1024,
        "thp": _first_line("/sys/kernel/mm/transparent_hugepage/enabled"),
        "cpuidle_driver": _first_line("/sys/devices/system/cpu/cpuidle/current_driver"),
        "loadavg": _first_line("/proc/loadavg"),
    }


# -- processes and memory -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProcMemory:
    """Resident memory of one process in kB. PSS divides shared pages among their sharers."""

    rss_kb: int
    pss_kb: int | None


def proc_memory(pid: int) -> ProcMemory | None:
    """RSS and PSS from ``/proc/PID/smaps_rollup`` (RSS only from ``status`` if unreadable)."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    fields[key] = int(rest.split()[0])
    except OSError:
        pass
    if "Rss" in fields:
        return ProcMemory(fields["Rss"], fields.get("Pss"))
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return ProcMemory(int(line.split()[1]), None)
    except OSError:
        pass
    return None


def _parents() -> dict[int, int]:
    """pid -> ppid for every process visible in /proc."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # the command name may hold spaces and parentheses: split after the last ')'
                out[int(entry)] = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def descendants(root: int) -> list[int]:
    """Every live process whose parent chain leads to ``root`` (``root`` excluded)."""
    parents = _parents()
    found: list[int] = []
    for pid in parents:
        seen: set[int] = set()
        p = parents.get(pid, 0)
        while p > 1 and p not in seen:
            if p == root:
                found.append(pid)
                break
            seen.add(p)
            p = parents.get(p, 0)
    return sorted(found)


def tracebox_cgroups(prefix: str = "") -> list[str]:
    """Names of session cgroups under ``tracebox/`` (cgroup v1 hierarchies or v2) that start
    with ``prefix``; one entry per name even when it exists in several hierarchies."""
    dirs = glob.glob("/sys/fs/cgroup/*/tracebox/*/") + glob.glob("/sys/fs/cgroup/tracebox/*/")
    names = {os.path.basename(d.rstrip("/")) for d in dirs}
    return sorted(n for n in names if n.startswith(prefix))


# -- provenance ---------------------------------------------------------------------------------


def git_revision() -> str:
    """The commit measured, with "+dirty" when the working tree has changes ("?" outside git)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            text=True,
            capture_output=True,
            check=True,
            timeout=10,
        )
        return done.stdout.strip()

    try:
        head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "-uno")
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + ("+dirty" if dirty else "")
