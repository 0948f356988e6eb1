"""Line effects: which locals one line of a function can rebind, and which objects it can
change in place, read once from the bytecode of its code object.

The recorder diffs a frame's locals at each line step; most lines rebind one local and
change nothing else, so looking at every local (and every watched container) again is
wasted work. ``Effect`` of a line says what the line may have done, given cheap checks at
the next step:

- ``stores``: the locals it may bind or unbind (``STORE_FAST`` and kin);
- ``checks``: ``(name, table)``: the line calls a method on, assigns an item of, unpacks or
  updates in place the object that ``name`` was bound to when the line began. ``table``
  maps that object's exact type to 1 (the line may change the object, and only it) or 0
  (it cannot change anything); any other type means anything may have changed;
- ``builtins``: ``(name, obj)``: the line calls global ``name``, which must be the builtin
  ``obj`` (not shadowed) for the line to be confined.

A line absent from the table may do anything (any other call, attribute store, ``for``
iteration ...): the recorder then looks at every local, as before. The trust model is the
one of ``_codeinfo._PURE_OPS``: an instruction that starts a Python frame is seen as a call
event (and the next step is not confined), and the C code behind subscripts, comparisons
and the builtin methods listed here does not change other objects.

Between two line events of a frame only the earlier line's instructions run, plus
instructions without a line that normal flow reaches from them (attributed to that line
here); exception paths are covered by the exception event they raise first.
"""

from __future__ import annotations

import builtins
import dis
import sys
import types
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = ["Effect", "line_effects"]

Checks = tuple[tuple[str, Mapping[type, int]], ...]
Effect = tuple[tuple[str, ...], Checks, tuple[tuple[str, object], ...]]

_MUTABLE: dict[type, int] = {list: 1, dict: 1, set: 1, deque: 1, bytearray: 1}
_IMMUTABLE: dict[type, int] = dict.fromkeys(
    (int, float, complex, bool, str, bytes, tuple, frozenset, range, type(None)), 0
)
# Exact types whose iteration runs no code but theirs (items are not touched).
_ITERABLE: dict[type, int] = dict.fromkeys(
    (list, tuple, str, bytes, dict, set, frozenset, deque, range), 0
)
_INPLACE: dict[type, int] = {
    **_IMMUTABLE,
    **_MUTABLE,
}  # x += y changes x's object only if it is mutable
_SUBSCRIPT: dict[type, int] = {list: 1, dict: 1, deque: 1, bytearray: 1}
_UNPACK: dict[type, int] = {tuple: 0, list: 0}

# Methods of exact builtin types that touch no object but their receiver, other than by
# hashing and comparing (which, in Python, starts a frame). Value: takes an iterable.
_READ = "copy count index get keys values items __contains__ __len__ __getitem__"
_METHODS: dict[type, str] = {
    list: f"{_READ} append clear insert pop remove reverse",
    dict: f"{_READ} clear pop popitem setdefault",
    set: f"{_READ} add clear discard pop remove",
    deque: f"{_READ} append appendleft clear insert pop popleft remove reverse rotate",
    str: f"{_READ} capitalize casefold center endswith expandtabs find isalnum isalpha "
    "isascii isdecimal isdigit isidentifier islower isnumeric isprintable isspace "
    "istitle isupper ljust lower lstrip partition removeprefix removesuffix replace "
    "rfind rindex rjust rpartition rsplit rstrip split splitlines startswith strip "
    "swapcase title upper zfill encode",
    tuple: _READ,
    frozenset: _READ,
    int: "bit_length bit_count to_bytes conjugate",
    float: "is_integer hex conjugate",
}
_ITERATING_METHODS: dict[type, str] = {
    list: "extend",
    set: "update",
    dict: "update",
    deque: "extend extendleft",
}
# Builtins that run no code of their arguments' but type slots (trusted, as above);
# the second group iterates its arguments.
_SIMPLE_BUILTINS = frozenset(
    """len abs isinstance type id hash ord chr repr str int float bool round divmod pow
    range enumerate zip reversed""".split()  # noqa: SIM905 - word lists read better
)
_ITERATING_BUILTINS = frozenset(
    "sorted sum min max list tuple set frozenset any all".split()  # noqa: SIM905
)


