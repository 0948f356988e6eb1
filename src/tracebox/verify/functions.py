"""Function problems (HumanEval, MBPP, HumanEval Pro): the candidate in its sandbox, the
tests in the thread's test sandbox, every call of the candidate forwarded by the host.

See ``tracebox.verify.engine`` for why this makes verdicts unfakeable. A test's outcome is
what the test code reported (with the host's token) unless the host decided it first: a
call that timed out, ran out of memory, left the interpreter, killed its process or
returned something that is not plain data ends the test with that outcome, whatever the
test code does with the exception it gets.

Literal tests (``_plan.Plan.host_tests``) need no test code: the host calls the candidate
and checks the value itself. Untraced, or with step counts (``VerifyConfig.trace`` None or
``"steps"``), all their calls go to the candidate's sandbox in one call of a helper
(``_BATCH``) defined there after the candidate's code; with step counts the helper records
each call under its own recorder, as the worker records a traced ``Session.call``, and sends
each call's count. With coverage or full traces (or ``keep_traces``) each call is one traced
``Session.call`` (the lines, or the trace, of each call come from the worker). See
``_FunctionAttempt._batched`` for why the helper, which the candidate can patch like anything
in its process, cannot make a verdict wrong.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import secrets
import time
from typing import TYPE_CHECKING, Any, get_args

from tracebox.errors import NameNotFound, TraceboxError, TransferError
from tracebox.session import transfer
from tracebox.session.session import Session
from tracebox.trace.config import TraceConfig
from tracebox.trace.model import TruncationReason
from tracebox.types import CallResult, ErrorInfo, RunResult
from tracebox.verify import _plan
from tracebox.verify._outcome import Record, classify, is_final, status_of, tracer_failed
from tracebox.verify.problems import FunctionProblem, SelfInvokingProblem
from tracebox.verify.results import TestResult, TestStatus, Verdict

if TYPE_CHECKING:
    from tracebox.verify.engine import Verifier

__all__ = ["PRELUDE", "verify"]


def verify(
    verifier: Verifier,
    problem: FunctionProblem | SelfInvokingProblem,
    completion: str,
    oversub: float,
) -> Verdict:
    """One attempt at verifying ``completion`` (the engine retries sandbox errors)."""
    return _FunctionAttempt(verifier, problem, completion, oversub).verdict()


Outcome = tuple[TestStatus, ErrorInfo | None]

_NO_RECORD: Outcome = (
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

    # -- literal tests, checked on the host ----------------------------------------------------

    def _host_tests(self) -> dict[int, Outcome]:
        """The outcomes of the plan's literal tests (``_plan.Plan.host_tests``)."""
        units = self.plan.host_tests
        if not units:
            return {}
        if self._batch_trace() is not False:
            got = self._batched(units)
            if got is not None:
                return got
        return self._one_by_one(units)

    def _trial(self) -> tuple[TestStatus, ErrorInfo | None, dict[int, Outcome]] | None:
        """The program loaded and all the tests' calls made in one trial (``Session.trial``)
        of the thread's pristine candidate sandbox, which then needs no restore: whether the
        program loaded (and why not) and the tests' outcomes. Only when every test is a
        literal one. None if that did not happen here (other tests, calls that cannot be
        batched, no pristine sandbox) or not completely: a limit (the trial's CPU time is
        a share of a call's, ``_TRIAL_SHARE``), a crash, calls left over; then everything
        is done again the usual way, which decides each of those cases test by test.
        """
        units = self.plan.host_tests
        if not units or len(units) < len(self.plan.tests) or self._batch_trace() is False:
            return None  # other tests must see the state the literal tests' calls left
        base = self.v.sandboxes.pristine(self.limits)
        if base is None:
            return None
        todo = list(units)
        cpu = self.cfg.cpu_seconds * _TRIAL_SHARE
        try:
            t = base.trial(
                [self.program],  # the helper is there already: ``PRELUDE``
                [(_BATCH, self._batch_args(todo), {})],
                cpu_seconds=cpu,
                wall_seconds=(4 * cpu + 2) * max(1.0, self.oversub),
            )
        except TraceboxError as exc:
            self.notes.append(f"the trial failed ({type(exc).__name__}: {exc}); {_REDONE}")
            return None
        if t.status != "ok" or not t.runs:
            why = f"{t.error.type}: {t.error.message}" if t.error else t.status
            self.notes.append(f"the trial did not complete ({why}); {_REDONE}")
            return None
        load = t.runs[0]
        if load.status not in ("ok", "error"):  # a limit of ours, not the sample's: redo
            return None
        self.spent_wall += t.wall_seconds
        self.load_cpu, self.load_peak = load.cpu_seconds, load.peak_memory_mb
        if load.status == "error":
            return (*classify(load), {})
        out: dict[int, Outcome] = {}
        if t.calls:
            self.spent_cpu += t.calls[0].cpu_seconds
            if self._answered(t.calls[0], todo, out) is None and not todo:
                return "passed", None, out
        self.records.clear()
        self.spent_cpu = self.spent_wall = self.load_cpu = 0.0
        self.load_peak = None
        return None

    def _batch_trace(self) -> dict[str, Any] | bool | None:
        """The trace settings the batch helper records each call with (None: untraced);
        False when the calls cannot be batched: a trace the helper cannot give per call
        (coverage or full traces, ``keep_traces``) needs a ``Session.call`` per call."""
        trace = self.v._trace
        if trace is None:
            return None
        if trace.mode != "steps" or self.cfg.keep_traces:
            return False
        return trace.to_wire()

    def _one_by_one(self, units: tuple[_plan.Unit, ...]) -> dict[int, Outcome]:
        """Each call through ``forward``, as the test code would make it."""
        out: dict[int, Outcome] = {}
        for u in units:
            lit = u.literal
            assert lit is not None
            try:
                value = self.forward(u.index, lit.function, lit.args, lit.kwargs)
            except _Abort:
                continue  # decided on the host (rec.forced)
            except Exception:
                raised = self.record(u.index).raised
                if raised is None:
                    raise
                out[u.index] = _seen_by_tests(raised)
                continue
            out[u.index] = _checked(lit, value)
        return out

    def _batched(self, units: tuple[_plan.Unit, ...]) -> dict[int, Outcome] | None:
        """All the calls in a few calls of the batch helper; None if the helper's calls did not
        all complete (a limit, a crash, a malformed answer, the sample's budget): then the
        candidate's sandbox is discarded and every call is made again one by one in a fresh
        one, so each test gets the verdict it would have had without batching.

        The helper runs in the candidate's process, so its answers are the candidate's
        output, no more trusted than ``Session.call``'s: each value is unpickled with
        ``transfer.loads_untrusted`` (plain data only) and checked here against the expected
        value, which never enters the candidate's sandbox. A patched helper can make the
        candidate fail, or give values it could have computed anyway; an answer of the wrong
        shape or length is a fallback. Per test, ``calls``, the status and the error are as
        without batching; ``cpu_seconds`` splits the helper calls' measured CPU by the
        helper's own per-call times (the total is measured, the split is reported by the
        candidate's process), ``peak_memory_mb`` is the helper call's peak and ``steps``
        is None untraced, else the count of the recorder the helper ran the call under: the
        count ``Session.call`` gives (same settings, same stack depth, the helper's own code
        not counted; a count cut short, as at the recursion limit, stands as it would). Step
        counts come from a recorder in the candidate's process either way, so a candidate
        can falsify its own counts with or without batching; its verdicts it cannot.
        """
        out: dict[int, Outcome] = {}
        why = self._define_batch()
        todo = list(units)
        while why is None and todo:
            why = self._chunk(todo, out)
        if why is None:
            return out
        self.notes.append(
            f"the batched calls of the literal tests did not complete ({why}): "
            "they were made again one by one in a fresh sandbox"
        )
        self._discard()
        self.records.clear()
        self.spent_cpu = self.spent_wall = 0.0
        return None

    def _define_batch(self) -> str | None:
        """Define the batch helper in the candidate's sandbox; why not, if it failed."""
        assert self.cand is not None
        try:
            r = self.cand.run(_DEFINE_BATCH)
        except TraceboxError as exc:
            return f"{type(exc).__name__}: {exc}"
        if r.status != "ok":
            return f"defining the helper: {r.status}"
        return None

    def _chunk(self, todo: list[_plan.Unit], out: dict[int, Outcome]) -> str | None:
        """One call of the helper for the calls of ``todo`` (it may do only the first few:
        it stops after ``_CHUNK_SHARE`` of a call's CPU limit); takes the done ones off
        ``todo``. Why the calls must be made again, if they must."""
        cfg = self.cfg
        if self.spent_cpu >= cfg.sample_cpu_seconds or self.spent_wall >= self.wall_budget:
            return "the sample's time budget"
        assert self.cand is not None
        t0 = time.monotonic()
        try:
            r = self.cand.call(_BATCH, *self._batch_args(todo))
        except TraceboxError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            self.spent_wall += time.monotonic() - t0
        self.spent_cpu += r.cpu_seconds
        return self._answered(r, todo, out)

    def _batch_args(self, todo: list[_plan.Unit]) -> tuple[Any, ...]:
        """The helper's arguments for the calls of ``todo``."""
        trace = self._batch_trace()
        assert trace is not False
        calls = []
        for u in todo:
            assert u.literal is not None
            calls.append((u.literal.function, u.literal.args, u.literal.kwargs))
        lim = self.limits
        budget = self.cfg.cpu_seconds * _CHUNK_SHARE
        return calls, budget, lim.max_transfer_bytes, lim.max_value_chars, trace

    def _answered(
        self, r: CallResult, todo: list[_plan.Unit], out: dict[int, Outcome]
    ) -> str | None:
        """Take the helper's answer ``r`` for the first calls of ``todo`` (their outcomes in
        ``out``, the calls off ``todo``); why the calls must be made again, if they must."""
        cfg = self.cfg
        if r.status != "ok":
            return f"{r.status}: {r.error.type if r.error else '?'}"
        items = _items(r.returned, len(todo), traced=self._batch_trace() is not None)
        if items is None:
            return "the helper's answer is malformed"
        if self.spent_cpu >= cfg.sample_cpu_seconds or self.spent_wall >= self.wall_budget:
            return "the sample's time budget"  # some call may have started after it ran out
        total = sum(item[2] for item in items)
        for u, (kind, payload, cpu, steps, _) in zip(todo, items, strict=False):
            assert u.literal is not None
            rec = self.record(u.index)
            rec.calls += 1
            share = cpu / total if total > 0 else 1 / len(items)
            rec.cpu += r.cpu_seconds * share
            if r.peak_memory_mb is not None:
                rec.peak = max(rec.peak or 0.0, r.peak_memory_mb)
            if kind != "missing":  # as ``Record.account`` of a call made
                rec.steps = None if steps is None or rec.steps is None else rec.steps + steps
            outcome = self._judge(u.literal, rec, kind, payload)
            if outcome is not None:
                out[u.index] = outcome
        del todo[: len(items)]
        return None

    def _judge(
        self, lit: _plan.LiteralCall, rec: Record, kind: str, payload: Any
    ) -> Outcome | None:
        """One call's outcome from the helper, as ``forward`` and the test code would make it
        (None: decided on the host, in ``rec.forced``)."""
        name = lit.function
        if kind == "missing":
            rec.force("error", ErrorInfo(type="NameError", message=f"name {name!r} is not defined"))
            return None
        if kind == "error":
            err = ErrorInfo(**payload)
            if is_final(err):
                rec.force("error", err)
                return None
            rec.raised = err
            return _seen_by_tests(err)
        why = None
        if kind == "too_large":
            why = f"a value of {payload} bytes pickled (Limits.max_transfer_bytes)"
        elif kind == "unpicklable":
            why = f"a value that cannot be pickled ({payload['message']})"
        else:
            try:
                value = transfer.loads_untrusted(payload)
            except TransferError as exc:
                why = str(exc)
        if why is not None:
            err = ErrorInfo(type="UntransferableValue", message=f"{name}() returned {why}")
            rec.force("error", err)
            return None
        return _checked(lit, value)

    # -- the test sandbox ---------------------------------------------------------------------

    def _run_tests(self, start: int) -> dict[int, Outcome]:
        """The outcome of every test from ``start`` on as the test code reported it (or why
        it could not)."""
        reported: dict[int, Outcome] = {}
        last = self.plan.tests[-1].index
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
        reported: dict[int, Outcome],
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
            reported: dict[int, Outcome] = {}
            tried = self._trial()
            if tried is not None:
                status, err, reported = tried
            else:
                self.cand, status, err = self._load()
                if self.cand is not None:
                    reported = self._host_tests()
            if status != "passed":
                assert err is not None
                failed = tuple(
                    TestResult(index=u.index, name=u.name, status=status, error=err) for u in tests
                )
                return self._verdict(failed, load=err)
            start = len(self.plan.host_tests)
            if start < len(tests):
                reported.update(self._run_tests(start))
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


