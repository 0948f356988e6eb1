"""Turns events into steps. Both backends feed the same ``Collector``, so a program gives
the same steps whichever backend recorded it; backends only translate their events.

``Counter`` is the steps-mode variant: the same events, counted and nothing else.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import types
from typing import Any

from tracebox.trace._codeinfo import CodeInfo
from tracebox.trace._effects import Effect
from tracebox.trace._locals import FrameState, LocalsDiffer
from tracebox.trace._units import Units
from tracebox.trace.model import Counts, FrameInfo, Row, Truncation, TruncationReason, Value
from tracebox.trace.render import Renderer
from tracebox.trace.settings import Settings

__all__ = ["Collector", "Counter"]

_DROPPED = "every later step; counts go on, see dropped_steps"
_LIMIT_DROPPED = "every later step; the program reached its {} inside the recorder"
_RECURSION_DROPPED = (
    "every later step (counts go on but may miss events at the limit): the program "
    "reached the recursion limit"
)


class Counter:
    """Event counts and the truncation marker of a recording.

    Steps mode uses it as is: the backends count in closure cells (cheaper than
    attributes) and hand their totals over. ``Collector`` (full mode) adds the steps.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lines = self.calls = self.returns = self.exceptions = 0
        # Exact counts of count_instructions (None: not counted), filled in when it stops.
        self.bytecodes: int | None = None
        self.blocks: int | None = None
        self.truncation: Truncation | None = None
        self.recording = True
        self.stop_pending = False  # on_budget="stop": raise at the next line or call event

    @property
    def total(self) -> int:
        return self.lines + self.calls + self.returns + self.exceptions

    def counts(self) -> Counts:
        return Counts(
            self.lines, self.calls, self.returns, self.exceptions,
            blocks=self.blocks, bytecodes=self.bytecodes,
        )  # fmt: skip

    def at_recursion_limit(self, kept: int) -> None:
        """The program hit the recursion limit: the interpreter may fail to call the tracer
        from here on (an event lost without a word), so recording ends, explicitly."""
        self.truncate("recursion_limit", sys.getrecursionlimit(), kept, _RECURSION_DROPPED)

    def check_budget(self) -> None:
        """Steps mode: the counts, copied in by the backend, against max_steps."""
        if self.truncation is None and self.total > self.settings.max_steps:
            limit = self.settings.max_steps
            self.truncate("max_steps", limit, limit, "nothing: steps mode counts past the budget")

    def truncate(self, reason: TruncationReason, limit: int, kept: int, dropped: str) -> None:
        if self.truncation is not None:
            return
        self.recording = False
        stop = self.settings.on_budget == "stop" and reason in ("max_steps", "max_bytes")
        self.stop_pending = stop
        self.truncation = Truncation(kept, reason, limit, dropped, None, stop)

    def kept(self) -> int:
        """Steps recorded so far (counting mode records none: every counted step)."""
        return self.total

    def fail(self, exc: Exception) -> bool:
        """The recorder raised: end recording, saying why. True when the exception is the
        program's to see (its recursion limit or memory ran out inside the recorder)."""
        kept = self.kept()
        if isinstance(exc, RecursionError):
            limit = sys.getrecursionlimit()
            self.truncate("recursion_limit", limit, kept, _LIMIT_DROPPED.format("recursion limit"))
            return True
        if isinstance(exc, MemoryError):
            self.truncate("memory", 0, kept, _LIMIT_DROPPED.format("memory limit"))
            return True
        failure = f"every later step; the recorder failed ({type(exc).__name__}: {exc})"
        self.truncate("internal_error", 0, kept, failure)
        return False

    def finish(self) -> None:
        """Recording is over: record how many counted events the cut dropped."""
        t = self.truncation
        if t is not None and t.reason in ("max_steps", "max_bytes"):
            self.truncation = dataclasses.replace(t, dropped_steps=self.total - t.step)