def _tables() -> tuple[dict[str, dict[type, int]], dict[str, dict[type, int]]]:
    plain: dict[str, dict[type, int]] = {}
    iterating: dict[str, dict[type, int]] = {}
    for t, names in _METHODS.items():
        for name in names.split():
            plain.setdefault(name, {})[t] = _MUTABLE.get(t, 0)
    for t, names in _ITERATING_METHODS.items():
        for name in names.split():
            iterating.setdefault(name, {})[t] = 1
    return plain, iterating


_METHOD_TABLE, _ITERATING_TABLE = _tables()

_NO_FALLTHROUGH = frozenset(
    """JUMP_FORWARD JUMP_BACKWARD JUMP_BACKWARD_NO_INTERRUPT JUMP_ABSOLUTE JUMP
    JUMP_NO_INTERRUPT RETURN_VALUE RETURN_CONST RAISE_VARARGS RERAISE""".split()  # noqa: SIM905
)
_JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
_STORES = frozenset(
    """STORE_FAST STORE_FAST_STORE_FAST STORE_FAST_LOAD_FAST STORE_FAST_MAYBE_NULL
    DELETE_FAST LOAD_FAST_AND_CLEAR STORE_DEREF DELETE_DEREF""".split()  # noqa: SIM905
)
# Instructions that change no object (the trust model of _codeinfo._PURE_OPS), by their
# stack effect (pops, pushes) where it is fixed; None: modelled below.
_PLAIN: dict[str, tuple[int, int] | None] = {
    "NOP": (0, 0), "RESUME": (0, 0), "CACHE": (0, 0), "EXTENDED_ARG": (0, 0),
    "NOT_TAKEN": (0, 0), "PRECALL": (0, 0), "POP_TOP": (1, 0), "END_FOR": None,
    "BINARY_SUBSCR": (2, 1), "BINARY_SLICE": (3, 1), "COMPARE_OP": (2, 1),
    "CONTAINS_OP": (2, 1), "IS_OP": (2, 1), "TO_BOOL": (1, 1), "UNARY_NEGATIVE": (1, 1),
    "UNARY_NOT": (1, 1), "UNARY_INVERT": (1, 1), "UNARY_POSITIVE": (1, 1),
    "FORMAT_SIMPLE": (1, 1), "FORMAT_WITH_SPEC": (2, 1), "CONVERT_VALUE": (1, 1),
    "GET_ITER": (1, 1), "LOAD_DEREF": (0, 1), "LOAD_CLOSURE": (0, 1), "PUSH_NULL": None,
    "STORE_FAST": (1, 0), "STORE_FAST_STORE_FAST": (2, 0), "STORE_DEREF": (1, 0),
    "DELETE_FAST": (0, 0), "DELETE_DEREF": (0, 0), "STORE_FAST_MAYBE_NULL": (1, 0),
    "RETURN_VALUE": (1, 0), "RETURN_CONST": (0, 0),
}  # fmt: skip
_LOADS = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW"})
_LOAD_PAIRS = frozenset({"LOAD_FAST_LOAD_FAST", "LOAD_FAST_BORROW_LOAD_FAST_BORROW"})
_CONSTS = frozenset({"LOAD_CONST", "LOAD_SMALL_INT"})
_NULL_FIRST = sys.version_info < (3, 13)  # LOAD_GLOBAL's NULL: below the callable until 3.13
_NULL: Any = ("null",)
_CONST: Any = ("const",)


class _Line:
    __slots__ = ("builtins", "checks", "confined", "stored", "stores")

    def __init__(self) -> None:
        self.stores: dict[str, None] = {}
        self.stored: set[str] = set()  # stored so far in code order (loads after: unknown)
        self.checks: list[tuple[str, Mapping[type, int]]] = []
        self.builtins: list[tuple[str, object]] = []
        self.confined = True


def line_effects(code: types.CodeType) -> dict[int, Effect]:
    """The effect of each line of a function (absent: the line may do anything)."""
    try:
        return _analyse(code)
    except Exception:  # an instruction set we do not know: every line does anything
        return {}


