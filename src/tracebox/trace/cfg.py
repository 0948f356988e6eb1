"""Control-flow graphs of code objects: basic blocks of bytecode, and where line steps enter them.

``build_cfg(code)`` splits a code object's instructions (``dis``, caches left out) into basic
blocks. A leader (first instruction of a block) is:

- the first instruction;
- the target of a jump (``FOR_ITER`` and ``SEND`` included);
- the instruction after a jump, a return or a raise (``RAISE_VARARGS``, ``RERAISE``);
- the start of an exception handler (the 3.11+ exception table).

An ``EXTENDED_ARG`` stays in the block of the instruction it prefixes (jumps target the
prefix). Edges: the next block when control can fall through, the jump target, and, as
exception edges, the handler of every instruction covered by an exception-table entry.
Where an exhausted ``for`` loop really goes is version-specific: ``dis`` says the
``END_FOR`` after the loop, but 3.12 skips that instruction and 3.13 skips ``END_FOR`` and
the ``POP_TOP`` after it; the graph follows the interpreter, so those instructions form
blocks of their own that are never entered.

Line steps and blocks. A trace has line steps, not instructions. From the instruction where
a frame's previous line step landed, ``CFG.goals`` finds where the next line event can
fire (the *landings*): a line event fires where the line changes, after an instruction
without a line, and on a jump back within one line (not the one closing a ``yield from``
or ``await`` loop); the cost of a path is the blocks it enters. ``Walk`` follows a frame
through all its steps (line, exception, return and yield) and keeps, per possible landing,
the cheapest path that agrees with them, so later steps settle what one step leaves open;
``CFG.advance`` weighs one step alone. The path is the real one unless a line branches
within itself without a line event to tell which way (``x and y``, a comprehension's
``if``, two loops on one line): then it is the one entering the fewest blocks. A line that
spans several blocks (``a if c else b``, a ``for`` header with its ``FOR_ITER`` block)
shows once, as the step that lands on it.

Checked against the interpreter (tests/unit/trace/test_cfg.py): every executed
instruction follows an edge, and every line event lands where ``goals`` says it can, on
3.11, 3.12 and 3.13.
"""

from __future__ import annotations

import ast
import bisect
import collections
import dataclasses
import dis
import functools
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tracebox.trace.model import Trace

__all__ = ["CFG", "Block", "Walk", "build_cfg", "code_objects", "frame_codes"]

Exit = Literal["fall", "jump", "branch", "return", "raise"]

_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs) | frozenset(getattr(dis, "hasjump", ()))
_UNCONDITIONAL = frozenset(
    {"JUMP_FORWARD", "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT", "JUMP_ABSOLUTE", "JUMP"}
)
_RETURNS = frozenset({"RETURN_VALUE", "RETURN_CONST"})
_RAISES = frozenset({"RAISE_VARARGS", "RERAISE"})
_ITERATION_ENDS = frozenset({"StopIteration", "StopAsyncIteration"})
_LEAVES = frozenset({"RETURN_VALUE", "RETURN_CONST", "YIELD_VALUE"})
_RETURNS_OR_YIELDS, _UNWINDS = -1, -2  # goals of a search that ends the frame's activation
# Path costs: blocks entered in the low bits, disagreements with the trace above them.
_MISMATCH = 1 << 32
_BLOCKS = _MISMATCH - 1


def _kind(exception: str | None) -> int:
    """0: no exception event; 1: the end of an iterator, usually handled without an
    exception edge; 2: an exception, whose handler is reached by an exception edge."""
    return 0 if exception is None else 1 if exception in _ITERATION_ENDS else 2


# Instructions an exhausted FOR_ITER skips after its dis target (END_FOR first).
_FOR_SKIP = 0 if sys.version_info < (3, 12) else 1 if sys.version_info < (3, 13) else 2


