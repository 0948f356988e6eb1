"""Counts by unit that static analysis gets from a full trace's line steps: statements (from
the AST) and basic blocks (from the control-flow graph). ``Counts`` says what they mean.

One pass over the rows when the trace is built; per code object, the tables are made once.
"""

from __future__ import annotations

import ast
import linecache
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from tracebox.trace.cfg import _BLOCKS, CFG, States, Walk, build_cfg
from tracebox.trace.model import FrameInfo, Row

__all__ = ["StatementTable", "Units", "count_units", "statement_tables"]

# (lo, hi): a step at the statement's first line coming from a line in lo..hi goes on
# within the statement rather than starting it again (0, -1: never).
Head = tuple[int, int]
StatementTable = Mapping[int, tuple[Head, ...]]
"""Line -> the statements of one scope that begin on it and count when a line step shows it."""

_LOOPS = (ast.For, ast.AsyncFor, ast.While)
# Compound statements whose body runs only if a condition holds: a body statement written on
# their header's line may not run, and line steps cannot tell.
_CONDITIONAL = (*_LOOPS, ast.If, ast.ExceptHandler, ast.match_case)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def statement_tables(source: str, filename: str) -> dict[tuple[str, int], StatementTable]:
    """Per scope of ``source``, keyed by the qualified name and first line of its code
    object (``("<module>", 1)``, ``("C.m", 11)``): line -> its counting statements."""
    try:
        tree = ast.parse(source, filename)
    except SyntaxError:
        return {}
    out: dict[tuple[str, int], StatementTable] = {}
    _scope(tree.body, ("<module>", 1), "", out)
    return out


def _scope(
    body: list[ast.stmt],
    key: tuple[str, int],
    prefix: str,
    out: dict[tuple[str, int], StatementTable],
) -> None:
    table: dict[int, list[Head]] = {}
    for node, skip in _walk(body, ()):
        if not skip:
            table.setdefault(_start(node), []).append(_goes_on(node))
        if isinstance(node, _SCOPES):
            qual = prefix + node.name
            inner = qual + (".<locals>." if not isinstance(node, ast.ClassDef) else ".")
            _scope(node.body, (qual, _start(node)), inner, out)
    out[key] = {line: tuple(heads) for line, heads in table.items()}


def _walk(
    body: Sequence[ast.AST], headers: tuple[tuple[int, bool], ...]
) -> Iterator[tuple[ast.stmt, bool]]:
    """The statements of one scope (not of nested functions and classes), each with whether
    a conditional header above it on the same line hides it. ``headers``: (line, is
    conditional) of the compound statements (and except/case clauses) above."""
    for node in body:
        if not isinstance(node, ast.stmt | ast.ExceptHandler | ast.match_case):
            continue
        line = _start(node)
        if isinstance(node, ast.stmt):
            yield node, any(cond and at == line for at, cond in headers)
        if isinstance(node, _SCOPES):
            continue
        inner = (*headers, (line, isinstance(node, _CONDITIONAL)))
        for field in ("body", "orelse", "handlers", "finalbody", "cases"):
            children = getattr(node, field, None)
            if children:
                # else/finally bodies hang under no header line of their own.
                yield from _walk(children, inner if field in ("body", "cases") else headers)


def _start(node: ast.AST) -> int:
    """First line: a decorated definition starts at its first decorator."""
    if isinstance(node, ast.match_case):
        return node.pattern.lineno
    decorators = getattr(node, "decorator_list", None)
    line: int = node.lineno  # type: ignore[attr-defined]
    return min([line, *(d.lineno for d in decorators)]) if decorators else line


def _goes_on(node: ast.stmt) -> Head:
    """Lines from which a step back to the statement's first line is not a new start: its
    own lines; for a loop only its header's, since coming back from the body is the next
    test (``P == first line`` is then a jump back within a one-line loop, a new test too)."""
    start = _start(node)
    if isinstance(node, _LOOPS):
        first_body = node.body[0].lineno
        return (start, first_body - 1) if first_body > start else (0, -1)
    return (start, node.end_lineno or start)


