"""The ``sys.monitoring`` callbacks of the cheap modes: steps (counting) and coverage.

Steps mode counts in closure cells (cheaper than attributes). Where it can, it keeps
Python out of the two events that dominate, on a CPU-bound workload of our own
(``bench/trace_workload.py``, Python 3.13):

- Line events (about 85% of all events): with ``on_budget="continue"`` (the default) the
  budget changes nothing while the program runs, so it is looked at when recording ends,
  and lines are counted by a C callable (``_c_counter``) until a second thread runs Python
  code; from then on a Python callback checks the thread of every line event. About 50 ns
  a line event instead of about 150 (a Python callback), against a floor of 20 ns for any
  callback at all. ``on_budget="stop"`` must stop at the exact line: Python callback.
- Calls: a code object of user code, once seen, has its call and resume events on a
  second tool (``_CallTool``) whose callback only checks the thread and counts, while the
  recording's own tool turns those events off for it (``DISABLE``); about 100 ns a call
  instead of 230. Library code keeps the recording tool's callback, which counts a library
  frame when user code called it.

Coverage mode turns every line and jump off once seen, and every branch once both ways
were seen (``DISABLE``), as coverage.py's sysmon core does. A branch that only ever goes
one way cannot be turned off on 3.12 and 3.13 (``DISABLE`` turns off both ways), so its
events are answered first, at the cost of two dict lookups.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 12):  # pragma: no cover - imported only on 3.12+
    raise ImportError("sys.monitoring needs Python 3.12 or later")

import functools
import operator
import threading
import types
from typing import TYPE_CHECKING, Any

from tracebox.trace._codeinfo import LIBRARY, USER
from tracebox.trace.coverage import CoverageSink

if TYPE_CHECKING:
    from tracebox.trace._monitoring import MonitoringBackend

__all__ = ["counting_callbacks", "coverage_callbacks"]

M = sys.monitoring
E = M.events
DISABLE = M.DISABLE
_getframe = sys._getframe
_ident = threading.get_ident


def counting_callbacks(b: MonitoringBackend) -> tuple[dict[int, Any], Any]:
    """Steps mode: the callbacks, and a function that copies the counts into the sink and
    releases the call tool (the backend calls it once, when recording stops).

    Returns are not events here: every call (or resumption) ends in exactly one return,
    yield or unwinding, so returns = calls - frames still running. That spares a callback
    per call; the stack is walked only when the budget is checked.
    """
    sink, codes, by_id, tid = b.sink, b.codes, b.codes.by_id, b.tid
    max_steps = b.settings.max_steps
    deferred = b.settings.on_budget == "continue"  # the budget is looked at in the end
    lines = calls = exceptions = 0  # lines: those counted in Python (see c_lines)
    running_at_stop = 0  # frames left running when on_budget="stop" ended the program
    limit = 1 << 62 if deferred else max_steps  # Python lines at which to check the budget
    guarded = len(sys._current_frames()) > 1  # another thread runs already
    counter = _c_counter() if deferred and not guarded else None
    # Codes seen before, by id (their CodeInfo holds them, so ids are not reused): the
    # common events cost a set lookup and an increment.
    user_ids: set[int] = set()
    local_events = E.LINE | E.JUMP | E.STOP_ITERATION

    def c_lines() -> int:
        return 0 if counter is None else counter.cache_info().misses

    def running(frame: types.FrameType | None) -> int:
        """Counted frames on the stack: called, not returned yet."""
        n = 0
        while frame is not None:
            if id(frame.f_code) in user_ids:
                n += 1
            elif frame.f_back is not None and id(frame.f_back.f_code) in user_ids:
                info = by_id.get(id(frame.f_code))
                n += info is not None and info.kind == LIBRARY
            frame = frame.f_back
        return n

    def budget(frame: types.FrameType) -> None:
        """on_budget="stop": past the budget, stop the program (at a line event)."""
        nonlocal limit, running_at_stop
        active = running(frame)
        total = lines + 2 * calls - active + exceptions
        if sink.truncation is None and total > max_steps:
            snapshot(active)
            sink.check_budget()
        if sink.truncation is None:
            limit = lines + max_steps - total + 1
        else:
            limit = 1 << 62  # counting goes on past the budget
            if sink.stop_pending:
                running_at_stop = active
                b.raise_stop()

    def line(code: types.CodeType, line: int) -> None:
        nonlocal lines
        if guarded and _ident() != tid:
            return
        lines += 1
        if lines >= limit:
            budget(_getframe(1))

    def jump(code: types.CodeType, src: int, dst: int) -> Any:
        nonlocal lines
        info = by_id.get(id(code)) or codes.get(code)
        at = info.line_at(src)
        if dst > src or at is None or at != info.line_at(dst):
            return DISABLE  # only a jump back within one line is a line event of its own
        if _ident() == tid:
            lines += 1
            if lines >= limit:
                budget(_getframe(1))
        return None

    def other_thread() -> None:
        """Another thread runs Python code: from now on each line event checks the thread.
        A thread's first event in a user frame is a start, resume or throw, never a line,
        so the C counter has counted none of its lines."""
        nonlocal guarded
        guarded = True
        if counter is not None:
            M.register_callback(b._tool, E.LINE, line)

    def call(code: types.CodeType, offset: int) -> None:
        """The call tool's callback: a call or resumption of user code seen before."""
        nonlocal calls
        if _ident() != tid:
            if not guarded:
                other_thread()
            return
        calls += 1

    call_tool = _CallTool.claim(call)

    def start(code: types.CodeType, offset: int) -> Any:
        nonlocal calls
        if _ident() != tid:
            if not guarded:
                other_thread()
            return None
        if id(code) in user_ids:
            if call_tool is not None:
                return DISABLE  # a resumption point not met before: the call tool counts
            calls += 1
            return None
        return first(code, True)

    def throw(code: types.CodeType, offset: int, exc: BaseException) -> None:
        nonlocal calls
        if _ident() != tid:
            if not guarded:
                other_thread()
        elif id(code) in user_ids:
            calls += 1
        else:
            first(code, False)  # not a local event: no DISABLE

    def first(code: types.CodeType, local: bool) -> Any:
        """A code object seen for the first time, or library code (called from user code?)."""
        nonlocal calls
        info = by_id.get(id(code)) or codes.get(code)
        if info.kind == USER:
            if not info.enabled:
                b.enable(info, local_events)
            user_ids.add(id(code))
            calls += 1
            if call_tool is not None:
                # Its later calls go to the call tool, which does not see this event (a
                # tool's callbacks for an event are chosen before any of them runs).
                call_tool.add(code)
                return DISABLE if local else None
        elif info.kind == LIBRARY:
            back = _getframe(2).f_back
            calls += back is not None and id(back.f_code) in user_ids
        elif local:
            return DISABLE
        return None

    def raised(code: types.CodeType, offset: int, exc: BaseException) -> None:
        nonlocal exceptions
        if id(code) in user_ids and (not guarded or _ident() == tid):
            exceptions += 1
            if isinstance(exc, RecursionError) and sink.truncation is None:
                snapshot(running(_getframe(1)))
                sink.at_recursion_limit(sink.total)

    def snapshot(active: int | None = None) -> None:
        gone = running_at_stop if active is None else active
        sink.lines, sink.calls, sink.exceptions = lines + c_lines(), calls, exceptions
        sink.returns = calls - gone
        if deferred:
            sink.check_budget()

    def finish() -> None:
        if call_tool is not None:
            call_tool.release()
        snapshot()

    callbacks = {
        E.PY_START: start,
        E.PY_RESUME: start,
        E.PY_THROW: throw,
        E.RAISE: raised,
        E.STOP_ITERATION: raised,
        E.LINE: line if counter is None else counter,
        E.JUMP: jump,
    }
    return callbacks, finish


