"""Locals deltas: which locals of a frame changed since its previous step, found cheaply.

Most steps change one local or none, so the common case must cost little: the frame's
names and objects are compared as two lists at C speed (``map(operator.is_, ...)``), and
only objects whose rendering could change without rebinding (mutable containers, objects
with their own ``__repr__``) are looked at one by one. A rebinding, or an in-place change
that alters the rendered value, is a change; a mutation the bounded rendering does not show
(an item past ``max_items``) is not.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Mapping
from itertools import chain, compress, islice
from typing import Any

from tracebox.trace.model import Value
from tracebox.trace.render import STABLE, Renderer, default_repr

__all__ = ["FrameState", "LocalsDiffer"]

_ALWAYS = object()  # fingerprint: the rendering cannot change while the object is the same
_IMMUTABLE = (tuple, frozenset)
_MUTABLE = (list, set, deque)
_is = operator.is_
_is_not = operator.is_not


class FrameState:
    """What the recorder knows of one frame."""

    __slots__ = (
        "calls",
        "depth",
        "fid",
        "keys",
        "library",
        "objs",
        "prev_line",
        "raised",
        "rerender",
        "values",
        "watch",
    )

    def __init__(self, fid: int, depth: int, library: bool) -> None:
        self.fid = fid
        self.depth = depth
        self.library = library
        self.prev_line = 0
        self.raised = False  # an exception event since the last line event (settrace unwinds)
        self.keys: list[Any] = []
        self.objs: list[Any] = []
        # name -> (object, fingerprint, rendered value); holds the objects: ids stay valid
        self.values: dict[str, tuple[Any, Any, Value]] = {}
        self.watch: tuple[str, ...] = ()  # names whose objects can change in place
        self.rerender: tuple[str, ...] = ()  # ... of which no fingerprint can tell
        self.calls = 0  # the recording's call count at this frame's previous step


Delta = tuple[dict[str, Value] | None, tuple[str, ...] | None]


class LocalsDiffer:
    def __init__(self, renderer: Renderer, max_items: int) -> None:
        self.renderer = renderer
        self.max_items = max_items

    def diff(
        self,
        st: FrameState,
        ns: Mapping[str, Any],
        names: tuple[str, ...] | None,
        pure: bool = False,
    ) -> Delta:
        """(changed, deleted) since the previous call for this frame; updates ``st``.

        ``pure``: only a pure line of this frame ran since (no call, no subscript store,
        no in-place operator, no iteration): builtin containers cannot have changed.
        """
        if names is None:
            keys, objs = list(ns), list(ns.values())
        else:  # a namespace dict: only the names the code uses
            keys = [n for n in names if n in ns]
            objs = [ns[n] for n in keys]
        if keys == st.keys:
            old_objs, st.objs = st.objs, objs
            if all(map(_is, objs, old_objs)):
                watch = st.rerender if pure else st.watch
                return (self._recheck(st, watch, ()) if watch else None), None
            return self._rebound(st, keys, objs, old_objs, pure), None
        changed: dict[str, Value] | None = None
        values = st.values
        render, release = self.renderer.value, self.renderer.release
        present = 0
        rewatch = False
        released: list[Any] = []  # after all renders: a swap `a, b = b, a` keeps both ids
        for name, obj in zip(keys, objs, strict=True):
            old = values.get(name)
            if old is not None:
                present += 1
                fp = old[1]
                if old[0] is obj and (fp is _ALWAYS or (fp is not None and _same(obj, fp))):
                    continue
                rewatch = rewatch or fp is not _ALWAYS
            elif type(name) is not str or name[:1] == ".":  # ".0": compiler temporaries
                continue
            else:
                present += 1
            val = render(obj)
            if old is not None and old[2][2] is not None:
                released.append(old[0])
            fp = _ALWAYS if type(obj) in STABLE else self.fingerprint(obj)
            rewatch = rewatch or fp is not _ALWAYS
            values[name] = (obj, fp, val)
            if old is None or old[2] != val:
                if changed is None:
                    changed = {}
                changed[name] = val
        deleted = None
        if len(values) > present:
            current = set(keys)
            deleted = tuple([n for n in values if n not in current])
            for n in deleted:
                gone = values.pop(n)
                rewatch = rewatch or gone[1] is not _ALWAYS
                if gone[2][2] is not None:
                    released.append(gone[0])
        for obj in released:
            release(obj)
        st.keys, st.objs = keys, objs
        if rewatch:
            _rewatch(st)
        return changed, deleted

    def _rebound(
        self, st: FrameState, keys: list[Any], objs: list[Any], old_objs: list[Any], pure: bool
    ) -> dict[str, Value] | None:
        """Same names as last time, some bound to other objects (the usual step)."""
        changed: dict[str, Value] | None = None
        values = st.values
        rebound = []
        released = []  # after all renders: a swap `a, b = b, a` keeps both ids
        rewatch = False
        for i in compress(range(len(objs)), map(_is_not, objs, old_objs)):
            name, obj = keys[i], objs[i]
            old = values.get(name)
            if old is None:  # a compiler temporary, not shown
                continue
            rebound.append(name)
            val = self.renderer.value(obj)
            if old[2][2] is not None:
                released.append(old[0])
            fp = _ALWAYS if type(obj) in STABLE else self.fingerprint(obj)
            rewatch = rewatch or fp is not _ALWAYS or old[1] is not _ALWAYS
            values[name] = (obj, fp, val)
            if old[2] != val:
                if changed is None:
                    changed = {}
                changed[name] = val
        for obj in released:
            self.renderer.release(obj)
        if rewatch:
            _rewatch(st)
        watch = st.rerender if pure else st.watch
        if watch:
            changed = self._recheck(st, watch, rebound, changed)
        return changed

    def _recheck(
        self,
        st: FrameState,
        watch: tuple[str, ...],
        skip: Any,
        changed: dict[str, Value] | None = None,
    ) -> dict[str, Value] | None:
        """Did an object bound to the same name as last time change in a way that shows?"""
        values = st.values
        for name in watch:
            if name in skip:
                continue
            obj, fp, old = values[name]
            if fp is not None and _same(obj, fp):
                continue
            val = self.renderer.value(obj)
            self.renderer.release(obj)  # one hold per binding
            values[name] = (obj, self.fingerprint(obj), val)
            if val != old:
                if changed is None:
                    changed = {}
                changed[name] = val
        return changed

    def forget(self, st: FrameState) -> None:
        release = self.renderer.release
        for obj, _, val in st.values.values():
            if val[2] is not None:
                release(obj)
        st.values.clear()
        st.keys, st.objs, st.watch, st.rerender = [], [], (), ()

    def fingerprint(self, obj: Any) -> Any:
        """What must stay identical for obj's rendering to stay the same (None: re-render)."""
        t = type(obj)
        if t in STABLE or default_repr(t):
            return _ALWAYS
        n = self.max_items
        if t in _IMMUTABLE:  # only the rendered head matters
            return _ALWAYS if _stable(list(islice(obj, n))) else None
        if t is dict:
            keys, vals = tuple(islice(obj, n)), tuple(islice(obj.values(), n))
            if _stable(keys) and _stable(vals):
                return (len(obj), keys, vals)
            return None
        if t in _MUTABLE:
            head = tuple(islice(obj, n))
            if _stable(head):
                return (len(obj), head, None)
        return None


def _rewatch(st: FrameState) -> None:
    values = st.values
    st.watch = tuple([n for n, v in values.items() if v[1] is not _ALWAYS])
    st.rerender = tuple([n for n in st.watch if values[n][1] is None])


def _stable(items: list[Any] | tuple[Any, ...]) -> bool:
    """Immutable items whose rendering is fixed: scalars, and tuples of scalars."""
    types_ = set(map(type, items))
    if types_ <= STABLE:
        return True
    if tuple not in types_ or not types_ - {tuple} <= STABLE:
        return False
    tuples = [x for x in items if type(x) is tuple]
    return STABLE.issuperset(map(type, chain.from_iterable(tuples)))


def _same(obj: Any, fp: tuple[int, tuple[Any, ...], tuple[Any, ...] | None]) -> bool:
    """Same length and the same objects in the rendered head (dicts: keys and values)."""
    n, head, values = fp
    if len(obj) != n or not all(map(_is, obj, head)):
        return False
    return values is None or all(map(_is, obj.values(), values))