@dataclasses.dataclass(frozen=True, slots=True)
class Block:
    """A basic block: instructions that run one after another, entered only at the first."""

    index: int
    start: int
    """Offset of its first instruction (its leader)."""
    end: int
    """Offset just past its last instruction."""
    instructions: int
    """Instructions in it, as ``dis`` lists them (``EXTENDED_ARG`` included, caches not)."""
    lines: tuple[int, ...]
    """Source lines of its instructions, each once, in code order (instructions without a
    line, such as exception cleanup, add none)."""
    start_line: int | None
    """Line of its first instruction that has one: where a line step entering it shows."""
    successors: tuple[int, ...]
    """Blocks control goes to next without an exception (fall-through first)."""
    handlers: tuple[int, ...]
    """Exception handlers of its instructions: exception edges."""
    exit: Exit
    """How it ends: falls through into the next block, jumps, branches (two ways), returns
    or raises."""

    @property
    def line_range(self) -> tuple[int, int] | None:
        """Lowest and highest line of its instructions (None: no instruction has a line)."""
        return (min(self.lines), max(self.lines)) if self.lines else None


@dataclasses.dataclass(frozen=True, eq=False)
class CFG:
    """The blocks of one code object, in code order (block 0 is the entry)."""

    code: types.CodeType
    blocks: tuple[Block, ...]
    _lines: Mapping[int, int | None] = dataclasses.field(repr=False)
    """Offset -> line of each instruction."""
    _next: Mapping[int, tuple[int, ...]] = dataclasses.field(repr=False)
    """Offset -> offsets of the instructions that can run next without an exception."""
    _handlers: Mapping[int, tuple[int, ...]] = dataclasses.field(repr=False)
    """Offset -> the exception handlers covering the instruction."""

    @functools.cached_property
    def leaders(self) -> frozenset[int]:
        """Offsets of the blocks' first instructions."""
        return frozenset(b.start for b in self.blocks)

    def block_at(self, offset: int) -> Block:
        """The block holding the instruction at ``offset``."""
        return self.blocks[bisect.bisect_right(self._starts, offset) - 1]

    @functools.cached_property
    def _starts(self) -> list[int]:
        return [b.start for b in self.blocks]

    @functools.cached_property
    def starts(self) -> Mapping[int, tuple[int, ...]]:
        """Line -> the blocks whose ``start_line`` it is."""
        out: dict[int, list[int]] = {}
        for b in self.blocks:
            if b.start_line is not None:
                out.setdefault(b.start_line, []).append(b.index)
        return {line: tuple(ids) for line, ids in out.items()}

    def advance(self, at: int, line: int, exception: str | None = None) -> tuple[int, int]:
        """Where a line step at ``line`` lands and how many blocks were entered since the
        frame's previous line step, which landed at offset ``at`` (0 for a fresh frame,
        whose entry block is entered at its start): the cheapest explanation of this one
        step (``Walk`` weighs whole sequences). ``exception``: the type name of the
        frame's last exception event since its previous line step, if any."""
        goals = self.goals(at, line, _kind(exception))
        landing = min(goals, key=lambda t: (goals[t], t))
        return landing, goals[landing] & _BLOCKS

    def goals(self, at: int, line: int, kind: int) -> Mapping[int, int]:
        """Landing offset -> cost of the cheapest path from ``at`` to it (see ``Walk``)."""
        key = (at, line, kind)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._search(at, line, kind)
        return found

    def exits(self, at: int, unwinds: bool = False) -> Mapping[int, int]:
        """A frame returns or yields after its line step that landed at ``at``: the
        ``RETURN_*``/``YIELD_VALUE`` offsets it can leave from, with the blocks entered.
        ``unwinds``: an exception ends it instead; the offsets that no handler covers
        (exception cleanup such as ``with`` exits and a generator's own handler runs
        first)."""
        goal = _UNWINDS if unwinds else _RETURNS_OR_YIELDS
        key = (at, goal, 0)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._search(at, goal, 0)
        return found

    # -- internals ------------------------------------------------------------------------
    @functools.cached_property
    def _memo(self) -> dict[tuple[int, int, int], dict[int, int]]:
        return {}

    @functools.cached_property
    def _walked(self) -> dict[tuple[States, int, str | None], tuple[States, int]]:
        """``Walk`` transitions: (states, line or goal, exception) -> (states, cost)."""
        return {}

    def _walk(
        self, states: States, goals: Callable[[int], Mapping[int, int]]
    ) -> tuple[States, int]:
        new: dict[int, int] = {}
        for at, cost in states:
            found = goals(at)
            if not found:  # unforeseen: stay
                new[at] = min(new.get(at, cost), cost)
            for t, more in found.items():
                total = cost + more
                if total < new.get(t, total + 1):
                    new[t] = total
        low = min(new.values())
        return tuple(sorted((t, c - low) for t, c in new.items())), low

    @functools.cached_property
    def _eff(self) -> dict[int, int | None]:
        """Line of each instruction; the prologue up to the first ``RESUME`` runs before the
        frame's call event, as if on line 0."""
        offsets = sorted(self._lines)
        first_resume = next((o for o in offsets if self._opname(o) == "RESUME"), -1)
        return {o: 0 if o <= first_resume else self._lines[o] for o in offsets}

    def _fires(self, src: int, dst: int) -> bool:
        """Does a line event fire when control goes from ``src`` to ``dst`` (a line)? Where
        the line changes, after an instruction without a line, and on a jump back within
        one line, except the one that closes a ``yield from``/``await`` loop."""
        here = self._eff[src]
        if here is None or here != self._eff[dst]:
            return True
        return dst <= src and self._opname(src) != "JUMP_BACKWARD_NO_INTERRUPT"

    def _search(self, at: int, line: int, kind: int) -> dict[int, int]:
        """0-1 breadth-first search from ``at`` over (instruction, exception edge taken):
        entering a leader costs 1, and a path ends where a line event fires. Goals: where
        the event for ``line`` fires, or (``_RETURNS_OR_YIELDS``) a return or yield
        instruction, or (``_UNWINDS``) one no exception handler covers. A
        path that disagrees with the exception events (``kind``) costs ``_MISMATCH``.

        ``at`` < 0 is ``~offset`` of an instruction that has run already (the yield a
        generator resumes from): it is not a goal, and the path may come back to it."""
        eff, leaders, nxt, handlers = self._eff, self.leaders, self._next, self._handlers
        ran = at < 0
        start = ~at if ran else at
        best: dict[tuple[int, bool], int] = {} if ran else {(start, False): 0}
        found: dict[int, int] = {}
        queue = collections.deque([(0, start, False)])
        while queue:
            cost, o, exc = queue.popleft()
            first, ran = ran, False
            if not first and best.get((o, exc), cost) < cost:
                continue
            if not first and (
                (line == _RETURNS_OR_YIELDS and self._opname(o) in _LEAVES)
                or (line == _UNWINDS and o not in handlers)
            ):
                found[o] = min(found.get(o, cost), cost)
                continue
            edges = [(t, exc) for t in nxt.get(o, ())]
            edges += [(t, True) for t in handlers.get(o, ())]
            for t, took in edges:
                c = cost + (t in leaders)
                if eff.get(t) is not None and self._fires(o, t):
                    if eff[t] == line:
                        wrong = took if kind == 0 else not took if kind == 2 else False
                        c += _MISMATCH * wrong
                        found[t] = min(found.get(t, c), c)
                    continue
                if best.get((t, took), c + 1) <= c:
                    continue
                best[(t, took)] = c
                if c == cost:
                    queue.appendleft((c, t, took))
                else:
                    queue.append((c, t, took))
        if found or line < 0:  # a frame leaving: no fallback
            return found
        # No path explains the step (an event the model does not foresee): the line's first
        # instruction, one block if a block starts on the line.
        here = sorted(o for o, ln in eff.items() if ln == line)
        heads = [o for o in here if o in leaders]
        return {(heads or here or [start])[0]: _MISMATCH + (1 if self.starts.get(line) else 0)}

    @functools.cached_property
    def _opnames(self) -> dict[int, str]:
        return {i.offset: i.opname for i in dis.get_instructions(self.code)}

    def _opname(self, offset: int) -> str:
        return self._opnames.get(offset, "")


