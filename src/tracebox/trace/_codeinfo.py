"""Facts about a code object that the recorder needs, computed once per code object."""

from __future__ import annotations

import dis
import inspect
import types

from tracebox.trace._effects import Effect, line_effects
from tracebox.trace.model import FrameInfo
from tracebox.trace.settings import _OWN_DIR, Settings

__all__ = ["LIBRARY", "OWN", "USER", "CodeInfo", "CodeTable"]

OWN, LIBRARY, USER = 0, 1, 2
_GENERATOR_FLAGS = (
    inspect.CO_GENERATOR
    | inspect.CO_COROUTINE
    | inspect.CO_ASYNC_GENERATOR
    | inspect.CO_ITERABLE_COROUTINE
)
# Instructions after which control never reaches the next instruction in the code.
_NO_FALLTHROUGH = frozenset(
    {
        "JUMP_FORWARD",
        "JUMP_BACKWARD",
        "JUMP_BACKWARD_NO_INTERRUPT",
        "JUMP_ABSOLUTE",
        "JUMP",
        "JUMP_NO_INTERRUPT",
        "RETURN_VALUE",
        "RETURN_CONST",
        "RAISE_VARARGS",
        "RERAISE",
    }
)


class CodeInfo:
    """One code object: whose it is, its name, and how its lines flow."""

    __slots__ = (
        "_line_at",
        "code",
        "effects",
        "enabled",
        "fallthrough",
        "first_resume",
        "frame",
        "function",
        "generator",
        "hits",
        "kind",
        "module",
        "names",
        "pure",
    )

    def __init__(
        self, code: types.CodeType, kind: int, hits: dict[int, int], mode: str = "full"
    ) -> None:
        self.code = code  # held: the table is keyed by id(code), which must not be reused
        self.kind = kind
        self.function = code.co_qualname
        self.frame = FrameInfo(self.function, code.co_filename, kind == LIBRARY)
        self.generator = bool(code.co_flags & _GENERATOR_FLAGS)
        self.hits = hits  # line -> times reached, shared by every code object of the file
        # Module and class bodies: their "locals" are a namespace dict; show only the names
        # the code itself uses (not a whole session's globals), and no dunders.
        self.names: tuple[str, ...] | None = None
        if not code.co_flags & inspect.CO_OPTIMIZED:
            self.names = tuple(n for n in code.co_names if not n.startswith("__"))
        # A module's namespace is read as f_globals: on 3.12+ touching f_locals of a frame
        # running an inlined comprehension makes settrace write the hidden variable back.
        self.module = self.names is not None and code.co_name == "<module>"
        self.first_resume = -1
        self.enabled = 0  # sys.monitoring local events set on this code by the recording
        # Line pairs (a, b) where an instruction of line a flows into line b. A line step
        # whose move from the frame's previous line is not one of these followed a jump (a
        # branch, a loop back-edge, an exception handler): it gets an arc. User code only.
        # Counting needs none of this bytecode analysis (about 0.1 ms a code object).
        user = kind == USER and mode != "steps"
        self.fallthrough = _fallthrough_pairs(code) if user else frozenset()
        full = user and mode == "full"
        self.pure = _pure_lines(code) if full else frozenset()
        # What each line of a function can change (module and class bodies: unknown).
        self.effects: dict[int, Effect] = line_effects(code) if full and self.names is None else {}
        self._line_at: dict[int, int | None] | None = None

    def line_at(self, offset: int) -> int | None:
        """The line of the instruction at ``offset`` (None: an instruction without one)."""
        if self._line_at is None:
            self._line_at = _lines_by_offset(self.code)
        return self._line_at.get(offset)

    def is_fresh(self, lasti: int) -> bool:
        """settrace: does a "call" event at ``lasti`` start the frame (not resume it)?"""
        if not self.generator:
            return True
        if self.first_resume < 0:
            self.first_resume = next(
                (i.offset for i in dis.get_instructions(self.code) if i.opname == "RESUME"), 0
            )
        return lasti <= self.first_resume


def _lines_by_offset(code: types.CodeType) -> dict[int, int | None]:
    line_at: dict[int, int | None] = {}
    for start, end, line in code.co_lines():
        for offset in range(start, end, 2):
            line_at[offset] = line
    return line_at