def _c_counter() -> Any:
    """A C callable that counts its calls: the cheapest line callback we know of.

    The standard library has no C counter that takes the line callback's ``(code, line)``
    (and hashing a code object, as a dict or ``lru_cache`` key would, costs 0.5 us), but
    ``lru_cache(maxsize=0)`` wraps any callable in C and counts every call as a cache miss
    without making a key. Around ``operator.is_`` (C, two arguments, no side effect) a
    line event costs about 45 ns more than untraced code: bare C callables cost 20 ns,
    Python ones 75 ns and up. It returns False, not ``DISABLE``, so events stay on. It
    cannot check a thread or a budget: ``counting_callbacks`` uses it only where neither
    needs checking.
    """
    return functools.lru_cache(maxsize=0)(operator.is_)


class _CallTool:
    """A ``sys.monitoring`` tool of its own for the call and resume events of user code.

    The recording's tool must see call events of all code (to find user code, and library
    frames that user code calls), so its callback asks of each event whose code it is. Once
    a code object of user code is known, its events move here, where the callback knows.
    Fewer than two free tool ids: steps mode counts calls on the recording's tool.
    """

    _IDS = (0, 2, 3, 4)  # 1 is coverage.py's, 5 the optimizer's

    def __init__(self, tool: int, callback: Any) -> None:
        self.tool = tool
        self._codes: list[types.CodeType] = []
        M.use_tool_id(tool, "tracebox-calls")
        M.register_callback(tool, E.PY_START, callback)
        M.register_callback(tool, E.PY_RESUME, callback)

    @classmethod
    def claim(cls, callback: Any) -> _CallTool | None:
        for tool in cls._IDS:
            if M.get_tool(tool) is None:
                return cls(tool, callback)
        return None

    def add(self, code: types.CodeType) -> None:
        M.set_local_events(self.tool, code, E.PY_START | E.PY_RESUME)
        self._codes.append(code)

    def release(self) -> None:
        if self.tool < 0:
            return
        tool, self.tool = self.tool, -1
        for code in self._codes:
            M.set_local_events(tool, code, 0)
        self._codes.clear()
        M.register_callback(tool, E.PY_START, None)
        M.register_callback(tool, E.PY_RESUME, None)
        M.free_tool_id(tool)