# -- literal tests ----------------------------------------------------------------------------

_BATCH = "__tracebox_batch__"
_REDONE = "the candidate was verified again the usual way"
_TRIAL_SHARE = 0.1
"""A trial (``_FunctionAttempt._trial``) gets this share of a call's CPU limit: one that
needs more is made again the usual way, so an endless loop costs 10% more, not twice."""
_CHUNK_SHARE = 0.05
"""The helper starts no new call after this share of a call's CPU limit (or as many
seconds of wall clock): a batch call stays far from the limit unless one call alone nears
it, and then the calls are made one by one, each under its own limit."""

# The helper does what the worker does for ``Session.call`` (the worker's own ``describe``
# and ``bounded_repr``, then pickling), for each call in turn. It lives in a namespace of its
# own (real builtins; the candidate's globals cannot shadow its names) and looks the
# functions up in the candidate's namespace, as ``Session.call`` does. KeyboardInterrupt and
# MemoryError end the helper's call (a limit, or the candidate's doing): a fallback.
#
# With ``trace`` (``TraceConfig.to_wire()``, steps mode) each call runs under its own
# ``Recorder``, built as the worker builds a traced call's (``Settings.from_wire``), and is
# made as the worker makes it: through a lambda, so the candidate's function runs exactly as
# deep in the stack as under ``Session.call`` (what a recursion limit sees). The helper's code
# is compiled as ``<tracebox-batch>``, which the verifier's settings do not count (their
# ``include`` is the default, ``<cell-*``; no ``trace_libraries``), so a call counts the
# candidate's steps only: the count ``Session.call`` gives.
# A recorder that cannot start ends the helper's call (a fallback). Untraced, the candidate's
# function runs one frame deeper than under ``Session.call`` (the helper's).
_BATCH_FILE = "<tracebox-batch>"
_BATCH_SOURCE = """\
import pickle, time
from tracebox.trace.recorder import Recorder
from tracebox.trace.settings import Settings
from tracebox.worker.cell import bounded_repr, describe

def make(ns):
    def batch(calls, budget, max_bytes, max_chars, trace=None):
        out = []
        sent = 0
        settings = None if trace is None else Settings.from_wire(trace)
        cpu0, wall0 = time.process_time(), time.monotonic()
        for name, args, kwargs in calls:
            if out and (time.process_time() - cpu0 > budget
                        or time.monotonic() - wall0 > budget or sent > max_bytes // 4):
                break
            t0 = time.process_time()
            fn = ns.get(name)
            if fn is None:
                out.append(("missing", None, time.process_time() - t0) + counted(None, settings))
                continue
            rec = None
            if settings is not None:
                rec = Recorder(settings)
                rec.start()
            try:
                try:
                    if rec is None:
                        value = fn(*args, **kwargs)
                    else:
                        value = (lambda: fn(*args, **kwargs))()
                finally:
                    if rec is not None:
                        rec.stop()
            except (KeyboardInterrupt, MemoryError):
                raise
            except BaseException as exc:
                tb = exc.__traceback__
                while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
                    tb = tb.tb_next
                exc = describe(exc.with_traceback(tb))
                out.append(("error", exc, time.process_time() - t0) + counted(rec, settings))
                continue
            bounded_repr(value, max_chars)
            try:
                data = pickle.dumps(value, protocol=5)
            except Exception as exc:
                out.append(("unpicklable", describe(exc), time.process_time() - t0)
                           + counted(rec, settings))
                continue
            finally:
                value = None
            if len(data) > max_bytes:
                out.append(("too_large", len(data), time.process_time() - t0)
                           + counted(rec, settings))
            else:
                sent += len(data)
                out.append(("ok", data, time.process_time() - t0) + counted(rec, settings))
            data = None
        return out
    return batch

def counted(rec, settings):
    if settings is None:
        return ()
    if rec is None:
        return (0, None)
    trace = rec.trace()
    cut = trace.truncation
    return (trace.counts.steps, None if cut is None else cut.reason)
"""