def _fallthrough_pairs(code: types.CodeType) -> frozenset[tuple[int, int]]:
    line_at = _lines_by_offset(code)
    pairs: set[tuple[int, int]] = set()
    current: int | None = None  # line of the last instruction with a line, on this path
    flows = False
    for ins in dis.get_instructions(code):
        line = line_at.get(ins.offset)
        if line is not None:
            if flows and current is not None and current != line:
                pairs.add((current, line))
            current = line
        elif not flows:
            current = None
        flows = ins.opname not in _NO_FALLTHROUGH
    return frozenset(pairs)


# Instructions that cannot change a list, dict, set or deque in place without starting a
# Python frame (which the recorder sees as a call event). Anything else (calls, subscript
# stores, in-place operators, iteration, which can call C callables) makes a line impure.
_PURE_OPS = frozenset(
    """
    NOP RESUME CACHE EXTENDED_ARG PUSH_NULL POP_TOP COPY SWAP END_FOR NOT_TAKEN
    LOAD_CONST LOAD_SMALL_INT LOAD_FAST LOAD_FAST_CHECK LOAD_FAST_LOAD_FAST LOAD_FAST_BORROW
    LOAD_FAST_BORROW_LOAD_FAST_BORROW LOAD_NAME LOAD_GLOBAL LOAD_DEREF LOAD_CLOSURE
    LOAD_ATTR LOAD_METHOD STORE_FAST STORE_FAST_LOAD_FAST STORE_FAST_STORE_FAST STORE_NAME
    STORE_GLOBAL STORE_DEREF DELETE_FAST DELETE_NAME DELETE_GLOBAL DELETE_DEREF
    BINARY_SUBSCR BINARY_SLICE BUILD_SLICE COMPARE_OP CONTAINS_OP IS_OP TO_BOOL
    UNARY_NEGATIVE UNARY_NOT UNARY_INVERT BUILD_TUPLE BUILD_LIST BUILD_SET BUILD_MAP
    BUILD_CONST_KEY_MAP BUILD_STRING FORMAT_VALUE FORMAT_SIMPLE FORMAT_WITH_SPEC
    CONVERT_VALUE GET_ITER POP_JUMP_IF_FALSE POP_JUMP_IF_TRUE POP_JUMP_IF_NONE
    POP_JUMP_IF_NOT_NONE POP_JUMP_FORWARD_IF_FALSE POP_JUMP_FORWARD_IF_TRUE
    POP_JUMP_BACKWARD_IF_FALSE POP_JUMP_BACKWARD_IF_TRUE POP_JUMP_FORWARD_IF_NONE
    POP_JUMP_FORWARD_IF_NOT_NONE JUMP_IF_FALSE_OR_POP JUMP_IF_TRUE_OR_POP JUMP_FORWARD
    JUMP_BACKWARD JUMP_BACKWARD_NO_INTERRUPT RETURN_VALUE RETURN_CONST
    """.split()  # noqa: SIM905 - a word list reads better than 70 quoted lines
)


def _pure_lines(code: types.CodeType) -> frozenset[int]:
    """Lines whose instructions are all in ``_PURE_OPS`` (in-place binary operators are
    not: ``lst += more`` extends a list)."""
    line_at = _lines_by_offset(code)
    pure: dict[int, bool] = {}
    for ins in dis.get_instructions(code):
        line = line_at.get(ins.offset)
        ok = ins.opname in _PURE_OPS or (ins.opname == "BINARY_OP" and "=" not in ins.argrepr)
        if line is None:
            if not ok:
                return frozenset()  # an impure instruction outside any line: no line is pure
            continue
        pure[line] = pure.get(line, True) and ok
    return frozenset(line for line, ok in pure.items() if ok)


class CodeTable:
    """``CodeInfo`` by code object, for one recording."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.by_id: dict[int, CodeInfo] = {}  # id(code) -> info; the info holds the code
        self.hits: dict[str, dict[int, int]] = {}

    def get(self, code: types.CodeType) -> CodeInfo:
        info = self.by_id.get(id(code))
        if info is None:
            info = self.by_id[id(code)] = self._make(code)
        return info

    def _make(self, code: types.CodeType) -> CodeInfo:
        file = code.co_filename
        if file.startswith(_OWN_DIR):
            kind = OWN
        elif self._settings.is_user_file(file):
            kind = USER
        else:
            kind = LIBRARY
        hits = self.hits.setdefault(file, {}) if kind == USER else {}
        return CodeInfo(code, kind, hits, self._settings.mode)

    def infos(self) -> list[CodeInfo]:
        return list(self.by_id.values())