# -- counting -----------------------------------------------------------------------------
class Units:
    """Statements and blocks of a recording: from its rows (``rows``), then, when a budget
    ends the rows, on from the events of the frames still running (``follow`` and the
    event methods), so that the counts cover the whole run like the event counts.

    A frame's state (its code, previous line, ``Walk`` landings, pending exception) is
    interned as an int, and steps are memoized transitions between them: a loop's steps
    cost a dict lookup each. A frame is followed as ``[state, blocks]``.
    """

    def __init__(self, sources: Mapping[str, str] | None = None) -> None:
        self.statements = 0
        self._sources = sources  # None: linecache, where cells register their source
        self._tables: dict[str, dict[tuple[str, int], StatementTable]] = {}
        self._codes: dict[int, tuple[types.CodeType, int]] = {}  # id(code) -> its start
        self._facts: list[_Fact] = []  # state -> what it stands for
        self._ids: dict[tuple[int, int, States, str | None], int] = {}
        self._on_line: dict[tuple[int, int], tuple[int, int, int]] = {}  # -> (state, +blocks,
        self._on_raise: dict[tuple[int, str], int] = {}  #                     +statements)
        self._on_leave: dict[tuple[int, bool], tuple[int, int]] = {}
        self._rows: list[list[int] | None] = []  # by frame id
        self._live: dict[int, list[int]] = {}  # by id(frame), after ``follow``
        self._closed = 0  # blocks of frames no longer followed
        self._sourceless = False

    def totals(self) -> tuple[int | None, int]:
        """(statements, blocks); statements are unknown (None) when some user code has
        no source to parse (code compiled without registering it in ``linecache``)."""
        frames = (*(f for f in self._rows if f is not None), *self._live.values())
        statements = None if self._sourceless else self.statements
        return statements, self._closed + sum(f[1] & _BLOCKS for f in frames)

    def rows(
        self,
        rows: Iterable[Row],
        frames: Sequence[FrameInfo],
        codes: Sequence[types.CodeType | None],
    ) -> None:
        """Count the rows; ``codes``: each frame's code object."""
        known = [
            None if frame.library or code is None else code
            for frame, code in zip(frames, codes, strict=True)
        ]
        state: list[list[int] | None] = [None] * len(frames)
        self._rows = state
        on_line = self._on_line
        statements = 0
        for event, fid, _, line, _, _, _, value, _ in rows:
            code = known[fid]
            if code is None:
                continue
            st = state[fid]
            if event == "line":
                key = (st[0], line)  # type: ignore[index]
                hit = on_line.get(key) or self._line(key)
                st[0] = hit[0]  # type: ignore[index]
                st[1] += hit[1]  # type: ignore[index]
                statements += hit[2]
            elif event == "call":
                if st is None:  # a fresh frame; a resumed one goes on where it was
                    state[fid] = self._start(code)
            elif event == "exception":
                name = "BaseException" if value is None else value.type
                st[0] = self._raise(st[0], name)  # type: ignore[index]
            else:  # a return or yield; unwinding by an exception carries no value
                self._leave(st, value is None)  # type: ignore[arg-type]
        self.statements += statements

    def follow(self, live: Mapping[int, int]) -> None:
        """The rows end here: go on with the frames still running (``id(frame)`` -> frame
        id); the others are done."""
        running = set(live.values())
        for fid, st in enumerate(self._rows):
            if st is not None and fid not in running:
                self._closed += st[1] & _BLOCKS
        self._live = {key: st for key, fid in live.items() if (st := self._rows[fid])}
        self._rows = []

    # -- events of frames after the rows end ----------------------------------------------
    def enter(self, frame: types.FrameType, code: types.CodeType, fresh: bool) -> None:
        if fresh or id(frame) not in self._live:
            old = self._live.pop(id(frame), None)  # a dead frame's address, reused
            if old is not None:
                self._closed += old[1] & _BLOCKS
            if fresh:
                self._live[id(frame)] = self._start(code)

    def line(self, frame: types.FrameType, line: int) -> None:
        st = self._live.get(id(frame))
        if st is not None:
            hit = self._on_line.get((st[0], line)) or self._line((st[0], line))
            st[0] = hit[0]
            st[1] += hit[1]
            self.statements += hit[2]

    def exception(self, frame: types.FrameType, exc: BaseException) -> None:
        st = self._live.get(id(frame))
        if st is not None:
            st[0] = self._raise(st[0], type(exc).__name__)

    def leave(self, frame: types.FrameType, kind: int) -> None:
        """Kind 0: a return, 1: a yield, 2: unwinding."""
        st = self._live.get(id(frame))
        if st is None:
            return
        # settrace tells a generator's unwinding from a yield by exception events the
        # collector no longer tracks: an exception pending means unwinding.
        exc = self._facts[st[0]].exception
        if kind == 1 and exc is not None and exc not in ("StopIteration", "StopAsyncIteration"):
            kind = 2
        self._leave(st, kind == 2)
        if kind != 1:
            self._closed += self._live.pop(id(frame))[1] & _BLOCKS

    # -- transitions ----------------------------------------------------------------------
    def _state(self, fact: _Fact) -> int:
        key = (id(fact.cfg), fact.prev, fact.states, fact.exception)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self._facts)
            self._facts.append(fact)
        return found

    def _start(self, code: types.CodeType) -> list[int]:
        """A fresh frame: its state, and its entry block entered."""
        known = self._codes.get(id(code))
        if known is None:
            file = code.co_filename
            tables = self._tables.get(file)
            if tables is None:
                if self._sources is None:
                    source = "".join(linecache.getlines(file))
                else:
                    source = self._sources.get(file, "")
                self._sourceless |= not source
                tables = self._tables[file] = statement_tables(source, file)
            table = tables.get((code.co_qualname, code.co_firstlineno), {})
            cfg = build_cfg(code)
            start = self._state(_Fact(table, cfg, 0, Walk(cfg).states, None))
            known = self._codes[id(code)] = (code, start)  # holds the code: ids stay valid
        return [known[1], 1]

    def _line(self, key: tuple[int, int]) -> tuple[int, int, int]:
        fact, line = self._facts[key[0]], key[1]
        walk = Walk(fact.cfg)
        walk.states, walk.base, walk.exception = fact.states, 0, fact.exception
        walk.line(line)
        started = _started(fact.table, fact.prev, line)
        after = self._state(_Fact(fact.table, fact.cfg, line, walk.states, None))
        hit = self._on_line[key] = (after, walk.base, started)
        return hit

    def _raise(self, state: int, exception: str) -> int:
        found = self._on_raise.get((state, exception))
        if found is None:
            fact = self._facts[state]
            after = _Fact(fact.table, fact.cfg, fact.prev, fact.states, exception)
            found = self._on_raise[(state, exception)] = self._state(after)
        return found

    def _leave(self, st: list[int], unwinds: bool) -> None:
        hit = self._on_leave.get((st[0], unwinds))
        if hit is None:
            fact = self._facts[st[0]]
            walk = Walk(fact.cfg)
            walk.states, walk.base, walk.exception = fact.states, 0, fact.exception
            walk.leave(unwinds)
            after = _Fact(fact.table, fact.cfg, fact.prev, walk.states, fact.exception)
            hit = self._on_leave[(st[0], unwinds)] = (self._state(after), walk.base)
        st[0] = hit[0]
        st[1] += hit[1]


class _Fact(NamedTuple):
    """What a frame state stands for."""

    table: StatementTable
    cfg: CFG
    prev: int  # line of the frame's previous line step
    states: States  # the Walk's landings
    exception: str | None  # an exception event since the previous line step


def count_units(
    rows: Sequence[Row],
    frames: Sequence[FrameInfo],
    codes: Sequence[types.CodeType | None],
    sources: Mapping[str, str],
) -> tuple[int | None, int]:
    """(statements, blocks) of the recorded steps; ``codes``: each frame's code object."""
    units = Units(sources)
    units.rows(rows, frames, codes)
    return units.totals()


def _started(table: StatementTable, prev: int, line: int) -> int:
    """Statements a line step at ``line`` starts, coming from a line step at ``prev``."""
    return sum(1 for lo, hi in table.get(line, ()) if not lo <= prev <= hi)
