"""Deterministic, bounded rendering of values, and normalised object identity.

- Text is Python's ``repr`` with memory addresses removed (``<Foo object at 0x7f..>`` becomes
  ``<Foo object>``), bounded by ``max_chars``, ``max_depth`` and ``max_items``; whatever is cut
  is marked in the text with ``<cut: ...>`` and in ``Value.cut``.
- Builtin containers are rendered here, item by item, so the work is bounded too (``repr``
  of a million-item list is never built). Sets and dicts keep iteration order, which for
  strings depends on hash randomisation: the runtime fixes ``PYTHONHASHSEED=0``.
- A user ``__repr__`` runs while the tracer is off (CPython does not deliver trace events
  inside a trace callback), so it cannot recurse into the tracer. If it raises, the value
  reads ``<Foo object; cut: repr raised E>``; if one call takes longer than 50 ms the type's
  repr is skipped from then on (the only time-dependent rule, for pathological reprs).
- Ids: objects other than immutable scalars get 1, 2, ... in order of first sight. The
  recorder holds a reference while a value is bound to a local it shows, so an id never
  moves to another object that reuses the address; an id is forgotten once released.
"""

from __future__ import annotations

import re
import threading
import time
import types
from collections import deque
from itertools import islice
from typing import Any

from tracebox.trace._flat import ATOMS as _ATOMS
from tracebox.trace._flat import FlatItems
from tracebox.trace.model import Value

__all__ = ["SCALARS", "STABLE", "Renderer", "default_repr", "type_name"]

_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")
_THREAD_IDENT = re.compile(r" \d+\)>$")  # <Thread(name, started 1402..)>: a native id
_SLOW_SECONDS = 0.05
_SLACK = 40  # room for one cut marker past max_chars
_WHOLE = (list, tuple, set, dict)
SCALARS = frozenset(
    {int, float, complex, bool, type(None), str, bytes, type(...), type(NotImplemented)}
)
"""Immutable values shown without an id: their identity is an interpreter detail."""
STABLE = SCALARS | {
    range,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.ModuleType,
}
"""Types whose rendering cannot change while the object stays the same."""
_BRACKETS: dict[type, tuple[str, str]] = {
    list: ("[", "]"),
    tuple: ("(", ")"),
    dict: ("{", "}"),
    set: ("{", "}"),
    frozenset: ("({", "})"),
    deque: ("([", "])"),
}


def _take(parts: list[str], limit: int) -> tuple[str, int]:
    """The items shown: as many as start before the text is ``limit`` long (both the fast
    and the item-by-item path cut here, so they give the same text)."""
    used = 0
    for shown, part in enumerate(parts):
        if used > limit:
            return ", ".join(parts[:shown]), shown
        used += len(part) + 2
    return ", ".join(parts), len(parts)


def _brackets(t: type, base: type) -> tuple[str, str]:
    """What repr() puts around the items: set, frozenset and deque name their class."""
    opening, closing = _BRACKETS[base]
    if base is set and t is not set:
        return f"{t.__name__}({opening}", f"{closing})"
    if base is frozenset or base is deque:
        return t.__name__ + opening, closing
    return opening, closing


_new_value = tuple.__new__  # Value(...) without NamedTuple's Python-level __new__
_OBJECT_REPR: Any = object.__repr__


def default_repr(t: type) -> bool:
    """Does ``t`` keep object's repr (``<Foo object at ...>``), which never changes?"""
    return t.__repr__ is _OBJECT_REPR


def type_name(t: type) -> str:
    try:  # a metaclass can make these properties that raise
        module, name = getattr(t, "__module__", None), getattr(t, "__qualname__", None)
    except Exception:
        module = name = None
    if not isinstance(name, str):
        name = "?"
    if isinstance(module, str) and module not in ("builtins", "__main__"):
        return f"{module}.{name}"
    return name


