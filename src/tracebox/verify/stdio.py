"""Stdin/stdout problems: the program runs as ``__main__`` with a case's input on fd 0; its
output is compared with the expected one on the host, never inside the sandbox.

One candidate sandbox serves a candidate's cases, each run in a fresh namespace
(``stateful=False``); after a time or memory limit, or if the process died, the next case
gets a new sandbox. ``sys.exit()`` / ``exit(0)`` at the end of a program is normal for
judges: the output still decides. Any other exit, exception or crash is an ``error``.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from tracebox.errors import TraceboxError
from tracebox.session.session import Session
from tracebox.types import ErrorInfo, RunResult
from tracebox.verify._outcome import Record, classify, status_of, tracer_failed
from tracebox.verify.problems import IOProblem, OutputMatch
from tracebox.verify.results import TestResult, TestStatus, Verdict

if TYPE_CHECKING:
    from tracebox.verify.engine import Verifier

__all__ = ["outputs_match", "verify"]

_OUTPUT_KEPT = 4000  # characters of a case's output kept in its TestResult

# Runs before each case, in the candidate's sandbox: the input (fetched from the host) goes
# to a file on the sandbox's /tmp, which becomes fd 0; sys.stdin is rebuilt on it.
STDIN_PRELUDE = """\
import io as _io, os as _os, sys as _sys
from tracebox.worker import tools as _tools
_data = memoryview(_tools.call("stdin"))
_fd = _os.open("/tmp/.tracebox-stdin", _os.O_WRONLY | _os.O_CREAT | _os.O_TRUNC, 0o600)
try:
    while _data:
        _data = _data[_os.write(_fd, _data):]
finally:
    _os.close(_fd)
_fd = _os.open("/tmp/.tracebox-stdin", _os.O_RDONLY)
_os.dup2(_fd, 0)
_os.close(_fd)
_sys.stdin = _sys.__stdin__ = _io.TextIOWrapper(
    _io.BufferedReader(_io.FileIO(0, "r", closefd=False)), encoding="utf-8", errors="replace"
)
"""


def _lines(text: str) -> list[str]:
    out = [line.rstrip() for line in text.splitlines()]
    while out and not out[-1]:
        out.pop()
    return out


def _number(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def outputs_match(actual: str, expected: str, match: OutputMatch | None = None) -> bool:
    """Whether a program's output is the expected one, under ``match`` (see ``OutputMatch``;
    a ``float_tolerance`` makes the comparison token-wise)."""
    m = match or OutputMatch()
    if m.float_tolerance is None and m.mode == "exact":
        return actual == expected
    if m.float_tolerance is None and m.mode == "lines":
        return _lines(actual) == _lines(expected)
    got, want = actual.split(), expected.split()
    if len(got) != len(want):
        return False
    tol = m.float_tolerance
    for a, b in zip(got, want, strict=True):
        if a == b:
            continue
        if tol is None:
            return False
        x, y = _number(a), _number(b)
        if x is None or y is None or not math.isclose(x, y, rel_tol=tol, abs_tol=tol):
            return False
    return True


def _exit_ok(r: RunResult) -> bool:
    """``sys.exit()``, ``sys.exit(0)``, ``exit()``: the program ended normally."""
    e = r.error
    return (
        r.status == "error"
        and e is not None
        and e.type == "SystemExit"
        and e.message in ("", "0", "None")
    )


class _Cases:
    def __init__(self, verifier: Verifier, problem: IOProblem, completion: str, oversub: float):
        self.v = verifier
        self.problem = problem
        self.program = problem.program(completion)
        self.limits = verifier.limits(oversub)
        self.session: Session | None = None
        self.spent_cpu = 0.0
        self.spent_wall = 0.0
        self.wall_budget = verifier.sandboxes.sample_wall_seconds(oversub)

    def _discard(self) -> None:
        if self.session is not None:
            self.v.release_session(self.session)
            self.session = None

    def _stdin(self, data: bytes) -> Session:
        """A sandbox whose fd 0 reads ``data``: the current one, else a fresh one."""
        for fresh in (False, True):
            if fresh or self.session is None:
                self._discard()
                self.session = self.v.fresh_session(self.limits, stateful=False)
            r = self.session.run(STDIN_PRELUDE, tools={"stdin": lambda: data})
            if r.ok:
                return self.session
            # a previous case may have broken the process (that is its business): retry fresh
        raise _PreludeFailed(r.error.message if r.error else r.status)

    def case(self, k: int) -> TestResult:
        case = self.problem.cases[k]
        rec = Record()
        name = f"case {k}"
        cfg = self.v.config
        if self.spent_cpu >= cfg.sample_cpu_seconds or self.spent_wall >= self.wall_budget:
            spent = ErrorInfo(
                type="TimeLimitExceeded",
                message=f"the sample's CPU budget ({cfg.sample_cpu_seconds:g} s) is spent",
            )
            return TestResult(index=k, name=name, status="timeout", error=spent)
        t0 = time.monotonic()
        try:
            session = self._stdin(case.input.encode())
            r = session.run(self.program, trace=self.v._trace)
            if self.v._trace is not None and tracer_failed(r):  # ours: run it again untraced
                self._discard()
                r = self._stdin(case.input.encode()).run(self.program)
        except (TraceboxError, _PreludeFailed) as exc:
            self._discard()
            broken = ErrorInfo(type=type(exc).__name__, message=str(exc))
            return TestResult(index=k, name=name, status="sandbox_error", error=broken)
        finally:
            self.spent_wall += time.monotonic() - t0
        self.spent_cpu += r.cpu_seconds
        rec.calls = 1
        rec.account(r, traced=self.v._trace is not None, keep=cfg.keep_traces)
        status: TestStatus
        err: ErrorInfo | None
        if r.ok or _exit_ok(r):
            same = outputs_match(r.stdout, case.output, self.problem.match)
            status = "passed" if same else "failed"
            err = None if same else ErrorInfo(type="WrongAnswer", message="the output differs")
        else:
            status, err = classify(r)
        if not r.session_alive or status in ("timeout", "memory", "sandbox_error"):
            self._discard()
        out = r.stdout if len(r.stdout) <= _OUTPUT_KEPT else r.stdout[:_OUTPUT_KEPT] + "..."
        figures = rec.figures()
        if status == "timeout":
            figures["steps"] = None
        return TestResult(index=k, name=name, status=status, error=err, output=out, **figures)


class _PreludeFailed(Exception):
    pass


def verify(verifier: Verifier, problem: IOProblem, completion: str, oversub: float) -> Verdict:
    """Run every case of ``problem`` (see the module's docstring)."""
    cases = _Cases(verifier, problem, completion, oversub)
    try:
        tests = tuple(cases.case(k) for k in range(len(problem.cases)))
    finally:
        cases._discard()
    status = status_of(tests)
    steps: int | None = 0
    for t in tests:
        steps = None if steps is None or t.steps is None else steps + t.steps
    peaks = [t.peak_memory_mb for t in tests if t.peak_memory_mb is not None]
    traced = verifier.config.trace in ("steps", "full")
    return Verdict(
        task_id=problem.task_id,
        status=status,
        passed=status == "passed",
        tests=tests,
        cpu_seconds=round(sum(t.cpu_seconds for t in tests), 6),
        peak_memory_mb=max(peaks) if peaks else None,
        steps=steps if traced else None,
    )
