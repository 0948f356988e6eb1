"""The ``sys.monitoring`` callbacks of the cheap modes: steps (counting) and coverage.

Steps mode counts in closure cells (cheaper than attributes) and checks the budget only on
line events, with a threshold recomputed when it is reached. Its line callback skips the
thread check until a second thread shows up (a call event from another thread), because a
line event costs little more than the callback itself.

Coverage mode turns every line and jump off once seen, and every branch once both ways
were seen (``DISABLE``), as coverage.py's sysmon core does; what remains is close to free.
"""

from __future__ import annotations

import sys

if sys.version_info < (3, 12):  # pragma: no cover - imported only on 3.12+
    raise ImportError("sys.monitoring needs Python 3.12 or later")

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
    """Steps mode: the callbacks, and a function that copies the counts into the sink.

    Returns are not events here: every call (or resumption) ends in exactly one return,
    yield or unwinding, so returns = calls - frames still running. That spares a callback
    per call; the stack is walked only when the budget is checked.
    """
    sink, codes, by_id, tid = b.sink, b.codes, b.codes.by_id, b.tid
    max_steps = b.settings.max_steps
    lines = calls = exceptions = 0
    running_at_stop = 0  # frames left running when on_budget="stop" ended the program
    limit = max_steps
    guarded = len(sys._current_frames()) > 1  # another thread runs already
    # Codes seen before, by id (their CodeInfo holds them, so ids are not reused): the
    # common events cost a set lookup and an increment.
    user_ids: set[int] = set()
    local_events = E.LINE | E.JUMP | E.STOP_ITERATION

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
        nonlocal limit, running_at_stop
        active = running(frame)
        total = lines + 2 * calls - active + exceptions
        if sink.truncation is None and total > max_steps:
            finish(active)
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

    def start(code: types.CodeType, offset: int) -> Any:
        nonlocal calls, guarded
        if _ident() != tid:
            guarded = True
            return None
        if id(code) in user_ids:
            calls += 1
            return None
        return first(code, True)

    def throw(code: types.CodeType, offset: int, exc: BaseException) -> None:
        nonlocal calls, guarded
        if _ident() != tid:
            guarded = True
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
                finish(running(_getframe(1)))
                sink.at_recursion_limit(sink.total)

    def finish(active: int | None = None) -> None:
        gone = running_at_stop if active is None else active
        sink.lines, sink.calls, sink.exceptions = lines, calls, exceptions
        sink.returns = calls - gone

    callbacks = {
        E.PY_START: start,
        E.PY_RESUME: start,
        E.PY_THROW: throw,
        E.RAISE: raised,
        E.STOP_ITERATION: raised,
        E.LINE: line,
        E.JUMP: jump,
    }
    return callbacks, finish


def coverage_callbacks(b: MonitoringBackend, cov: CoverageSink) -> dict[int, Any]:
    codes, tid = b.codes, b.tid
    branches: dict[tuple[int, int], set[int]] = {}
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
        if _ident() != tid:
            return None
        arc(code, src, dst)
        seen = branches.setdefault((id(code), src), set())
        seen.add(dst)
        return DISABLE if len(seen) > 1 else None  # both ways seen

    def arc(code: types.CodeType, src: int, dst: int) -> None:
        """A taken jump is an arc when it makes a line event that does not fall through."""
        info = codes.get(code)
        a, z = info.line_at(src), info.line_at(dst)
        if a is None or z is None or (a == z and dst > src) or (a, z) in info.fallthrough:
            return
        cov.sets(code.co_filename)[1].add((a, z))

    return {E.PY_START: start, E.LINE: line, E.JUMP: jump, E.BRANCH: branch}
