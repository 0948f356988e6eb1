"""A debugger-like cursor over a recorded trace: step into, over, out and back, run to a
line or a condition, read locals and the call stack at any step.

::

    cur = trace.cursor()                  # at step 0
    cur.step_over()                       # pdb's `next`; returns the new Step
    cur.value("total")                    # repr of a local of the current frame, e.g. "3"
    cur.run_to(line=12)                   # forward to the next line step at line 12
    cur.run_back_to(where=lambda v: v.locals.get("i") == "3")

An *activation* is one stay of a frame on the stack: from its ``call`` step to its
``return`` step. A generator's frame keeps its id across resumptions, but each resumption
is a new activation. Moves:

- ``step_into`` / ``step_back``: the next / previous step, whatever its frame.
- ``step_over``: the next step of this activation; from its ``return``, the caller's next
  step (callees are skipped, and so are siblings the caller calls in between, as in
  ``f(g(x))``). ``back_over`` mirrors it: the previous step of this activation; from its
  ``call``, the caller's step that made the call.
- ``step_out``: the first step after this activation returns; ``back_out`` mirrors it: the
  last step before it was called (or resumed).
- ``run_to`` / ``run_back_to``: the nearest later / earlier step matching a ``Breakpoint``
  (``line=``, ``file=``, ``where=``); ``continue_`` / ``continue_back`` do the same for
  any of ``cur.breakpoints``. ``goto(k)`` jumps (negative ``k`` counts from the end).

Every move returns the Step it lands on. A move that finds no step raises ``EndOfTrace``
(an ``IndexError``) and leaves the cursor where it was; the message says whether the
program ended there or the recording was cut, and why (``Trace.truncation``). A cursor over
a trace without steps (an empty recording, or ``steps``/``coverage`` mode) raises it for
every read and move (its ``index`` stays 0).

Reads: ``cur.locals`` maps each local of the current frame to its repr (``cur.values``: to
its ``Value``) as that step sees it, deltas replayed; ``cur.value(name)`` raises
``LocalNotBound`` (a ``KeyError``) for a name not bound there. ``cur.stack`` lists the
frames, outermost first, each a ``StepView`` of its latest step; a ``where=`` condition
receives a ``StepView`` too. Both are fixed to their step, so keeping one is safe.

Library frames (``FrameInfo.library``) have only a call and a return step; user code they
call back (``heapq.nlargest(xs, key=f)``) runs as their callees. A function called back by
a builtin (``sorted(xs, key=f)``) is a callee of the user frame. When the outermost frames
have no recorded caller (several ``exec`` in one recording), ``step_over`` from a
top-level return goes to the next top-level step.

Cost: the structure index (per step: its activation, the activation's next and previous
steps; per activation: its return and the caller's step) is built on first use in one
O(n) pass, and makes every step move O(1). The locals index (per frame and name: the
steps that bind or unbind it) is built on the first read of a local, also in O(n); a local
then reads in O(log n) at any step, forward or backward, so a scan with a condition over
locals costs O(log n) per step it passes, never a replay from the start.
"""

from __future__ import annotations

import dataclasses
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

from tracebox.errors import TraceboxError
from tracebox.trace.model import Row, Step, Trace, Truncation, Value

__all__ = ["Breakpoint", "Cursor", "EndOfTrace", "LocalNotBound", "StepView"]

_T = TypeVar("_T")


class EndOfTrace(TraceboxError, IndexError):
    """A move found no step: the start or end of the trace (or of a frame's recorded part)."""

    def __init__(
        self, message: str, *, forward: bool, truncation: Truncation | None = None
    ) -> None:
        super().__init__(message)
        self.forward = forward
        """Whether the move went forward (it hit the end) or backward (the start)."""
        self.truncation = truncation
        """Where and why recording stopped, when the end met is a cut."""


