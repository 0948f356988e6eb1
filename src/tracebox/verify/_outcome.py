"""From a candidate's ``RunResult`` to a test status, and per-test cost bookkeeping."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from tracebox.trace.model import Trace
from tracebox.types import ErrorInfo, RunResult
from tracebox.verify.results import TestStatus

WORKER_KILLED = "WorkerKilled"
"""Error type of a candidate whose worker died of SIGKILL that tracebox did not send (and
not of the memory limit): a sandbox error, unless it happens again on the retry."""

# Outcomes of a call that end the test whatever the test code does with the exception it
# gets: leaving the interpreter is not an answer, and neither is an object the host refuses.
_FINAL_ERRORS = frozenset(
    {"UntransferableValue", "SystemExit", "KeyboardInterrupt", "GeneratorExit"}
)


def classify(r: RunResult) -> tuple[TestStatus, ErrorInfo | None]:
    """``passed`` means only that the run or call completed."""
    if r.status == "ok":
        return "passed", None
    if r.status in ("error", "timeout", "memory"):
        return r.status, r.error
    if r.status == "killed":
        err = r.error or ErrorInfo(type="WorkerDied", message="the worker died")
        # SIGKILL that the host did not send for a limit (those are "timeout"), nor the
        # cgroup's OOM killer (that is "memory"): someone outside killed the sandbox, or the
        # program did it itself (it can lower its own RLIMIT_CPU). A retry tells them apart.
        if err.type == "WorkerDied" and r.exit_signal == "SIGKILL":
            return "sandbox_error", ErrorInfo(type=WORKER_KILLED, message=err.message)
        return "error", err  # os._exit, a crash, a forged protocol frame: the program's
    return "sandbox_error", r.error


def status_of(results: Iterable[Any]) -> TestStatus:
    """A verdict's status from its tests' (``TestResult``s): ``passed`` if all passed, else
    ``sandbox_error`` if any has one, else the first failing test's."""
    results = list(results)
    if results and all(t.status == "passed" for t in results):
        return "passed"
    if any(t.status == "sandbox_error" for t in results):
        return "sandbox_error"
    return next((t.status for t in results if t.status != "passed"), "error")


def tracer_failed(r: RunResult) -> bool:
    """The worker was killed because the trace it sent was malformed: our recorder's
    failure, not the program's (the program's outcome is lost with the worker)."""
    e = r.error
    return r.status == "killed" and e is not None and "malformed trace" in e.message


def is_final(err: ErrorInfo | None) -> bool:
    """Whether a call's ``error`` ends its test (instead of being raised in the test code)."""
    return err is None or err.type in _FINAL_ERRORS


@dataclasses.dataclass
class Record:
    """What the candidate's calls during one test did and cost."""

    calls: int = 0
    cpu: float = 0.0
    peak: float | None = None
    steps: int | None = 0
    lines: set[int] | None = None
    forced: tuple[TestStatus, ErrorInfo | None] | None = None
    """An outcome decided on the host: it overrides whatever the test code reports."""
    traces: list[Trace] = dataclasses.field(default_factory=list)
    raised: ErrorInfo | None = None
    """The last exception a call raised into the test code (with the candidate's traceback)."""

    def account(self, r: RunResult, *, traced: bool, keep: bool) -> None:
        self.cpu += r.cpu_seconds
        if r.peak_memory_mb is not None:
            self.peak = max(self.peak or 0.0, r.peak_memory_mb)
        t = r.trace
        counted = t.counts.steps if t is not None else None
        self.steps = None if counted is None or self.steps is None else self.steps + counted
        if t is not None and t.coverage is not None:
            self.lines = self.lines or set()
            for lines in t.coverage.lines.values():
                self.lines.update(lines)
        if keep and t is not None:
            self.traces.append(t)
        if not traced:
            self.steps = None

    def force(self, status: TestStatus, err: ErrorInfo | None) -> None:
        if self.forced is None:
            self.forced = (status, err)

    def figures(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "cpu_seconds": round(self.cpu, 6),
            "peak_memory_mb": self.peak,
            "steps": self.steps if self.calls else None,
            "lines": tuple(sorted(self.lines)) if self.lines is not None else None,
            "traces": tuple(self.traces),
        }
