"""Function problems (HumanEval, MBPP, HumanEval Pro): the candidate in its sandbox, the
tests in the thread's test sandbox, every call of the candidate forwarded by the host.

See ``tracebox.verify.engine`` for why this makes verdicts unfakeable. A test's outcome is
what the test code reported (with the host's token) unless the host decided it first: a
call that timed out, ran out of memory, left the interpreter, killed its process or
returned something that is not plain data ends the test with that outcome, whatever the
test code does with the exception it gets.
"""

from __future__ import annotations

import ast
import contextlib
import secrets
import time
from typing import TYPE_CHECKING, Any

from tracebox.errors import NameNotFound, TraceboxError
from tracebox.session.session import Session
from tracebox.trace.config import TraceConfig
from tracebox.types import CallResult, ErrorInfo, RunResult
from tracebox.verify import _plan
from tracebox.verify._outcome import Record, classify, is_final, status_of, tracer_failed
from tracebox.verify.problems import FunctionProblem, SelfInvokingProblem
from tracebox.verify.results import TestResult, TestStatus, Verdict

if TYPE_CHECKING:
    from tracebox.verify.engine import Verifier

__all__ = ["verify"]


def verify(
    verifier: Verifier,
    problem: FunctionProblem | SelfInvokingProblem,
    completion: str,
    oversub: float,
) -> Verdict:
    """One attempt at verifying ``completion`` (the engine retries sandbox errors)."""
    return _FunctionAttempt(verifier, problem, completion, oversub).verdict()


_NO_RECORD: tuple[TestStatus, ErrorInfo | None] = (
    "sandbox_error",
    ErrorInfo(type="NoRecord", message="the test sandbox reported nothing for this test"),
)


class _Abort(Exception):
    """Raised into the test code when the host has decided a test's outcome."""


_RAISED: dict[str, type[Exception]] = {}


def _raised(err: ErrorInfo) -> Exception:
    """An exception whose type name is the candidate's: the test sandbox raises the builtin
    of that name (``ValueError`` ...), or ``ToolError`` for other names."""
    cls = _RAISED.get(err.type)
    if cls is None:
        cls = type(err.type, (Exception,), {})
        if len(_RAISED) < 1024:
            _RAISED[err.type] = cls
    return cls(err.message)


# -- function problems ------------------------------------------------------------------------


