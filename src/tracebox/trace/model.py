"""The trace data model: compact rows inside, ``Step`` views outside, JSON on the wire.

The recorder appends one tuple per step (cheap); ``Trace.steps`` builds ``Step`` objects on
access. Locals are delta-encoded per frame: a step stores only the locals that changed since
the previous step of the same frame, and ``Trace.locals_at(k)`` replays them. This module
runs in the worker, so it does not import pydantic; ``Trace.from_wire`` validates untrusted
input with the schema in ``tracebox.trace.wire`` (host side).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

if TYPE_CHECKING:
    from tracebox.trace.cursor import Cursor

__all__ = [
    "Counts",
    "Coverage",
    "Event",
    "FrameInfo",
    "Row",
    "Step",
    "Trace",
    "Truncation",
    "TruncationReason",
    "Value",
]

Event = Literal["call", "line", "return", "exception"]
TruncationReason = Literal["max_steps", "max_bytes", "recursion_limit", "memory", "internal_error"]
WIRE_FORMAT = "tracebox.trace/1"


class Value(NamedTuple):
    """One rendered value: bounded ``repr``, type name, and object identity.

    A named tuple: the recorder makes one per changed local, so it must be cheap.
    """

    repr: str
    """Bounded, address-free ``repr``; anything cut is marked inside it with ``<cut: ...>``."""
    type: str
    """Type name (``int``, ``Node``, ``collections.deque``)."""
    id: int | None = None
    """Normalised object id (1, 2, ... in order of first sight) for objects other than
    immutable scalars: two names with the same id are bound to the same object."""
    cut: bool = False
    """Whether the repr was cut (by size, depth or item count) or could not be made."""


class FrameInfo(NamedTuple):
    """A frame (one activation of a function, module, class body or generator)."""

    function: str
    """Qualified name of the code (``f``, ``Node.__init__``, ``<module>``)."""
    file: str
    library: bool = False
    """A library frame called from user code: only its call and return are recorded."""


# event, frame, depth, line, hits, changed, deleted, value, arc
Row = tuple[
    str,
    int,
    int,
    int,
    int,
    dict[str, Value] | None,
    tuple[str, ...] | None,
    Value | None,
    tuple[int, int] | None,
]


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One step of a full trace."""

    index: int
    event: Event
    depth: int
    """Recorded frames below this one (the outermost recorded frame is at depth 0)."""
    frame: int
    """Frame id: 0, 1, ... in order of first appearance; a resumed generator keeps its id."""
    function: str
    file: str
    line: int
    """Line about to run (``line``), where the frame is (``call``, ``return``, ``exception``;
    0 for a module's ``call``, as settrace says); a library frame's steps carry the line of
    its ``def``."""
    hits: int
    """For ``line`` steps: times this line of this file has been reached, this one included.
    0 for other events."""
    changed: Mapping[str, Value]
    """Locals bound or changed since the previous step of this frame."""
    deleted: tuple[str, ...]
    """Locals unbound since the previous step of this frame."""
    value: Value | None
    """``return``: the returned (or yielded) value, None when the frame unwinds by an
    exception; ``exception``: the exception; otherwise None."""
    arc: tuple[int, int] | None
    """For ``line`` steps that did not fall through from the previous line of the frame
    (a taken branch, a loop back-edge, an exception handler): ``(from_line, to_line)``."""


@dataclasses.dataclass(frozen=True, slots=True)
class Counts:
    """Events counted, by unit. None: the unit is not measured in this mode (see ``Trace``).

    Every count covers the whole run, also past a truncation: ``statements`` and ``blocks``
    of a full trace are derived from its steps, and past the cut from the events that go
    on being counted (None if the recorder could not go on: it ran out of memory). Only
    user code is counted (library calls are events, not statements or blocks).
    """

    line_events: int | None = None
    calls: int | None = None
    """Frames entered: calls, generator and coroutine resumptions, collapsed library calls."""
    returns: int | None = None
    """Frames left: returns, yields, and unwinding by an exception."""
    exceptions: int | None = None
    """Exception events: one per frame an exception is raised in or passes through."""
    statements: int | None = None
    """Statements started (full mode). A line step of a function, class or module body
    starts the AST statements that begin on its line (two for ``a = 1; b = 2``), unless it
    goes on inside one of them: back at the first line of a statement from its own lines
    (a call written over several lines, a ``with`` closing) is not a new start, while a
    loop header starts again at each test (every iteration, and the test that ends the
    loop). Not counted: a statement on the same line as a condition above it (``if x: y =
    1``, ``for ...: body``, ``except E: h()``, ``case p: ...``), since line steps cannot
    tell whether it ran (a ``try:`` or ``with`` body on its header's line is counted);
    statements without bytecode of their own, which no line step shows (``global``, a
    function's docstring, a bare annotation in a function). A line whose first statement
    raises still counts the others. Lambdas and comprehensions hold no statements. None
    also when some user code has no source to parse: code compiled without putting its
    source in ``linecache`` (``record(source)`` and cells put it there)."""
    blocks: int | None = None
    """Basic blocks entered (``tracebox.trace.cfg``): a block is entered when its first
    instruction runs, and a frame's entry block when the frame starts (a resumed generator
    goes on in its block). With ``count_instructions`` (steps and full modes) the count is
    exact. Otherwise, in full mode, it is derived from the steps: each frame follows the
    cheapest instruction path that agrees with its line, exception and return steps
    (``cfg.Walk``). That is exact except where a line branches within itself without a
    line step to tell which way it went (``x and y``, a comprehension's ``if``, two loops
    on one line): then the path entering the fewest blocks is taken, so the count is low."""
    bytecodes: int | None = None
    """Bytecode instructions run in user code, with ``count_instructions``: what the
    interpreter reports to tracers (``sys.monitoring`` INSTRUCTION events on 3.12+, settrace
    opcode events on 3.11). A frame's prologue and ``RESUME`` are not reported; 3.11
    reports an ``EXTENDED_ARG`` and its instruction as one. Compare counts made by the same
    Python ``major.minor``."""

    @property
    def steps(self) -> int | None:
        """Events of all four kinds: the length a complete full trace has."""
        parts = (self.line_events, self.calls, self.returns, self.exceptions)
        return None if None in parts else sum(p for p in parts if p is not None)