def coverage_callbacks(b: MonitoringBackend, cov: CoverageSink) -> dict[int, Any]:
    codes, tid = b.codes, b.tid
    # id(code) -> offset of a branch -> the way it went first. A branch that only ever goes
    # one way cannot be turned off (DISABLE turns off both ways): its later events must
    # cost as little as possible, so they are answered before anything else is looked at.
    first_way: dict[int, dict[int, int]] = {}
    local_events = E.LINE | E.JUMP | E.BRANCH

    def start(code: types.CodeType, offset: int) -> Any:
        info = codes.get(code)
        if info.kind == USER and not info.enabled:
            b.enable(info, local_events)
        return DISABLE

    def line(code: types.CodeType, line: int) -> Any:
        if _ident() != tid:
            return None
        cov.sets(code.co_filename)[0].add(line)
        return DISABLE

    def jump(code: types.CodeType, src: int, dst: int) -> Any:
        if _ident() != tid:
            return None
        arc(code, src, dst)
        return DISABLE

    def branch(code: types.CodeType, src: int, dst: int) -> Any:
        ways = first_way.get(id(code))
        if ways is not None and ways.get(src) == dst:
            return None  # the way it went before: nothing new
        if _ident() != tid:
            return None
        arc(code, src, dst)
        if ways is None:
            ways = first_way[id(code)] = {}
        return DISABLE if ways.setdefault(src, dst) != dst else None  # both ways seen

    def arc(code: types.CodeType, src: int, dst: int) -> None:
        """A taken jump is an arc when it makes a line event that does not fall through."""
        info = codes.get(code)
        a, z = info.line_at(src), info.line_at(dst)
        if a is None or z is None or (a == z and dst > src) or (a, z) in info.fallthrough:
            return
        cov.sets(code.co_filename)[1].add((a, z))

    return {E.PY_START: start, E.LINE: line, E.JUMP: jump, E.BRANCH: branch}
