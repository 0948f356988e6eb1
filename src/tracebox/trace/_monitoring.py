"""The ``sys.monitoring`` backend (PEP 669), Python 3.12+: plumbing and full mode.

It reproduces exactly the events ``sys.settrace`` reports (3.12+ implements settrace on
top of sys.monitoring, with the same mapping), so both backends give the same steps:

    PY_START, PY_RESUME, PY_THROW -> call      PY_RETURN, PY_YIELD, PY_UNWIND -> return
    RAISE, STOP_ITERATION -> exception         LINE, and a JUMP backwards within one line -> line

Only what is needed is switched on: calls, raises and unwinding globally (they cannot be
local), everything else locally on the code objects of user code once a call shows them;
library code called from user code gets return events only. Steps and coverage modes use
the leaner callbacks of ``_monitoring_lean``.

Threads: only the thread that starts recording is recorded; callbacks from other threads
return at once.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 12):  # pragma: no cover - imported only on 3.12+
    raise ImportError("sys.monitoring needs Python 3.12 or later")

import threading
import types
from typing import Any, cast

from tracebox.trace import _monitoring_lean as lean
from tracebox.trace._codeinfo import LIBRARY, OWN, USER, CodeInfo, CodeTable
from tracebox.trace._collector import Collector, Counter
from tracebox.trace.coverage import CoverageSink
from tracebox.trace.errors import TraceBudgetExceeded
from tracebox.trace.settings import Settings

__all__ = ["MonitoringBackend"]

M = sys.monitoring
E = M.events
DISABLE = M.DISABLE
_TOOL_IDS = (4, 3, 2, 0)  # 1 is coverage.py's, 5 the optimizer's
GLOBAL = E.PY_START | E.PY_RESUME | E.PY_THROW | E.PY_UNWIND | E.RAISE
USER_LOCAL = E.LINE | E.JUMP | E.PY_RETURN | E.PY_YIELD | E.STOP_ITERATION
LIBRARY_LOCAL = E.PY_RETURN | E.PY_YIELD
_getframe = sys._getframe
_ident = threading.get_ident


class MonitoringBackend:
    name = "monitoring"

    def __init__(
        self, settings: Settings, sink: Counter, codes: CodeTable, coverage: CoverageSink | None
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.full = cast("Collector", sink)  # full mode's callbacks only
        self.codes = codes
        self._by_id = codes.by_id
        self._coverage = coverage
        self._tool = -1
        self.tid = 0
        self._enabled: list[CodeInfo] = []
        self._registered: list[int] = []
        self._finish: Any = None  # steps mode: copies the closure's counts into the sink
        self._ops: Any = None  # count_instructions: the instruction counter

    def start(self) -> None:
        self._tool = _claim_tool()
        self.tid = _ident()
        M.restart_events()  # forget DISABLEs of earlier recordings with this tool id
        if self.settings.count_instructions:
            from tracebox.trace._instructions import MonitoringCounter

            self._ops = MonitoringCounter(self.sink, self.codes, self.tid)
            self._ops.start(restart=False)
        events = GLOBAL
        if self._coverage is not None:
            callbacks, events = lean.coverage_callbacks(self, self._coverage), E.PY_START
        elif self.settings.mode == "steps":
            callbacks, self._finish = lean.counting_callbacks(self)
            events = GLOBAL & ~E.PY_UNWIND
        else:
            callbacks = {
                E.PY_START: self._start,
                E.PY_RESUME: self._resume,
                E.PY_THROW: self._throw,
                E.PY_RETURN: self._return,
                E.PY_YIELD: self._yield,
                E.PY_UNWIND: self._unwind,
                E.RAISE: self._raise,
                E.STOP_ITERATION: self._raise,
                E.LINE: self._line,
                E.JUMP: self._jump,
            }
        for event, callback in callbacks.items():
            M.register_callback(self._tool, event, callback)
            self._registered.append(event)
        M.set_events(self._tool, events)

    def stop(self) -> None:
        if self._tool < 0:
            return
        tool, self._tool = self._tool, -1
        M.set_events(tool, 0)
        for info in self._enabled:
            M.set_local_events(tool, info.code, 0)
            info.enabled = 0
        for event in self._registered:
            M.register_callback(tool, event, None)
        M.free_tool_id(tool)
        if self._ops is not None:
            self._ops.stop()
        if self._finish is not None:
            self._finish()

    def enable(self, info: CodeInfo, events: int) -> None:
        M.set_local_events(self._tool, info.code, events)
        info.enabled = events
        self._enabled.append(info)

    def info(self, code: types.CodeType) -> CodeInfo:
        return self._by_id.get(id(code)) or self.codes.get(code)

    def raise_stop(self) -> None:
        self.sink.stop_pending = False
        self.stop()
        raise TraceBudgetExceeded(self.sink.truncation)

    def fail(self, exc: Exception) -> None:
        """Recording ends with a marker. A bug of ours does not reach the program; its own
        recursion limit or memory running out inside a callback does."""
        if self.sink.fail(exc):
            self.stop()
            raise exc
        self.stop()

    # -- full mode ------------------------------------------------------------------------
    # _start and _begin are near twins on purpose: each runs on every call event, and
    # sharing a helper would add a Python call to the hottest path of the recorder.
    def _start(self, code: types.CodeType, offset: int) -> Any:
        if _ident() != self.tid:
            return None
        info = self._by_id.get(id(code)) or self.codes.get(code)
        if info.kind != USER:
            return self._library_call(info) if info.kind == LIBRARY else DISABLE
        if not info.enabled:
            self.enable(info, USER_LOCAL)
        try:
            self.full.enter(_getframe(1), info, True)
        except Exception as exc:
            self.fail(exc)
            return None
        if self.sink.stop_pending:
            self.raise_stop()
        return None

    def _resume(self, code: types.CodeType, offset: int) -> Any:
        return self._begin(code, True)

    def _throw(self, code: types.CodeType, offset: int, exc: BaseException) -> Any:
        self._begin(code, False)  # PY_THROW is not a local event: no DISABLE

    def _begin(self, code: types.CodeType, local: bool) -> Any:
        if _ident() != self.tid:
            return None
        info = self._by_id.get(id(code)) or self.codes.get(code)
        if info.kind == OWN:
            return DISABLE if local else None
        if info.kind == LIBRARY:
            return self._library_call(info, 3)
        if not info.enabled:
            self.enable(info, USER_LOCAL)
        try:
            self.full.enter(_getframe(2), info, False)
        except Exception as exc:
            self.fail(exc)
            return None
        if self.sink.stop_pending:
            self.raise_stop()
        return None

    def _library_call(self, info: CodeInfo, up: int = 2) -> None:
        """A library frame starts: one call step if user code called it."""
        frame = _getframe(up)
        back = frame.f_back
        if back is None or self.info(back.f_code).kind != USER:
            return
        if not info.enabled:
            self.enable(info, LIBRARY_LOCAL)
        try:
            self.full.lib_enter(frame, info)
        except Exception as exc:
            self.fail(exc)

    def _line(self, code: types.CodeType, line: int) -> None:
        if _ident() != self.tid:
            return
        try:
            self.full.line(_getframe(1), self._by_id.get(id(code)) or self.codes.get(code), line)
        except Exception as exc:
            self.fail(exc)
            return
        if self.sink.stop_pending:
            self.raise_stop()

    def _jump(self, code: types.CodeType, src: int, dst: int) -> Any:
        info = self.info(code)
        line = info.line_at(src)
        if dst > src or line is None or line != info.line_at(dst):
            return DISABLE  # forward, or to another line: LINE reports it if anything does
        if _ident() != self.tid:
            return None
        try:
            self.full.line(_getframe(1), info, line)
        except Exception as exc:
            self.fail(exc)
            return None
        if self.sink.stop_pending:
            self.raise_stop()
        return None

    def _return(self, code: types.CodeType, offset: int, value: object) -> None:
        if _ident() != self.tid:
            return
        info = self._by_id.get(id(code)) or self.codes.get(code)
        try:
            if info.kind == USER:
                self.full.leave(_getframe(1), info, value, 0)
            else:
                self._library_return(info, value, 0, 2)
        except Exception as exc:
            self.fail(exc)

    def _yield(self, code: types.CodeType, offset: int, value: object) -> None:
        self._leave(code, value, 1)

    def _unwind(self, code: types.CodeType, offset: int, exc: BaseException) -> None:
        self._leave(code, None, 2)

    def _leave(self, code: types.CodeType, value: object, kind: int) -> None:
        if _ident() != self.tid:
            return
        info = self._by_id.get(id(code)) or self.codes.get(code)
        try:
            if info.kind == USER:
                self.full.leave(_getframe(2), info, value, kind)
            elif info.kind == LIBRARY:
                self._library_return(info, value, kind, 3)
        except Exception as exc:
            self.fail(exc)

    def _library_return(self, info: CodeInfo, value: object, kind: int, up: int) -> None:
        if self.full.has_library_frames:
            frame = _getframe(up)
            if self.full.knows(frame):
                self.full.lib_leave(frame, info, value, kind)

    def _raise(self, code: types.CodeType, offset: int, exc: BaseException) -> None:
        if _ident() != self.tid:
            return
        info = self._by_id.get(id(code)) or self.codes.get(code)
        if info.kind == USER:
            try:
                self.full.exception(_getframe(1), info, exc)
            except Exception as error:
                self.fail(error)


def _claim_tool() -> int:
    for tool in _TOOL_IDS:
        if M.get_tool(tool) is None:
            M.use_tool_id(tool, "tracebox")
            return tool
    raise RuntimeError("every sys.monitoring tool id is in use; cannot record a trace")