class Walk:
    """One frame's way through its CFG as its steps show it: the cheapest instruction path
    that agrees with them (fewest blocks entered, exception edges where exception events
    say so). Feed it the frame's steps; ``blocks`` is then the blocks that path enters.

    Where one step alone is ambiguous (two loops closing on one line), later steps decide:
    every landing is kept with its cheapest cost so far (relative to ``base``, so that a
    loop's steps repeat the same transitions, which the CFG memoizes).
    """

    __slots__ = ("base", "cfg", "exception", "states")

    def __init__(self, cfg: CFG) -> None:
        self.cfg = cfg
        self.states: States = ((0, 0),)  # (landing, cost above base), sorted
        self.base = 1  # the entry block is entered at the start
        self.exception: str | None = None
        """Type name of the frame's last exception event since its last line step."""

    def line(self, line: int) -> None:
        key = (self.states, line, self.exception)
        hit = self.cfg._walked.get(key)
        if hit is None:
            kind = _kind(self.exception)
            hit = self.cfg._walked[key] = self.cfg._walk(
                self.states, lambda at: self.cfg.goals(at, line, kind)
            )
        self.states, more = hit
        self.base += more
        self.exception = None

    def leave(self, unwinds: bool = False) -> None:
        """The frame returns or yields, or (``unwinds``) an exception ends it: walk on to
        where it leaves. A yield has run when the generator resumes: it is kept as
        ``~offset``."""
        key = (self.states, _UNWINDS if unwinds else _RETURNS_OR_YIELDS, None)
        hit = self.cfg._walked.get(key)
        if hit is None:
            hit = self.cfg._walked[key] = self.cfg._walk(
                self.states, lambda at: {~t: c for t, c in self.cfg.exits(at, unwinds).items()}
            )
        self.states, more = hit
        self.base += more

    @property
    def blocks(self) -> int:
        return self.base & _BLOCKS