class _FunctionAttempt:
    """One candidate on one function problem: a candidate sandbox, the thread's test one."""

    def __init__(
        self,
        verifier: Verifier,
        problem: FunctionProblem | SelfInvokingProblem,
        completion: str,
        oversub: float,
    ) -> None:
        self.v = verifier
        self.cfg = verifier.config
        self.plan = _plan.plan(problem)
        self.program = problem.program(completion)
        self.oversub = oversub
        self.limits = verifier.limits(oversub)
        self.records: dict[int, Record] = {}
        self.cand: Session | None = None
        self.load_cpu = 0.0
        self.load_peak: float | None = None
        self.spent_cpu = 0.0
        self.spent_wall = 0.0
        self.wall_budget = verifier.sandboxes.sample_wall_seconds(oversub)
        self.notes: list[str] = []

    def record(self, i: int) -> Record:
        rec = self.records.get(i)
        if rec is None:
            rec = self.records[i] = Record()
        return rec

    # -- the candidate's sandbox --------------------------------------------------------------

    def _load(self) -> tuple[Session | None, TestStatus, ErrorInfo | None]:
        """A fresh candidate sandbox with the program loaded, or why it did not load."""
        s = self.v.fresh_session(self.limits)
        r = s.run(self.program)
        self.load_cpu += r.cpu_seconds
        if r.peak_memory_mb is not None:
            self.load_peak = max(self.load_peak or 0.0, r.peak_memory_mb)
        status, err = classify(r)
        if status != "passed":
            self.v.release_session(s)
            return None, status, err
        return s, status, None

    def _discard(self) -> None:
        if self.cand is not None:
            self.v.release_session(self.cand)
            self.cand = None

    def forward(self, i: object, name: object, args: object, kwargs: object) -> Any:
        """The tool behind the test sandbox's stubs: call the candidate, return a copy."""
        if not isinstance(i, int) or not isinstance(name, str):
            raise TypeError("bad candidate call")
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise TypeError("bad candidate call")
        rec = self.record(i)
        rec.calls += 1
        if rec.forced is not None:
            raise _Abort("the candidate already failed this test")
        if self.spent_cpu >= self.cfg.sample_cpu_seconds or self.spent_wall >= self.wall_budget:
            rec.force("timeout", _budget_error(self.cfg.sample_cpu_seconds))
            raise _Abort("time budget spent")
        trace = self.v._trace
        r = self._call(rec, name, args, kwargs, trace)
        if trace is not None and tracer_failed(r):
            # a failure of our tracer must not change the verdict: the call again, untraced,
            # in a fresh sandbox (the traced one was killed)
            self.notes.append(f"test {i}: the tracer failed; the call was repeated untraced")
            r = self._call(rec, name, args, kwargs, None)
        rec.account(r, traced=trace is not None, keep=self.cfg.keep_traces)
        status, err = classify(r)
        if status == "passed":
            return r.returned
        if status == "error" and r.session_alive and not is_final(err):
            assert err is not None
            rec.raised = err
            raise _raised(err)
        rec.force(status, err)
        if status != "error" or not r.session_alive:
            # after a time or memory limit the state is wherever the interrupt left it:
            # the next call gets a fresh sandbox, so verdicts do not depend on timing
            self._discard()
        raise _Abort(f"the candidate's call ended: {status}")

    def _call(
        self,
        rec: Record,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        trace: TraceConfig | None,
    ) -> CallResult:
        """One call in the candidate's sandbox (loaded first if need be)."""
        if self.cand is None:
            try:
                s, status, err = self._load()
            except TraceboxError as exc:
                rec.force("sandbox_error", ErrorInfo(type=type(exc).__name__, message=str(exc)))
                raise _Abort("sandbox error") from None
            if s is None:
                rec.force(status, err)
                raise _Abort("the candidate did not load")
            self.cand = s
        t0 = time.monotonic()
        try:
            r = self.cand.call(name, *args, trace__=trace, **kwargs)
        except NameNotFound:
            rec.force("error", ErrorInfo(type="NameError", message=f"name {name!r} is not defined"))
            raise _Abort("no such function") from None
        except TraceboxError as exc:
            self._discard()
            rec.force("sandbox_error", ErrorInfo(type=type(exc).__name__, message=str(exc)))
            raise _Abort("sandbox error") from None
        finally:
            self.spent_wall += time.monotonic() - t0
        self.spent_cpu += r.cpu_seconds
        if not r.session_alive:
            self._discard()
        return r

    # -- the test sandbox ---------------------------------------------------------------------

    def _run_tests(self) -> dict[int, tuple[TestStatus, ErrorInfo | None]]:
        """Every test's outcome as the test code reported it (or why it could not)."""
        reported: dict[int, tuple[TestStatus, ErrorInfo | None]] = {}
        last = self.plan.tests[-1].index
        start = 0
        while start <= last:
            token = secrets.token_hex(16)
            code = _plan.harness(self.plan, token, start)
            try:
                session = self.v.sandboxes.test(self.oversub)
                r = session.run(code, tools={_plan.TOOL: self.forward})
            except TraceboxError as exc:
                self.v.sandboxes.drop_test()
                broken = ErrorInfo(type=type(exc).__name__, message=str(exc))
                reported.update(dict.fromkeys(range(start, last + 1), ("sandbox_error", broken)))
                return reported
            rows = _rows(r.value, token) if r.status == "ok" else None
            if rows is None and r.session_alive:
                with contextlib.suppress(TraceboxError):
                    rows = _rows_from(session.get("__tb_res"), token)
            self._take(rows or [], reported, start)
            if r.status == "ok" and rows is not None:
                break
            # the test run ended early: the first test not reported gets the run's outcome,
            # and the tests after it run again in a new run
            missing = [k for k in range(start, last + 1) if k not in reported]
            if not missing:
                break
            status, err = _test_run_failure(r, rows is None and r.status == "ok")
            if status == "sandbox_error":  # nothing to tell the candidate by: no rerun
                reported.update(dict.fromkeys(missing, (status, err)))
                break
            reported[missing[0]] = (status, err)
            if not r.session_alive:
                self.v.sandboxes.drop_test()
            start = missing[0] + 1
        return reported

    def _take(
        self,
        rows: list[tuple[int, str, str, str]],
        reported: dict[int, tuple[TestStatus, ErrorInfo | None]],
        start: int,
    ) -> None:
        for i, kind, etype, message in rows:
            if kind in ("setup", "prelude"):
                note = f"{kind} of the tests failed (line {i}): {etype}: {message}"
                if note not in self.notes:
                    self.notes.append(note)
            elif i >= start:
                status: TestStatus = (
                    "passed" if kind == "passed" else ("failed" if kind == "failed" else "error")
                )
                err = None if status == "passed" else ErrorInfo(type=etype, message=message)
                reported[i] = (status, err)

    def verdict(self) -> Verdict:
        tests = self.plan.tests
        try:
            s, status, err = self._load()
            if s is None:
                assert err is not None
                failed = tuple(
                    TestResult(index=u.index, name=u.name, status=status, error=err) for u in tests
                )
                return self._verdict(failed, load=err)
            self.cand = s
            reported = self._run_tests()
        finally:
            self._discard()
        results = []
        for u in tests:
            rec = self.records.get(u.index, Record())
            if rec.forced is not None:
                status, err = rec.forced  # decided on the host: the test code cannot undo it
            else:
                status, err = reported.get(u.index, _NO_RECORD)
                raised = rec.raised
                if status == "error" and raised is not None and err and err.type == raised.type:
                    err = raised  # the candidate's own exception, with its traceback
            results.append(
                TestResult(index=u.index, name=u.name, status=status, error=err, **rec.figures())
            )
            if status == "timeout":
                results[-1] = results[-1].model_copy(update={"steps": None})
        return self._verdict(tuple(results))

    def _verdict(self, results: tuple[TestResult, ...], load: ErrorInfo | None = None) -> Verdict:
        status = status_of(results) if load is None else results[0].status if results else "error"
        steps: int | None = 0
        for t in results:
            steps = None if steps is None or t.steps is None else steps + t.steps
        peaks = [p for p in [self.load_peak, *(t.peak_memory_mb for t in results)] if p is not None]
        return Verdict(
            task_id=self.plan.task_id,
            status=status,
            passed=status == "passed",
            load=load,
            tests=results,
            cpu_seconds=round(self.load_cpu + sum(t.cpu_seconds for t in results), 6),
            peak_memory_mb=max(peaks) if peaks else None,
            steps=steps if self.v._trace is not None and self.cfg.trace != "coverage" else None,
            notes=tuple(self.notes),
        )