class Collector(Counter):
    """Records every step with locals deltas (full mode): one method per event, which the
    backends call."""

    def __init__(self, settings: Settings, renderer: Renderer) -> None:
        super().__init__(settings)
        self.renderer = renderer
        self.differ = LocalsDiffer(renderer, settings.max_items)
        self.rows: list[Row] = []
        self.frames: list[FrameInfo] = []
        self.codes: list[types.CodeType] = []  # each frame's code, for counts by unit
        self.depth = 0
        self._bytes = 0
        self._max_rows = settings.max_steps
        self._live: dict[int, FrameState] = {}  # id(frame object) -> state, while it can run
        # Return values and exceptions keep their ids for one more step, so that
        # ``x = f()`` shows x with the id the return step gave the value.
        self._pending: list[Any] = []
        self._held: list[Any] = []
        self._lib: set[int] = set()  # id() of library frames called from user code, running
        # Statements and blocks past a cut: the rows stop, these counts go on (slow path).
        self.units: Units | None = None
        self._cut_row: Row | None = None  # the step a budget did not keep: counted on

    # -- events ---------------------------------------------------------------------------
    def kept(self) -> int:
        return len(self.rows)

    def enter(self, frame: types.FrameType, info: CodeInfo, fresh: bool) -> None:
        self.calls += 1
        depth = self.depth
        self.depth += 1
        if not self.recording:
            if self.units is not None:
                self.units.enter(frame, info.code, fresh)
            return
        st = None if fresh else self._live.get(id(frame))
        if st is None:
            old = self._live.pop(id(frame), None)  # a dead frame's address, reused
            if old is not None:
                self.differ.forget(old)
            st = self._new_frame(frame, info, False, depth)
        st.depth, st.raised = depth, False  # a resumed generator keeps its previous line
        changed, deleted = self._diff(st, frame, info)
        self._add(("call", st.fid, depth, frame.f_lineno, 0, changed, deleted, None, None))

    # Events of a frame that was already running when recording began are not recorded.
    def line(self, frame: types.FrameType, info: CodeInfo, line: int) -> None:
        st = self._live.get(id(frame))
        if st is None:
            if not self.recording:
                self.lines += 1
                if self.units is not None:
                    self.units.line(frame, line)
            return
        self.lines += 1
        hits = info.hits
        count = hits[line] = hits.get(line, 0) + 1
        prev, st.prev_line = st.prev_line, line
        arc = (prev, line) if prev and (prev, line) not in info.fallthrough else None
        # Only line prev ran since this frame's last step, and no Python frame started
        # (which would have been a call): what it can change is known from its bytecode.
        delta = None
        if st.calls == self.calls:
            effect = info.effects.get(prev)
            if effect is not None and not st.raised:
                delta = self.differ.confined(st, frame, effect)
            pure = prev in info.pure
        else:
            st.calls, pure = self.calls, False
        st.raised = False
        if delta is None:
            ns = frame.f_globals if info.module else frame.f_locals
            delta = self.differ.diff(st, ns, info.names, pure)
        changed, deleted = delta
        row = ("line", st.fid, st.depth, line, count, changed, deleted, None, arc)
        if changed is None and not self._held and len(self.rows) < self._max_rows:
            self.rows.append(row)  # the common step: nothing rendered, nothing to release
        else:
            self._add(row)

    def exception(self, frame: types.FrameType, info: CodeInfo, exc: BaseException) -> None:
        st = self._live.get(id(frame))
        if st is None:
            if not self.recording:
                self.exceptions += 1
                if self.units is not None:
                    self.units.exception(frame, exc)
            return
        self.exceptions += 1
        st.raised = True
        changed, deleted = self._diff(st, frame, info)
        value = self._transient_value(exc)
        self._add(("exception", st.fid, st.depth, frame.f_lineno, 0, changed, deleted, value, None))
        if isinstance(exc, RecursionError):
            self.at_recursion_limit(len(self.rows))
            self.release_all()

    def leave(self, frame: types.FrameType, info: CodeInfo, value: object, kind: int) -> None:
        """A frame returns (kind 0), yields (1) or unwinds (2)."""
        st = self._live.get(id(frame))
        if st is None:
            if not self.recording:
                self.returns += 1
                self.depth -= 1
                if self.units is not None:
                    self.units.leave(frame, kind)
            return
        self.returns += 1
        self.depth -= 1
        # Only the line of its last step ran since: what it can change is known.
        effect = (
            info.effects.get(st.prev_line) if st.calls == self.calls and not st.raised else None
        )
        changed, deleted = self._diff(st, frame, info, effect)
        v = None if kind == 2 else self._transient_value(value)
        self._add(("return", st.fid, st.depth, frame.f_lineno, 0, changed, deleted, v, None))
        if kind != 1 and self.recording:  # a cut at this step has let go of every frame
            self.differ.forget(self._live.pop(id(frame)))

    def lib_enter(self, frame: types.FrameType, info: CodeInfo) -> None:
        """A library frame called (or resumed) from user code: one call step."""
        self._lib.add(id(frame))
        self.calls += 1
        depth = self.depth
        self.depth += 1
        if not self.recording:
            return
        st = self._new_frame(frame, info, True, depth)
        self._add(("call", st.fid, depth, info.code.co_firstlineno, 0, None, None, None, None))

    def lib_leave(self, frame: types.FrameType, info: CodeInfo, value: object, kind: int) -> None:
        self._lib.discard(id(frame))
        self.returns += 1
        self.depth -= 1
        st = self._live.pop(id(frame), None)
        if st is None:
            return
        v = None if kind == 2 else self._transient_value(value)
        line = info.code.co_firstlineno
        self._add(("return", st.fid, st.depth, line, 0, None, None, v, None))

    @property
    def has_library_frames(self) -> bool:
        return bool(self._lib)

    def knows(self, frame: types.FrameType) -> bool:
        """Is ``frame`` a library frame entered from user code and still running?"""
        return id(frame) in self._lib

    def frame_raised(self, frame: types.FrameType) -> bool:
        """Was there an exception event in ``frame`` since its last line event?"""
        st = self._live.get(id(frame))
        return st is not None and st.raised

    def truncate(self, reason: TruncationReason, limit: int, kept: int, dropped: str) -> None:
        if self.truncation is None:
            self._follow_units()
        super().truncate(reason, limit, kept, dropped)

    def _follow_units(self) -> None:
        """The rows end: count statements and blocks of the rows, then go on from the
        frames still running. Without this the counts would be None (see ``Counts``)."""
        try:
            units = Units()
            cut = () if self._cut_row is None else (self._cut_row,)
            units.rows(itertools.chain(self.rows, cut), self.frames, self.codes)
            units.follow({key: st.fid for key, st in self._live.items() if not st.library})
        except Exception:  # out of memory, say: the counts are then unknown
            return
        self.units = units

    # -- internals ------------------------------------------------------------------------
    def _new_frame(
        self, frame: types.FrameType, info: CodeInfo, library: bool, depth: int
    ) -> FrameState:
        fid = len(self.frames)
        self.frames.append(info.frame)
        self.codes.append(info.code)
        st = self._live[id(frame)] = FrameState(fid, depth, library)
        return st

    def _diff(
        self, st: FrameState, frame: types.FrameType, info: CodeInfo, effect: Effect | None = None
    ) -> tuple[dict[str, Value] | None, tuple[str, ...] | None]:
        # (confined is called from here, not from leave: the recorder's stack depth per
        # event stays what it was, so a program at its recursion limit is cut as before)
        if effect is not None:
            delta = self.differ.confined(st, frame, effect)
            if delta is not None:
                return delta
        st.calls = self.calls
        ns = frame.f_globals if info.module else frame.f_locals
        return self.differ.diff(st, ns, info.names)

    def _add(self, row: Row) -> None:
        if self._held:
            for obj in self._held:
                self.renderer.release(obj)
            self._held.clear()
        if self._pending:
            self._held, self._pending = self._pending, self._held
        size = 0
        if row[5]:
            for v in row[5].values():
                size += len(v[0]) if v[0].isascii() else _size(v[0])
        if row[7] is not None:
            size += _size(row[7][0])
        if len(self.rows) >= self._max_rows:
            self._cut_row = row
            self.truncate("max_steps", self._max_rows, len(self.rows), _DROPPED)
        elif self._bytes + size > self.settings.max_bytes:
            self._cut_row = row
            self.truncate("max_bytes", self.settings.max_bytes, len(self.rows), _DROPPED)
        else:
            self._bytes += size
            self.rows.append(row)
            return
        self.release_all()

    def _transient_value(self, obj: object) -> Value:
        self._pending.append(obj)
        return self.renderer.value(obj)

    def release_all(self) -> None:
        """Recording is over: let go of every object (ids are no longer needed)."""
        for st in self._live.values():
            self.differ.forget(st)
        self._live.clear()
        for obj in (*self._held, *self._pending):
            self.renderer.release(obj)
        self._held.clear()
        self._pending.clear()


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
