"""The ``sys.settrace`` backend: Python 3.11 (and 3.12+ on request, to cross-check).

settrace calls a global function on every new or resumed frame; we return a local tracer
for user frames (lines, returns, exceptions) and a return-only tracer for library frames
called from user code. Only the thread that starts recording is traced: settrace is per
thread, and we do not install ``threading.settrace``.
"""

from __future__ import annotations

import dis
import sys
import threading
import types
from collections.abc import Callable
from typing import Any, cast

from tracebox.trace._codeinfo import LIBRARY, USER, CodeInfo, CodeTable
from tracebox.trace._collector import Collector, Counter
from tracebox.trace.errors import TraceBudgetExceeded
from tracebox.trace.settings import Settings

__all__ = ["SettraceBackend"]

_RETURN_OPS = frozenset(dis.opmap[n] for n in ("RETURN_VALUE", "RETURN_CONST") if n in dis.opmap)
Tracer = Any  # the settrace callback type (typeshed's is private)
_ident = threading.get_ident


class SettraceBackend:
    name = "settrace"

    def __init__(self, settings: Settings, sink: Counter, codes: CodeTable, coverage: Any) -> None:
        self._settings = settings
        self._sink = sink
        self._full = cast("Collector", sink)  # full mode's tracers only
        self._codes = codes
        self._coverage = coverage  # CoverageSink in coverage mode
        self._previous: Tracer = None
        self._last_line: dict[int, int] = {}  # coverage mode: id(frame) -> its last line
        self._active = False
        self._global: Tracer = None
        self._finish: Callable[[], None] | None = None
        self._ops: Callable[[], None] | None = None  # count_instructions: stops the counting

    def start(self) -> None:
        self._previous = sys.gettrace()
        self._active = True
        if self._settings.mode == "coverage":
            self._global = self._coverage_call
        elif self._settings.mode == "steps":
            self._global, self._finish = self._counting()
        else:
            self._global = self._call
        if self._settings.count_instructions:
            self._count_instructions()
        sys.settrace(self._global)

    def stop(self) -> None:
        if self._active:
            self._active = False
            if self._finish is not None:
                self._finish()
            if self._ops is not None:
                self._ops()
            if sys.gettrace() != self._global and self._sink.truncation is None:
                # The interpreter drops a trace function that raised (or that it failed to
                # call, at the recursion limit): say so rather than end the trace silently.
                rows = getattr(self._sink, "rows", None)
                kept = self._sink.total if rows is None else len(rows)
                self._sink.truncate("internal_error", 0, kept, _LOST)
            sys.settrace(self._previous)

    def _count_instructions(self) -> None:
        from tracebox.trace import _instructions

        if sys.version_info >= (3, 12):  # opcode events are unreliable there: monitoring
            counter = _instructions.MonitoringCounter(self._sink, self._codes, _ident())
            counter.start(restart=True)
            self._ops = counter.stop
        else:
            self._global, self._ops = _instructions.settrace_counter(
                self._global, self._sink, self._codes
            )

    # -- full and steps modes -------------------------------------------------------------
    def _call(self, frame: types.FrameType, event: str, arg: Any) -> Tracer:
        if event != "call" or not self._active:
            return None
        try:
            info = self._codes.get(frame.f_code)
            if info.kind == USER:
                self._full.enter(frame, info, info.is_fresh(frame.f_lasti))
                self._check_stop()
                return self._local
            if info.kind == LIBRARY:
                back = frame.f_back
                if back is not None and self._codes.get(back.f_code).kind == USER:
                    self._full.lib_enter(frame, info)
                    frame.f_trace_lines = False
                    return self._library
        except Exception as exc:  # a bug of ours must not break the user's program
            self._fail(exc)
        return None

    def _local(self, frame: types.FrameType, event: str, arg: Any) -> Tracer:
        try:
            info = self._codes.get(frame.f_code)
            if event == "line":
                self._full.line(frame, info, frame.f_lineno)
                self._check_stop()
            elif event == "return":
                self._full.leave(frame, info, arg, self._kind(frame, info))
            elif event == "exception":
                self._full.exception(frame, info, arg[1])
        except Exception as exc:
            self._fail(exc)
            return None
        return self._local

    def _library(self, frame: types.FrameType, event: str, arg: Any) -> Tracer:
        if event == "return" and self._full.knows(frame):
            try:
                info = self._codes.get(frame.f_code)
                self._full.lib_leave(frame, info, arg, self._kind(frame, info))
            except Exception as exc:
                self._fail(exc)
                return None
        return self._library

    def _kind(self, frame: types.FrameType, info: CodeInfo) -> int:
        """settrace says "return" for returns, yields and unwinding: which one is it?"""
        if frame.f_code.co_code[frame.f_lasti] in _RETURN_OPS:
            return 0
        if info.generator and not self._full.frame_raised(frame):
            return 1
        return 2

    def _check_stop(self) -> None:
        if self._sink.stop_pending:
            self._sink.stop_pending = False
            self.stop()
            raise TraceBudgetExceeded(self._sink.truncation)

    def _fail(self, exc: Exception) -> None:
        """Recording ends with a marker. A bug of ours does not reach the program; its own
        recursion limit or memory running out inside the tracer does."""
        if self._sink.fail(exc):
            self.stop()
            raise exc
        self.stop()

    # -- steps mode -----------------------------------------------------------------------
    def _counting(self) -> tuple[Tracer, Callable[[], None]]:
        """Steps mode's tracers: counts in closure cells, no per-event method calls. A line
        event, most of them, costs an increment and one comparison: ``cap`` is how many
        lines may be counted before the budget is looked at (the budget less the other
        counts, kept up to date as they grow)."""
        sink, codes, by_id = self._sink, self._codes, self._codes.by_id
        lines = calls = returns = exceptions = 0
        limit = cap = self._settings.max_steps  # the total at which the budget is looked at
        user_ids: set[int] = set()  # user codes seen (their CodeInfo keeps the ids valid)

        def finish() -> None:
            sink.lines, sink.calls, sink.returns = lines, calls, returns
            sink.exceptions = exceptions

        def over(event: str) -> None:
            nonlocal limit, cap
            finish()
            sink.check_budget()
            if sink.truncation is not None:
                limit = 1 << 62  # counting goes on past the budget
            if sink.stop_pending and event in ("line", "call"):
                self._check_stop()
            # a stop still pending is acted on at the next line or call: look again then
            cap = -1 if sink.stop_pending else limit - calls - returns - exceptions

        def call(frame: types.FrameType, event: str, arg: Any) -> Tracer:
            nonlocal calls, cap
            if event != "call" or not self._active:
                return None
            code = frame.f_code
            if id(code) not in user_ids:
                info = by_id.get(id(code)) or codes.get(code)
                if info.kind != USER:
                    back = frame.f_back
                    if info.kind != LIBRARY or back is None or id(back.f_code) not in user_ids:
                        return None
                    calls += 1
                    cap -= 1
                    frame.f_trace_lines = False
                    return library
                user_ids.add(id(code))
            calls += 1
            cap -= 1
            if lines > cap:
                over("call")
            return local

        def local(frame: types.FrameType, event: str, arg: Any) -> Tracer:
            nonlocal lines, returns, exceptions, cap
            if event == "line":
                lines += 1
                if lines > cap:
                    over(event)
                return local
            if event == "return":
                returns += 1
            elif event == "exception":
                exceptions += 1
                if isinstance(arg[1], RecursionError) and sink.truncation is None:
                    finish()
                    sink.at_recursion_limit(sink.total)
            cap -= 1
            if lines > cap:
                over(event)
            return local

        def library(frame: types.FrameType, event: str, arg: Any) -> Tracer:
            nonlocal returns, cap
            if event == "return":
                returns += 1
                cap -= 1
            return library

        return call, finish

    # -- coverage mode --------------------------------------------------------------------
    def _coverage_call(self, frame: types.FrameType, event: str, arg: Any) -> Tracer:
        if event != "call" or not self._active:
            return None
        info = self._codes.by_id.get(id(frame.f_code)) or self._codes.get(frame.f_code)
        if info.kind != USER:
            return None
        lines, arcs = self._coverage.sets(info.code.co_filename)
        fallthrough = info.fallthrough
        # A resumed generator goes on from its last line: kept by frame across activations.
        last = self._last_line
        prev = 0
        if info.generator:
            if info.is_fresh(frame.f_lasti):
                last[id(frame)] = 0
            prev = last.get(id(frame), 0)

        def local(frame: types.FrameType, event: str, arg: Any) -> Tracer:
            nonlocal prev
            if event == "line":
                line = frame.f_lineno
                lines.add(line)
                if prev and (prev, line) not in fallthrough:
                    arcs.add((prev, line))
                prev = line
            elif event == "return" and info.generator:
                last[id(frame)] = prev
            return local

        return local


_LOST = (
    "every later step; the interpreter switched tracing off "
    "(the tracer raised, or could not be called at the recursion limit)"
)