States = tuple[tuple[int, int], ...]


def _target(ins: dis.Instruction) -> int:
    target = getattr(ins, "jump_target", None)
    return int(ins.argval if target is None else target)


def build_cfg(code: types.CodeType) -> CFG:
    """The control-flow graph of ``code`` (not of the code objects nested in it)."""
    instrs = list(dis.get_instructions(code))
    if not instrs:
        return CFG(code, (), {}, {}, {})
    index = {ins.offset: k for k, ins in enumerate(instrs)}
    # Control reaches an instruction at its first EXTENDED_ARG prefix.
    head: dict[int, int] = {}
    for k, ins in enumerate(instrs):
        prefixed = k and instrs[k - 1].opname == "EXTENDED_ARG"
        head[ins.offset] = head[instrs[k - 1].offset] if prefixed else ins.offset
    line_at: dict[int, int | None] = {}
    for start, end, line in code.co_lines():
        for offset in range(start, end, 2):
            line_at[offset] = line
    nxt: dict[int, tuple[int, ...]] = {}  # instruction-level successors, no exceptions
    leaders = {instrs[0].offset}
    for k, ins in enumerate(instrs):
        follow = instrs[k + 1].offset if k + 1 < len(instrs) else None
        name = ins.opname
        succ: tuple[int, ...] = ()
        if ins.opcode in _JUMPS:
            target = head.get(_target(ins), _target(ins))
            if name == "FOR_ITER" and _FOR_SKIP and instrs[index[target]].opname == "END_FOR":
                target = instrs[min(index[target] + _FOR_SKIP, len(instrs) - 1)].offset
            leaders.add(target)
            if name not in _UNCONDITIONAL and follow is not None:
                succ = (follow, target)
            else:
                succ = (target,)
        elif name not in _RETURNS and name not in _RAISES:
            succ = () if follow is None else (follow,)
        if (ins.opcode in _JUMPS or name in _RETURNS or name in _RAISES) and follow is not None:
            leaders.add(follow)
        nxt[ins.offset] = succ
    handler_of: dict[int, tuple[int, ...]] = {}
    entries = dis.Bytecode(code).exception_entries  # type: ignore[attr-defined]
    for entry in entries:
        target = head.get(entry.target, entry.target)
        leaders.add(target)
        for ins in instrs[index.get(entry.start, len(instrs)) :]:
            if ins.offset >= entry.end:
                break
            handler_of[ins.offset] = (*handler_of.get(ins.offset, ()), target)
    starts = sorted(leaders)
    ends = [*starts[1:], len(code.co_code)]
    block_of = {}
    members_of: list[list[dis.Instruction]] = []
    for b, (start, end) in enumerate(zip(starts, ends, strict=True)):
        members: list[dis.Instruction] = []
        for ins in instrs[index[start] :]:
            if ins.offset >= end:
                break
            members.append(ins)
            block_of[ins.offset] = b
        members_of.append(members)
    blocks: list[Block] = []
    for b, (start, end) in enumerate(zip(starts, ends, strict=True)):
        members = members_of[b]
        last = members[-1]
        lines = [ln for i in members if (ln := line_at.get(i.offset)) is not None]
        caught = (t for i in members for t in handler_of.get(i.offset, ()))
        blocks.append(
            Block(
                b, start, end, len(members), tuple(dict.fromkeys(lines)),
                lines[0] if lines else None,
                tuple(dict.fromkeys(block_of[o] for o in nxt[last.offset])),
                tuple(dict.fromkeys(block_of[t] for t in caught)),
                _exit(last, len(nxt[last.offset])),
            )
        )  # fmt: skip
    return CFG(code, tuple(blocks), line_at, nxt, handler_of)