_MAKER = (
    f"(lambda scope: (exec(compile({_BATCH_SOURCE!r}, {_BATCH_FILE!r}, 'exec'), scope), "
    f"scope['make'])[1])({{'__builtins__': __import__('builtins'), '__file__': {_BATCH_FILE!r}}})"
)
PRELUDE = f"__tracebox_batch_make__ = {_MAKER}\n{_BATCH} = __tracebox_batch_make__(globals())\n"
"""Run in a pristine candidate sandbox before its checkpoint (``Sandboxes``): the helper
compiled once, not once per candidate, and bound to the namespace the candidate's program
will run in (a trial needs nothing more). ``_DEFINE_BATCH`` binds it again, or compiles it
where it is not there (a spawned sandbox); a candidate that replaces either only changes its
own answers."""
_DEFINE_BATCH = f"{_BATCH} = (globals().get('__tracebox_batch_make__') or {_MAKER})(globals())\n"

_KINDS = frozenset({"ok", "missing", "error", "unpicklable", "too_large"})
_CUTS = frozenset(get_args(TruncationReason))


Item = tuple[str, Any, float, int | None, str | None]


def _items(value: object, n: int, *, traced: bool = False) -> list[Item] | None:
    """The helper's answer if it has the helper's shape: 1 to ``n`` ``(kind, payload,
    cpu)``, each payload of its kind's type; traced, ``(kind, payload, cpu, steps,
    truncation)`` (a step count, and why the recorder cut its recording, if it did).
    Returned as the traced shape (steps and truncation None when untraced)."""
    if not isinstance(value, list) or not 1 <= len(value) <= n:
        return None
    items: list[Item] = []
    for item in value:
        if not (isinstance(item, tuple) and len(item) == (5 if traced else 3)):
            return None
        kind, payload, cpu, *counted = item
        if kind not in _KINDS or type(cpu) is not float or not 0.0 <= cpu < 1e9:
            return None
        steps, cut = counted or (None, None)
        if traced and not (
            type(steps) is int
            and 0 <= steps < 1 << 62
            and (cut is None or (type(cut) is str and cut in _CUTS))
        ):
            return None
        ok = {
            "ok": type(payload) is bytes,
            "missing": payload is None,
            "too_large": type(payload) is int,
        }.get(kind)
        if ok is None:  # error, unpicklable: the worker's describe()
            ok = (
                type(payload) is dict
                and set(payload) == {"type", "message", "traceback"}
                and all(type(x) is str for x in payload.values())
            )
        if not ok:
            return None
        items.append((kind, payload, cpu, steps, cut))
    return items


def _text(exc: object) -> str:
    try:
        return str(exc)[:1000]
    except Exception:
        return "<str() of the exception failed>"


def _checked(lit: _plan.LiteralCall, value: Any) -> Outcome:
    """The test's outcome for the candidate's ``value``, as the test code's assert ends."""
    try:
        holds = lit.holds(value)
    except Exception as exc:
        return "error", ErrorInfo(type=type(exc).__name__, message=_text(exc))
    if holds:
        return "passed", None
    return "failed", ErrorInfo(type="AssertionError", message=_text(AssertionError(*lit.message)))


def _seen_by_tests(err: ErrorInfo) -> Outcome:
    """The outcome of a test whose call raised ``err``: the exception crosses to the test
    code (``worker.tools``: the builtin of that name, else ``ToolError``) and ends its
    assert there."""
    message = err.message[:2000]
    exc: Exception | None = None
    cls = getattr(builtins, err.type, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            exc = cls(message)
        except Exception:
            exc = None
    if exc is None:
        return "error", ErrorInfo(type="ToolError", message=_text(f"{err.type}: {message}"))
    status: TestStatus = "failed" if isinstance(exc, AssertionError) else "error"
    return status, ErrorInfo(type=type(exc).__name__, message=_text(exc))


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