class LocalNotBound(TraceboxError, KeyError):
    """The frame has no such local at this step (not bound yet, deleted, or never)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class _Structure:
    """Call/return matching and per-activation links, one pass over the rows.

    Arrays of machine ints, -1 for none: a million-step trace costs 40 MB here, not 200.
    ``act[k]`` is the first step of k's activation (its call, or the first recorded step
    of a frame whose call was not recorded); ``nxt``/``prv`` link an activation's steps;
    ``ret[a]`` and ``site[a]`` (the caller's latest step before the call) are kept at ``a``.
    """

    __slots__ = ("act", "nxt", "prv", "ret", "site")

    def __init__(self, rows: Sequence[Row]) -> None:
        n = len(rows)
        act, nxt, prv, ret, site = (array("q", [-1]) * n for _ in range(5))
        first: list[int] = []  # per depth: first step of the open activation, -1 if none
        tail: list[int] = []  # per depth: latest step of the open activation
        for k, row in enumerate(rows):
            event, depth = row[0], row[2]
            if len(first) > depth + 1:  # deeper frames ended without a recorded return
                del first[depth + 1 :], tail[depth + 1 :]
            while len(first) <= depth:
                first.append(-1)
                tail.append(-1)
            a = first[depth]
            if event == "call" or a < 0:
                a = first[depth] = k
                site[k] = tail[depth - 1] if depth else -1
            else:
                prv[k] = tail[depth]
                nxt[tail[depth]] = k
            act[k] = a
            tail[depth] = k
            if event == "return":
                ret[a] = k
                first[depth] = tail[depth] = -1
        self.act, self.nxt, self.prv, self.ret, self.site = act, nxt, prv, ret, site


class _LocalsIndex:
    """Per frame id, per name: the steps that bind, rebind or unbind it, ascending.

    A local at step k is then found by bisection, forward and backward alike; replaying
    deltas (``Trace.locals_at``) would cost O(k) per read and make scans quadratic.
    """

    __slots__ = ("frames",)

    def __init__(self, rows: Sequence[Row]) -> None:
        frames: dict[int, dict[str, list[int]]] = {}
        for k, row in enumerate(rows):
            changed, deleted = row[5], row[6]
            if not changed and not deleted:
                continue
            names = frames.setdefault(row[1], {})
            for name in (*(deleted or ()), *(changed or ())):
                steps = names.setdefault(name, [])
                if not steps or steps[-1] != k:
                    steps.append(k)
        self.frames = frames


class _Core:
    """What a cursor and its views share: the trace and the lazily built indexes."""

    __slots__ = ("_locals", "_structure", "frames", "rows", "steps", "trace")

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.rows = trace.rows
        self.frames = trace.frames
        self.steps = trace.steps
        self._structure: _Structure | None = None
        self._locals: _LocalsIndex | None = None

    @property
    def structure(self) -> _Structure:
        if self._structure is None:
            self._structure = _Structure(self.rows)
        return self._structure

    def names(self, fid: int) -> dict[str, list[int]]:
        if self._locals is None:
            self._locals = _LocalsIndex(self.rows)
        return self._locals.frames.get(fid, {})

    def local(self, fid: int, k: int, name: str) -> Value | None:
        """Local ``name`` of frame ``fid`` as step ``k`` sees it; None if unbound."""
        steps = self.names(fid).get(name)
        if not steps:
            return None
        i = bisect_right(steps, k)
        if i == 0:
            return None
        changed = self.rows[steps[i - 1]][5]  # deletes apply before changes, as in locals_at
        return changed.get(name) if changed else None

    def end(self, what: str) -> EndOfTrace:
        """A forward ``EndOfTrace`` that says why the trace ends where it does."""
        t = self.trace
        cut = t.truncation
        if cut is not None:
            limit = f", limit {cut.limit}" if cut.limit else ""
            why = f"the recording was cut at step {cut.step} ({cut.reason}{limit}): {cut.dropped}"
        elif not self.rows:
            why = "the trace has no steps" + (
                f" ({t.mode} mode records none; record with mode='full')"
                if t.mode != "full"
                else ""
            )
        elif t.error is not None:
            why = f"the program ended at step {len(self.rows) - 1} with {t.error.repr}"
        else:
            why = f"the program ended at step {len(self.rows) - 1}"
        return EndOfTrace(f"end of trace: {what}; {why}", forward=True, truncation=cut)


class _Locals(Mapping[str, _T]):
    """The locals of one frame at one step, read from the index on access (``Mapping``
    equality, so ``cur.locals == {"x": "1"}`` works)."""

    __slots__ = ("_core", "_fid", "_k", "_out")

    def __init__(self, core: _Core, fid: int, k: int, out: Callable[[Value], _T]) -> None:
        self._core, self._fid, self._k, self._out = core, fid, k, out

    def __getitem__(self, name: str) -> _T:
        v = self._core.local(self._fid, self._k, name)
        if v is None:
            raise KeyError(name)
        return self._out(v)

    def __iter__(self) -> Iterator[str]:
        core, fid, k = self._core, self._fid, self._k
        return (name for name in core.names(fid) if core.local(fid, k, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(dict(self))


def _text(v: Value) -> str:
    return v.repr


def _whole(v: Value) -> Value:
    return v


class StepView:
    """One step together with its frame's locals and the call stack: what a ``where=``
    condition receives, and what ``Cursor.stack`` lists (each frame at its latest step).

    Cheap to make; locals are read on access. A caller's locals are as of its latest step
    (the one that made the call): a trace samples a frame only at its own steps.
    """

    __slots__ = ("_core", "index")

    def __init__(self, core: _Core, index: int) -> None:
        self._core = core
        self.index = index
        """The step's index in the trace."""

    @property
    def step(self) -> Step:
        return self._core.steps[self.index]

    @property
    def event(self) -> str:
        return self._core.rows[self.index][0]

    @property
    def line(self) -> int:
        return self._core.rows[self.index][3]

    @property
    def frame(self) -> int:
        """Frame id (a generator keeps its id across resumptions)."""
        return self._core.rows[self.index][1]

    @property
    def depth(self) -> int:
        return self._core.rows[self.index][2]

    @property
    def function(self) -> str:
        return self._core.frames[self.frame].function

    @property
    def file(self) -> str:
        return self._core.frames[self.frame].file

    @property
    def library(self) -> bool:
        """A collapsed library frame: only its call and return are recorded."""
        return self._core.frames[self.frame].library

    @property
    def source(self) -> str:
        """The text of the step's line, "" when unknown (library files, line 0)."""
        return self._core.trace.source_line(self.file, self.line)

    @property
    def locals(self) -> Mapping[str, str]:
        """Locals of the frame as this step sees them: name -> repr."""
        return _Locals(self._core, self.frame, self.index, _text)

    @property
    def values(self) -> Mapping[str, Value]:
        """Locals of the frame as this step sees them: name -> ``Value``."""
        return _Locals(self._core, self.frame, self.index, _whole)

    def value(self, name: str) -> str:
        """The repr of local ``name``; ``LocalNotBound`` (a KeyError) if it is unbound."""
        v = self._core.local(self.frame, self.index, name)
        if v is None:
            bound = ", ".join(self.locals) or "none"
            raise LocalNotBound(
                f"local {name!r} is not bound in {self.function} (frame {self.frame}) "
                f"at step {self.index}; bound: {bound}"
            )
        return v.repr

    @property
    def stack(self) -> tuple[StepView, ...]:
        """The call stack at this step, outermost first, this step last; each caller is
        shown at its latest step, the one that made the call."""
        s = self._core.structure
        out = [self]
        k = s.site[s.act[self.index]]
        while k >= 0:
            out.append(StepView(self._core, k))
            k = s.site[s.act[k]]
        out.reverse()
        return tuple(out)

    def __repr__(self) -> str:
        return f"<StepView {self.index}: {self.event} {self.function} {self.file}:{self.line}>"


@dataclasses.dataclass(frozen=True)
class Breakpoint:
    """A condition on steps; a step matches when every given part holds."""

    line: int | None = None
    """Only ``line`` steps at this line."""
    file: str | None = None
    """Only steps in this file (with ``line``: that line of this file; default any file)."""
    where: Callable[[StepView], bool] | None = None
    """A condition on the step's view (``.locals``, ``.stack``, ``.event`` ...). One that
    raises ``LocalNotBound`` (``v.value("i") == "3"`` where ``i`` is unbound) is false."""

    def __post_init__(self) -> None:
        if self.line is None and self.file is None and self.where is None:
            raise ValueError("a breakpoint needs line=, file= or where=")

    def matches(self, view: StepView) -> bool:
        row = view._core.rows[view.index]
        if self.line is not None and (row[0] != "line" or row[3] != self.line):
            return False
        if self.file is not None and view._core.frames[row[1]].file != self.file:
            return False
        if self.where is None:
            return True
        try:
            return bool(self.where(view))
        except LocalNotBound:  # most steps lack the name a condition asks about
            return False

    def __str__(self) -> str:
        parts = [f"line {self.line}" if self.line is not None else "a step"]
        if self.file is not None:
            parts.append(f"in {self.file}")
        if self.where is not None:
            parts.append("matching where=")
        return " ".join(parts)


class Cursor:
    """A position in a trace that moves like a debugger; see the module docstring."""

    def __init__(self, trace: Trace, index: int = 0) -> None:
        self.trace = trace
        self._core = _Core(trace)
        self._k = 0
        self.breakpoints: list[Breakpoint] = []
        """Used by ``continue_`` and ``continue_back``; ``break_at`` appends."""
        if index:
            self.goto(index)

    # -- where the cursor is ---------------------------------------------------------------

    @property
    def index(self) -> int:
        return self._k

    @property
    def view(self) -> StepView:
        """The current step with its frame's locals and stack."""
        if not self._core.rows:
            raise self._core.end("no current step")
        return StepView(self._core, self._k)

    @property
    def step(self) -> Step:
        return self.view.step

    @property
    def locals(self) -> Mapping[str, str]:
        """Locals of the current frame at this step: name -> repr."""
        return self.view.locals

    @property
    def values(self) -> Mapping[str, Value]:
        return self.view.values

    def value(self, name: str) -> str:
        """The repr of local ``name`` of the current frame; ``LocalNotBound`` if unbound."""
        return self.view.value(name)

    @property
    def stack(self) -> tuple[StepView, ...]:
        """The call stack at this step, outermost first (see ``StepView.stack``)."""
        return self.view.stack

    def __repr__(self) -> str:
        if not self._core.rows:
            return "<Cursor over an empty trace>"
        v = self.view
        return f"<Cursor at {v.index}/{len(self._core.rows)}: {v.event} {v.function} line {v.line}>"

    # -- moves -----------------------------------------------------------------------------

    def goto(self, k: int) -> Step:
        """Jump to step ``k`` (negative counts from the end)."""
        n = len(self._core.rows)
        j = k + n if k < 0 else k
        if not 0 <= j < n:
            raise self._core.end(f"no step {k} in a trace of {n} steps")
        return self._land(j)

    def step_into(self) -> Step:
        """The next step, whatever its frame (pdb ``step``)."""
        return self._forward(self._at() + 1, "no step after this one")

    def step_back(self) -> Step:
        """The previous step, whatever its frame."""
        return self._backward(self._at() - 1, "no step before this one")

    def step_over(self) -> Step:
        """The next step of this activation; from its return, the caller's next step."""
        k = self._at()
        s = self._core.structure
        if self._core.rows[k][0] != "return":
            return self._forward(s.nxt[k], "this frame has no later step")
        caller = s.site[s.act[k]]
        if caller < 0:  # no recorded caller: the next top-level step, if any
            return self._forward(k + 1, "no step after this one")
        return self._forward(s.nxt[caller], "the caller has no later step")

    def back_over(self) -> Step:
        """The previous step of this activation; from its call, the caller's step that made
        the call."""
        k = self._at()
        s = self._core.structure
        if s.act[k] != k:
            return self._backward(s.prv[k], "no earlier step")
        caller = s.site[k]
        return self._backward(caller if caller >= 0 else k - 1, "no step before this one")

    def step_out(self) -> Step:
        """The first step after this activation returns (pdb ``return``, then ``step``)."""
        k = self._at()
        s = self._core.structure
        ret = s.ret[s.act[k]]
        if ret < 0:
            raise self._core.end(f"{self.view.function} does not return within the trace")
        return self._forward(ret + 1, f"no step after {self.view.function} returns")

    def back_out(self) -> Step:
        """The last step before this activation was called (or resumed)."""
        k = self._at()
        return self._backward(self._core.structure.act[k] - 1, "no step before this call")

    def run_to(
        self,
        line: int | None = None,
        *,
        file: str | None = None,
        where: Callable[[StepView], bool] | None = None,
    ) -> Step:
        """Forward to the next step matching ``Breakpoint(line, file, where)``."""
        bp = Breakpoint(line, file, where)
        return self._scan([bp], forward=True, what=f"no later step at {bp}")

    def run_back_to(
        self,
        line: int | None = None,
        *,
        file: str | None = None,
        where: Callable[[StepView], bool] | None = None,
    ) -> Step:
        """Backward to the nearest earlier step matching ``Breakpoint(line, file, where)``."""
        bp = Breakpoint(line, file, where)
        return self._scan([bp], forward=False, what=f"no earlier step at {bp}")

    def break_at(
        self,
        line: int | None = None,
        *,
        file: str | None = None,
        where: Callable[[StepView], bool] | None = None,
    ) -> Breakpoint:
        """Add a breakpoint for ``continue_`` and ``continue_back``; returns it (remove it
        from ``breakpoints`` to clear it)."""
        bp = Breakpoint(line, file, where)
        self.breakpoints.append(bp)
        return bp

    def continue_(self) -> Step:
        """Forward to the next step matching any of ``breakpoints``."""
        return self._scan(self.breakpoints, forward=True, what="no later step at a breakpoint")

    def continue_back(self) -> Step:
        """Backward to the nearest earlier step matching any of ``breakpoints``."""
        return self._scan(self.breakpoints, forward=False, what="no earlier step at a breakpoint")

    # -- helpers ---------------------------------------------------------------------------

    def _at(self) -> int:
        if not self._core.rows:
            raise self._core.end("no current step")
        return self._k

    def _land(self, k: int) -> Step:
        self._k = k
        return self._core.steps[k]

    def _forward(self, k: int, what: str) -> Step:
        if not 0 <= k < len(self._core.rows):
            raise self._core.end(what)
        return self._land(k)

    def _backward(self, k: int, what: str) -> Step:
        if k < 0:
            raise EndOfTrace(f"start of trace: {what} (at step {self._k})", forward=False)
        return self._land(k)

    def _scan(self, bps: Sequence[Breakpoint], *, forward: bool, what: str) -> Step:
        core, k = self._core, self._at()
        if not bps:
            ks = range(0)
        elif forward:
            ks = range(k + 1, len(core.rows))
        else:
            ks = range(k - 1, -1, -1)
        for j in ks:
            view = StepView(core, j)
            if any(bp.matches(view) for bp in bps):
                return self._land(j)
        if forward:
            raise core.end(what)
        raise EndOfTrace(f"start of trace: {what} (from step {k})", forward=False)