def _analyse(code: types.CodeType) -> dict[int, Effect]:
    ins = list(dis.get_instructions(code))
    line_at: dict[int, int | None] = {}
    for start, end, line in code.co_lines():
        for offset in range(start, end, 2):
            line_at[offset] = line
    targets = {i.argval for i in ins if i.opcode in _JUMPS}
    entries: Any = getattr(dis.Bytecode(code), "exception_entries", ())  # 3.11+, untyped
    targets.update(e.target for e in entries)
    lines: dict[int, _Line] = {}
    owners = _lineless_owners(ins, line_at)
    stack: list[Any] = []
    current: int | None = None
    kw = False
    for k, i in enumerate(ins):
        line = line_at.get(i.offset)
        if line is None:
            for owner in owners.get(k, ()):
                _lineless(lines.setdefault(owner, _Line()), i)
            stack, current = [], None
            continue
        state = lines.setdefault(line, _Line())
        if line != current or i.offset in targets:
            stack, kw = [], False
        current = line
        if i.opname == "KW_NAMES":
            kw = True
            continue
        if not _step(state, i, stack, kw):
            state.confined = False
            stack = []
        if i.opname.startswith("CALL"):
            kw = False
        if i.opcode in _JUMPS or i.opname in _NO_FALLTHROUGH:
            stack = []
    return {
        line: (tuple(s.stores), _unique(s.checks), tuple(dict(s.builtins).items()))
        for line, s in lines.items()
        if s.confined
    }


def _unique(checks: list[tuple[str, Mapping[type, int]]]) -> Checks:
    return tuple({(name, id(table)): (name, table) for name, table in checks}.values())


def _lineless_owners(
    ins: list[dis.Instruction], line_at: Mapping[int, int | None]
) -> dict[int, set[int]]:
    """Instructions without a line that normal flow reaches from a line: which lines."""
    index = {i.offset: k for k, i in enumerate(ins)}
    owners: dict[int, set[int]] = {}
    todo: list[tuple[int, int]] = []
    for k, i in enumerate(ins):
        line = line_at.get(i.offset)
        if line is not None:
            todo.extend((s, line) for s in _successors(ins, k, index))
    while todo:
        k, line = todo.pop()
        if line_at.get(ins[k].offset) is not None or line in owners.get(k, ()):
            continue
        owners.setdefault(k, set()).add(line)
        todo.extend((s, line) for s in _successors(ins, k, index))
    return owners


def _successors(ins: list[dis.Instruction], k: int, index: Mapping[int, int]) -> list[int]:
    i = ins[k]
    out = []
    if i.opname not in _NO_FALLTHROUGH and k + 1 < len(ins):
        out.append(k + 1)
    if i.opcode in _JUMPS and i.argval in index:
        out.append(index[i.argval])
    return out


def _lineless(state: _Line, i: dis.Instruction) -> None:
    """An instruction without a line runs as part of ``state``'s line: no stack facts."""
    if i.opname in _STORES:
        _store(state, i)
    harmless = i.opname in _PLAIN or i.opname in _LOADS | _LOAD_PAIRS | _CONSTS
    if not harmless and not i.opname.startswith(("POP_JUMP", "JUMP", "SWAP", "COPY")):
        state.confined = False


def _store(state: _Line, i: dis.Instruction) -> None:
    names = i.argval if isinstance(i.argval, tuple) else (i.argval,)
    if i.opname == "STORE_FAST_LOAD_FAST":
        names = names[:1]
    for name in names:
        state.stores[name] = None
        state.stored.add(name)


def _local(state: _Line, name: str) -> Any:
    return None if name in state.stored else ("local", name)


def _pop(stack: list[Any], n: int) -> list[Any]:
    """The top n values, bottom first (unknown below what this line pushed)."""
    got = [stack.pop() if stack else None for _ in range(n)]
    got.reverse()
    return got


