"""Fast rendering of flat container items: numbers, short strings, small tuples of those.

Most containers in traced programs hold such items. Their text is exactly what rendering
them one by one gives, made with C-level ``repr`` calls, and the text of a string or tuple
is kept by identity (the cache holds the object, so an id is not reused while its entry
lives): a deque that shifts by one item re-renders one item.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

__all__ = ["ATOMS", "FlatItems"]

ATOMS = frozenset({int, float, bool, type(None)})  # rendered by repr() alone
_FLAT = ATOMS | {str, tuple}
_FLAT_ITEMS = ATOMS | {str}  # what a tuple kept by identity holds
_INT_LIMIT = 1 << 10_000  # ints up to ~3000 digits go through repr() in one piece
_CACHE_SIZE = 4096
_PAIR = "{}: {}".format


def _numbers_fit(items: list[Any], types_: set[type]) -> bool:
    """No int among ``items`` is too long for a one-piece repr (None compares with nothing)."""
    if int not in types_:
        return True
    ints = items if len(types_) == 1 else [x for x in items if type(x) is int]
    return min(ints) > -_INT_LIMIT and max(ints) < _INT_LIMIT


class FlatItems:
    """The bounds are the renderer's; the cache lives as long as the recording."""

    def __init__(self, max_chars: int, max_depth: int, max_items: int) -> None:
        self.max_chars = max_chars
        self.max_depth = max_depth
        self.max_items = max_items
        self._texts: dict[int, tuple[object, str]] = {}  # id -> (str or tuple, its repr)

    def texts(self, obj: Any, base: type, depth: int) -> list[str] | None:
        """Texts of the container's first items (dicts: ``key: value``), or None if one of
        them is not flat."""
        limit = self.max_items
        if base is dict:
            keys = self._texts_of(list(islice(obj, limit)), depth)
            if keys is None:
                return None
            values = self._texts_of(list(islice(obj.values(), limit)), depth)
            return None if values is None else list(map(_PAIR, keys, values))
        return self._texts_of(list(islice(obj, limit)), depth)

    def whole(self, obj: Any, base: type) -> str | None:
        """``repr(obj)`` when every item (dicts: key and value) is a number or None."""
        types_ = set(map(type, obj))
        if not (types_ <= ATOMS and _numbers_fit(list(obj), types_)):
            return None
        if base is dict:
            vtypes = set(map(type, obj.values()))
            if not (vtypes <= ATOMS and _numbers_fit(list(obj.values()), vtypes)):
                return None
        return repr(obj)

    def tuple_text(self, obj: tuple[Any, ...]) -> str | None:
        """``repr(obj)`` of a tuple of numbers and strings whose repr is at most max_chars
        long, which is what rendering it item by item gives (None: not such a tuple)."""
        hit = self._texts.get(id(obj))
        if hit is not None and hit[0] is obj:
            text = hit[1]
        else:
            if len(obj) > self.max_items or not _FLAT_ITEMS.issuperset(map(type, obj)):
                return None
            try:
                text = repr(obj)
            except ValueError:  # an int too long for repr(): the general path marks it
                return None
        return text if len(text) <= self.max_chars else None

    def _texts_of(self, items: list[Any], depth: int) -> list[str] | None:
        types_ = set(map(type, items))
        if types_ <= ATOMS and _numbers_fit(items, types_):
            return list(map(repr, items))
        if not types_ <= _FLAT or (tuple in types_ and depth + 1 >= self.max_depth):
            return None  # (a tuple this deep is cut, not rendered)
        # Strings and tuples are immutable: their text is kept by identity (the cache holds
        # them, so an id is not reused while its entry lives).
        cache = self._texts
        out: list[str] = []
        for x in items:
            hit = cache.get(id(x))
            if hit is not None and hit[0] is x:
                out.append(hit[1])
                continue
            t = type(x)
            if t is str:
                if len(x) > self.max_chars:
                    return None
            elif t is tuple:
                if len(x) > self.max_items:
                    return None
                inner = set(map(type, x))
                if not inner <= ATOMS | {str} or not _numbers_fit(list(x), inner):
                    return None
                if str in inner and max(len(v) for v in x if type(v) is str) > self.max_chars:
                    return None
            elif not _numbers_fit([x], {t}):
                return None
            text = repr(x)
            if t is not int and t is not float:
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                cache[id(x)] = (x, text)
            out.append(text)
        return out