def _budget_error(seconds: float) -> ErrorInfo:
    return ErrorInfo(
        type="TimeLimitExceeded",
        message=(
            f"the candidate's calls used up the CPU (or wall-clock) budget of one sample "
            f"({seconds:g} s of CPU, VerifyConfig.sample_cpu_seconds)"
        ),
    )


def _rows(value: str | None, token: str) -> list[tuple[int, str, str, str]] | None:
    if value is None:
        return None
    try:
        data = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return _rows_from(data, token)


def _rows_from(data: object, token: str) -> list[tuple[int, str, str, str]] | None:
    """The test sandbox's report: ``[token, (test, kind, type, message), ...]``."""
    if not isinstance(data, list) or not data or data[0] != token:
        return None
    rows = []
    for row in data[1:]:
        if not (
            isinstance(row, tuple)
            and len(row) == 4
            and isinstance(row[0], int)
            and all(isinstance(x, str) for x in row[1:])
        ):
            return None
        rows.append(row)
    return rows


def _test_run_failure(r: RunResult, unreadable: bool) -> tuple[TestStatus, ErrorInfo | None]:
    """The outcome of the test that was running when the test sandbox's run ended early."""
    if unreadable:
        return "sandbox_error", ErrorInfo(
            type="NoCompletionRecord", message="the test run ended without its completion record"
        )
    if r.status in ("timeout", "memory"):  # the test code itself, e.g. on a huge value
        return r.status, r.error
    err = r.error or ErrorInfo(type="TestRunFailed", message=r.status)
    return "sandbox_error", ErrorInfo(type=err.type, message=f"test sandbox: {err.message}")