class Renderer:
    """Renders values for one recording; not thread-safe (one recording, one thread)."""

    def __init__(self, max_chars: int, max_depth: int, max_items: int) -> None:
        self.max_chars = max_chars
        self.max_depth = max_depth
        self.max_items = max_items
        self._ids: dict[int, int] = {}  # address -> normalised id
        self._holds: dict[int, int] = {}  # address -> values handed out and not released
        self._next_id = 1
        self._names: dict[type, str] = {}
        self._slow: set[type] = set()
        self._cut = False
        self._path: set[int] = set()
        self._flat = FlatItems(max_chars, max_depth, max_items)
        # The last top-level container cut by item count: (text before the cut marker,
        # items shown, closing): its text for another length is known (see ``more_items``).
        self.pieces: tuple[str, int, str] | None = None

    # -- identity -------------------------------------------------------------------------
    def value(self, obj: object) -> Value:
        """Render ``obj``; a value with an id must be handed back to ``release`` later."""
        t = type(obj)
        name = self._names.get(t)
        if name is None:
            name = self._names[t] = type_name(t)
        if t in _ATOMS:  # the most common values, without the general machinery
            try:
                return _new_value(Value, (repr(obj), name, None, False))
            except ValueError:  # an int too long for repr(): the general path marks it
                pass
        text, cut = self.text(obj)
        if t in SCALARS:
            return _new_value(Value, (text, name, None, cut))
        addr = id(obj)
        oid = self._ids.get(addr)
        if oid is None:
            oid = self._ids[addr] = self._next_id
            self._next_id += 1
        self._holds[addr] = self._holds.get(addr, 0) + 1
        return _new_value(Value, (text, name, oid, cut))

    def flat_tuple(self, obj: tuple[Any, ...]) -> Value | None:
        """``value(obj)`` for a tuple of numbers and short strings (most tuples), made
        without the general machinery; None: another tuple."""
        text = self._flat.tuple_text(obj)
        if text is None:
            return None
        addr = id(obj)
        oid = self._ids.get(addr)
        if oid is None:
            oid = self._ids[addr] = self._next_id
            self._next_id += 1
        self._holds[addr] = self._holds.get(addr, 0) + 1
        return _new_value(Value, (text, "tuple", oid, False))

    def release(self, obj: object) -> None:
        """The recorder no longer shows ``obj`` (one ``value`` call's worth)."""
        addr = id(obj)
        n = self._holds.get(addr)
        if n is None:
            return
        if n > 1:
            self._holds[addr] = n - 1
        else:
            del self._holds[addr]
            del self._ids[addr]

    # -- text -----------------------------------------------------------------------------
    def text(self, obj: object) -> tuple[str, bool]:
        """Bounded, address-free repr, and whether anything was cut."""
        self._cut = False
        self.pieces = None
        s = self._render(obj, 0)
        if len(s) > self.max_chars + _SLACK:  # parts are bounded already; this bounds the sum
            s = self._clip(s)
            self._cut = True
        return s, self._cut

    def _clip(self, s: str) -> str:
        return f"{s[: self.max_chars]}...<cut: {len(s) - self.max_chars} more chars>"

    def more_items(self, pieces: tuple[str, int, str], n: int) -> str:
        """The text of a container rendered as ``pieces`` said, now ``n`` items long with
        the same items shown (what ``text`` gives; the value is cut)."""
        head, shown, closing = pieces
        s = f"{head}...<cut: {n - shown} more items>{closing}"
        return self._clip(s) if len(s) > self.max_chars + _SLACK else s

    def _render(self, obj: Any, depth: int) -> str:
        t = type(obj)
        if t in _ATOMS:
            try:
                s = repr(obj)
            except ValueError:  # an int past sys.get_int_max_str_digits()
                self._cut = True
                s = f"<int of {obj.bit_length()} bits; cut: too long to render>"
        elif t is str or t is bytes or t is bytearray:
            s = self._chars(obj)
        elif t in _BRACKETS:
            return self._container(obj, t, t, depth)
        else:
            if t in STABLE or t is complex:
                s = repr(obj)
            else:
                base = next((b for b in _BRACKETS if isinstance(obj, b)), None)
                if base is not None and (t.__repr__ is base.__repr__ or len(obj) > self.max_items):
                    return self._container(obj, t, base, depth)
                s = self._other(obj, t)
            if "0x" in s:  # not in str values: a string may say "at 0x10"
                s = _ADDR.sub("", s)
        return s

    def _chars(self, obj: str | bytes | bytearray) -> str:
        limit = self.max_chars
        if len(obj) <= limit:
            return repr(obj)
        self._cut = True
        unit = "chars" if isinstance(obj, str) else "bytes"
        return f"{obj[:limit]!r}...<cut: {len(obj) - limit} more {unit}>"

    def _container(self, obj: Any, t: type, base: type, depth: int) -> str:
        """A builtin container (or a subclass) rendered item by item within the bounds."""
        opening, closing = _brackets(t, base)
        if t.__repr__ is not base.__repr__:  # a big container whose class has its own repr
            self._cut = True
            if base in (list, tuple, dict):
                opening, closing = f"{t.__name__}({opening}", f"{closing})"
        n = len(obj)
        if n == 0:
            return f"{t.__name__}()" if base in (set, frozenset) else opening + closing
        if depth >= self.max_depth:
            self._cut = True
            return f"{opening}...<cut: {n} items, depth>{closing}"
        if id(obj) in self._path:  # a cycle: what repr() shows
            return f"{opening}...{closing}"
        if t is base and n <= self.max_items and base in _WHOLE:
            whole = self._flat.whole(obj, base)
            if whole is not None and len(whole) <= self.max_chars:
                return whole  # a small container of numbers: one repr() is the rendering
        parts = self._flat.texts(obj, base, depth)
        if parts is None:
            head = list(islice(obj.items() if base is dict else obj, self.max_items))
            self._path.add(id(obj))
            try:
                parts = self._items(head, base is dict, depth)
            finally:
                self._path.discard(id(obj))
        inner, shown = _take(parts, self.max_chars)
        if base is deque and obj.maxlen is not None:
            closing = f"], maxlen={obj.maxlen})"
        if shown < n:
            self._cut = True
            if shown and depth == 0:
                self.pieces = (f"{opening}{inner}, ", shown, closing)
            more = f"...<cut: {n - shown} more items>" if shown else f"...<cut: {n} items>"
            inner = f"{inner}, {more}" if shown else more
        elif base is tuple and n == 1:
            inner += ","
        return f"{opening}{inner}{closing}"

    def _items(self, head: list[Any], pairs: bool, depth: int) -> list[str]:
        """Item texts, one by one, until they are past ``max_chars`` (work stays bounded)."""
        parts: list[str] = []
        used = 0
        for item in head:
            if used > self.max_chars:
                break
            if pairs:
                k, v = item
                text = f"{self._render(k, depth + 1)}: {self._render(v, depth + 1)}"
            else:
                text = self._render(item, depth + 1)
            parts.append(text)
            used += len(text) + 2
        return parts

    def _other(self, obj: object, t: type) -> str:
        name = self._names.get(t) or type_name(t)
        if default_repr(t):  # object.__repr__ without the address
            module = getattr(t, "__module__", None)
            if isinstance(module, str) and module != "builtins":
                return f"<{module}.{t.__qualname__} object>"
            return f"<{t.__name__} object>"
        if t in self._slow:
            self._cut = True
            return f"<{name} object; cut: repr skipped, slow>"
        start = time.perf_counter()
        try:
            s = repr(obj)
        except Exception as exc:  # a user's __repr__ failing is data, not our failure
            self._cut = True
            return f"<{name} object; cut: repr raised {type(exc).__name__}>"
        finally:
            if time.perf_counter() - start > _SLOW_SECONDS:
                self._slow.add(t)
        if type(s) is not str:  # a str subclass could run user code in len() or slicing
            s = str.__getitem__(s, slice(None))
        if isinstance(obj, threading.Thread):
            s = _THREAD_IDENT.sub(")>", s)
        return s