@dataclasses.dataclass(frozen=True, slots=True)
class Truncation:
    """Where and why recording stopped before the program did."""

    step: int
    """Steps kept: the first step not recorded has this index."""
    reason: TruncationReason
    """The budget that ran out (``max_steps``, ``max_bytes``), or why recording could not go
    on: the program reached the recursion limit or ran out of memory inside the recorder
    (its exception then reaches the program, a few frames earlier than untraced), or the
    recorder failed (``internal_error``; the program runs on untraced)."""
    limit: int
    """The budget's value (the recursion limit; 0 otherwise)."""
    dropped: str
    """What is missing from the trace, in words."""
    dropped_steps: int | None = None
    """Events counted after the cut (known when counting went on: ``on_budget="continue"``)."""
    stopped: bool = False
    """The program was stopped by ``TraceBudgetExceeded`` (``on_budget="stop"``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Coverage:
    """Lines run and branch arcs taken, per file of user code, each sorted."""

    lines: Mapping[str, tuple[int, ...]]
    arcs: Mapping[str, tuple[tuple[int, int], ...]]


class _Steps(Sequence[Step]):
    """``Step`` views over the rows, made on access."""

    __slots__ = ("_frames", "_rows")

    def __init__(self, rows: Sequence[Row], frames: Sequence[FrameInfo]) -> None:
        self._rows = rows
        self._frames = frames

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, k: int) -> Step: ...
    @overload
    def __getitem__(self, k: slice) -> list[Step]: ...
    def __getitem__(self, k: int | slice) -> Step | list[Step]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self._rows)))]
        if k < 0:
            k += len(self._rows)
        if not 0 <= k < len(self._rows):
            raise IndexError(k)
        ev, fid, depth, line, hits, changed, deleted, value, arc = self._rows[k]
        frame = self._frames[fid]
        return Step(
            k, ev, depth, fid, frame.function, frame.file, line, hits,  # type: ignore[arg-type]
            MappingProxyType(changed or {}), deleted or (), value, arc,
        )  # fmt: skip

    def __iter__(self) -> Iterator[Step]:
        return (self[k] for k in range(len(self._rows)))


@dataclasses.dataclass(frozen=True)
class Trace:
    """A recording. What each mode fills:

    - ``steps``: ``counts`` (line_events, calls, returns, exceptions): exactly the events a
      full trace of the same run holds, so ``counts.steps == len(full_trace)``. No steps.
    - ``coverage``: ``coverage`` only. On 3.12+ arcs come from branch and jump events, so
      they miss exception edges and the few jumps CPython does not instrument (leaving an
      ``except`` block); a full trace's coverage has them.
    - ``full``: ``steps``, ``counts`` as in steps mode plus statements and blocks derived
      from the steps, and ``coverage`` from the steps.

    ``count_instructions=True`` adds exact ``counts.bytecodes`` and ``counts.blocks`` in
    steps and full modes. ``Counts`` defines each unit.

    Steps are what ``sys.settrace`` reports for user code, on either backend. They differ
    across Python versions: up to 3.11 a list, set or dict comprehension runs in its own
    frame (``f.<locals>.<listcomp>``: call, lines, return); from 3.12 it is inlined (PEP
    709), its iterations are line steps of the enclosing frame and its variable a local of
    that frame while it runs. Line tables differ a little too. Compare traces made by the
    same Python ``major.minor`` (``python``).
    """

    mode: Literal["steps", "coverage", "full"]
    backend: Literal["monitoring", "settrace"]
    python: str
    """``major.minor`` of the recording interpreter: traces differ across versions
    (comprehensions are inlined from 3.12 on, line tables change)."""
    frames: tuple[FrameInfo, ...] = ()
    rows: tuple[Row, ...] = ()
    counts: Counts = Counts()
    truncation: Truncation | None = None
    coverage: Coverage | None = None
    error: Value | None = None
    """The exception that ended the recorded code, when ``record`` caught one."""
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Source text of each user file with recorded steps (full mode), for exporters that
    show the line being run (CWM, Python Tutor, LDB blocks)."""

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def steps(self) -> Sequence[Step]:
        return _Steps(self.rows, self.frames)

    def step_counts(self) -> dict[str, int | None]:
        """Counts by unit (None: not measured), plus ``steps``, the sum of the four events."""
        out: dict[str, int | None] = dataclasses.asdict(self.counts)
        out["steps"] = self.counts.steps
        return out

    def locals_at(self, k: int) -> dict[str, Value]:
        """All locals of step ``k``'s frame as that step sees them (deltas replayed)."""
        if not 0 <= k < len(self.rows):
            raise IndexError(k)
        fid = self.rows[k][1]
        view: dict[str, Value] = {}
        for row in self.rows[: k + 1]:
            if row[1] != fid:
                continue
            if row[6]:
                for name in row[6]:
                    view.pop(name, None)
            if row[5]:
                view.update(row[5])
        return view

    def source_line(self, file: str, line: int) -> str:
        """The text of ``line`` of ``file`` (without its newline), or "" when unknown."""
        lines = _source_lines(self.sources.get(file, ""))
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def cursor(self) -> Cursor:
        """A debugger-like position over the steps (step in/over/out/back, run to)."""
        from tracebox.trace.cursor import Cursor

        return Cursor(self)

    def to_cwm(self) -> list[dict[str, Any]]:
        """Meta CWM trace frames; see ``tracebox.trace.export.cwm`` for the format."""
        from tracebox.trace.export.cwm import to_cwm

        return to_cwm(self)

    def to_tutor(self) -> dict[str, Any]:
        """Python Tutor's trace JSON (``{"code": ..., "trace": [...]}``)."""
        from tracebox.trace.export.tutor import to_tutor

        return to_tutor(self)

    def to_ldb_blocks(self, *, max_blocks: int = 10) -> list[dict[str, Any]]:
        """LDB's view: variable state at the end of each executed basic block."""
        from tracebox.trace.export.blocks import to_ldb_blocks

        return to_ldb_blocks(self, max_blocks=max_blocks)

    def to_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write one JSON object per step; returns the number of lines written."""
        from tracebox.trace.export.tables import to_jsonl

        return to_jsonl(self, path)

    def to_parquet(self, path: str | os.PathLike[str]) -> int:
        """Write one row per step (needs pyarrow); returns the number of rows written."""
        from tracebox.trace.export.tables import to_parquet

        return to_parquet(self, path)

    def to_wire(self) -> dict[str, Any]:
        """A JSON-able dict (tuples stand for JSON arrays); ``tracebox.trace.wire`` has the
        schema. ``to_json()`` gives its canonical bytes."""
        return {
            "format": WIRE_FORMAT,
            "mode": self.mode,
            "backend": self.backend,
            "python": self.python,
            "frames": [[f.function, f.file, f.library] for f in self.frames],
            # Rows as they are: tuples (Value included) are JSON arrays already.
            "steps": list(self.rows),
            "counts": dataclasses.asdict(self.counts),
            "truncation": None if self.truncation is None else dataclasses.asdict(self.truncation),
            "coverage": None if self.coverage is None else _coverage_to_wire(self.coverage),
            "error": None if self.error is None else _value_to_wire(self.error),
            "sources": dict(self.sources),
        }

    def to_json(self) -> bytes:
        """Canonical JSON bytes: the same trace always gives the same bytes."""
        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=True).encode()

    @classmethod
    def from_wire(cls, data: Any) -> Trace:
        """Validate untrusted ``to_wire()`` output; malformed input raises ``ProtocolError``."""
        from tracebox.trace.wire import load

        return load(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Trace:
        """Parse and validate untrusted ``to_json()`` output (``ProtocolError`` if malformed)."""
        from tracebox.trace.wire import load_json

        return load_json(raw)


@functools.lru_cache(maxsize=16)
def _source_lines(text: str) -> tuple[str, ...]:
    """Lines as the compiler numbers them: only \\n, \\r\\n and \\r end one (not form
    feeds, as ``str.splitlines`` would have it). Cached: exporters ask line by line."""
    return tuple(re.split(r"\r\n|\r|\n", text))


def _value_to_wire(v: Value) -> list[Any]:
    return [v.repr, v.type, v.id, v.cut]


def _coverage_to_wire(c: Coverage) -> dict[str, Any]:
    return {
        "lines": {f: list(lines) for f, lines in c.lines.items()},
        "arcs": {f: [list(a) for a in arcs] for f, arcs in c.arcs.items()},
    }