def _exit(last: dis.Instruction, ways: int) -> Exit:
    if last.opname in _RETURNS:
        return "return"
    if last.opname in _RAISES:
        return "raise"
    if last.opcode in _JUMPS:
        return "branch" if ways > 1 else "jump"
    return "fall"


# -- finding a trace's code objects ------------------------------------------------------
def code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and every code object nested in it (functions, classes, comprehensions)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from code_objects(const)


def compile_source(source: str, filename: str) -> types.CodeType | None:
    """Compile a user file again as the recorder saw it (None: it does not compile)."""
    for flags in (0, ast.PyCF_ALLOW_TOP_LEVEL_AWAIT):
        try:
            return compile(source, filename, "exec", flags=flags, dont_inherit=True)
        except SyntaxError:
            continue
    return None


def frame_codes(trace: Trace) -> list[types.CodeType | None]:
    """The code object each frame of ``trace`` ran, by frame id (None: not found, or a
    library frame).

    The user files' sources (``trace.sources``) are compiled again under the same name,
    and nested code objects matched by qualified name, then by first line (a frame's first
    step is its call, at the ``def`` line). The trace must come from this Python
    ``major.minor``: bytecode differs between versions. A module is compiled in ``exec``
    mode, so a cell compiled otherwise (the REPL's ``single``) matches in its lines and
    blocks but not instruction for instruction.
    """
    mine = f"{sys.version_info.major}.{sys.version_info.minor}"
    if trace.python != mine:
        raise ValueError(f"the trace was recorded by Python {trace.python}; this is {mine}")
    by_file: dict[str, dict[str, list[types.CodeType]]] = {}
    for file, source in trace.sources.items():
        top = compile_source(source, file)
        table: dict[str, list[types.CodeType]] = {}
        for c in code_objects(top) if top is not None else ():
            table.setdefault(c.co_qualname, []).append(c)
        by_file[file] = table
    first_line: dict[int, int] = {}
    for row in trace.rows:
        first_line.setdefault(row[1], row[3])
    out: list[types.CodeType | None] = []
    for fid, frame in enumerate(trace.frames):
        found = None if frame.library else by_file.get(frame.file, {}).get(frame.function)
        out.append(_pick(found, first_line.get(fid)) if found else None)
    return out


def _pick(candidates: Sequence[types.CodeType], line: int | None) -> types.CodeType:
    if len(candidates) > 1 and line is not None:
        for c in candidates:
            if c.co_firstlineno == line:
                return c
    return candidates[0]