def _step(state: _Line, i: dis.Instruction, stack: list[Any], kw: bool) -> bool:
    """Follow one instruction on the symbolic stack; False: it may do anything."""
    op = i.opname
    if op in _STORES:
        if op == "STORE_FAST_LOAD_FAST":
            stack.pop() if stack else None
            _store(state, i)
            stack.append(_local(state, i.argval[1]))
            return True
        if op == "LOAD_FAST_AND_CLEAR":
            _store(state, i)
            stack.append(None)
            return True
        _store(state, i)
    if op in _LOADS:
        stack.append(_local(state, i.argval))
    elif op in _LOAD_PAIRS:
        stack.extend(_local(state, n) for n in i.argval)
    elif op in _CONSTS:
        stack.append(_CONST)
    elif op == "PUSH_NULL":
        stack.append(_NULL)
    elif op == "LOAD_GLOBAL":
        value = ("global", i.argval)
        if i.arg is not None and i.arg & 1:
            stack.extend((_NULL, value) if _NULL_FIRST else (value, _NULL))
        else:
            stack.append(value)
    elif op in ("LOAD_ATTR", "LOAD_METHOD"):
        (receiver,) = _pop(stack, 1)
        if op == "LOAD_METHOD" or (sys.version_info >= (3, 12) and i.arg is not None and i.arg & 1):
            stack.extend((("method", receiver, i.argval), None))
        else:
            stack.append(None)
    elif op in ("COPY", "SWAP"):
        n = i.arg or 1
        if len(stack) < n:
            stack.clear()  # reaches below what this line pushed
        elif op == "COPY":
            stack.append(stack[-n])
        else:
            stack[-1], stack[-n] = stack[-n], stack[-1]
    elif op == "CALL":
        args = _pop(stack, (i.arg or 0) + 2)
        stack.append(None)
        return not kw and _call(state, args[:2], args[2:])
    elif op == "BINARY_OP":
        target, _ = _pop(stack, 2)
        stack.append(None)
        if "=" in i.argrepr:  # in place: x += y
            return _check(state, target, _INPLACE)
    elif op == "STORE_SUBSCR":
        _, target, _ = _pop(stack, 3)
        return _check(state, target, _SUBSCRIPT)
    elif op == "DELETE_SUBSCR":
        target, _ = _pop(stack, 2)
        return _check(state, target, _SUBSCRIPT)
    elif op == "STORE_SLICE":
        _, target, _, _ = _pop(stack, 4)
        return _check(state, target, _SUBSCRIPT)
    elif op == "UNPACK_SEQUENCE":
        (source,) = _pop(stack, 1)
        stack.extend([None] * (i.arg or 0))
        return _check(state, source, _UNPACK)
    elif op in ("BUILD_TUPLE", "BUILD_LIST", "BUILD_SET", "BUILD_STRING", "BUILD_SLICE"):
        _pop(stack, i.arg or 0)
        stack.append(None)
    elif op.startswith(("POP_JUMP", "JUMP")):
        if op.startswith("POP_JUMP"):
            _pop(stack, 1)
    elif op in ("BUILD_MAP", "BUILD_CONST_KEY_MAP", "FORMAT_VALUE"):
        stack.clear()  # pure, with a stack effect that depends on the argument
    elif op in _PLAIN:
        effect = _PLAIN[op]
        if effect is None:
            stack.clear()
        else:
            _pop(stack, effect[0])
            stack.extend([None] * effect[1])
    else:
        return False
    return True


def _check(state: _Line, value: Any, table: Mapping[type, int]) -> bool:
    if value is None or value[0] != "local":
        return False
    state.checks.append((value[1], table))
    return True


def _iterated(state: _Line, args: list[Any]) -> bool:
    return all(a is _CONST or _check(state, a, _ITERABLE) for a in args)


def _call(state: _Line, callee: list[Any], args: list[Any]) -> bool:
    if _NULL in callee:
        (fn,) = [c for c in callee if c is not _NULL] or [None]
        if fn is None or fn[0] != "global":
            return False
        name = fn[1]
        if name in _SIMPLE_BUILTINS or (name in ("min", "max") and len(args) > 1):
            state.builtins.append((name, getattr(builtins, name)))
            return True
        if name in _ITERATING_BUILTINS and _iterated(state, args):
            state.builtins.append((name, getattr(builtins, name)))
            return True
        return False
    method = callee[0]
    if method is None or method[0] != "method":
        return False
    receiver, name = method[1], method[2]
    if receiver is _CONST:  # "sep".join(parts), "{}".format(x): a str constant
        return name == "format" or (name == "join" and _iterated(state, args))
    if name in _METHOD_TABLE:
        return _check(state, receiver, _METHOD_TABLE[name])
    if name in _ITERATING_TABLE and _iterated(state, args):
        return _check(state, receiver, _ITERATING_TABLE[name])
    return False
