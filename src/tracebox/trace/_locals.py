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

from tracebox.trace._effects import Effect
from tracebox.trace._flat import ATOMS
from tracebox.trace.model import Value
from tracebox.trace.render import STABLE, Renderer, default_repr

_new_value = tuple.__new__  # Value(...) without NamedTuple's Python-level __new__

__all__ = ["FrameState", "LocalsDiffer"]

_ALWAYS = object()  # fingerprint: the rendering cannot change while the object is the same
_IMMUTABLE = (tuple, frozenset)
_MUTABLE = (list, set, deque)
_WHOLE = frozenset({list, set, dict})  # rendered by one repr() when they hold few numbers
_is = operator.is_
_is_not = operator.is_not
_UNBOUND = object()
_first = operator.itemgetter(0)


class FrameState:
    """What the recorder knows of one frame."""

    __slots__ = (
        "calls",
        "depth",
        "fid",
        "keys",
        "library",
        "objs",
        "pos",
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
        self.pos: dict[str, int] | None = None  # name -> index in keys, made when needed
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
        self.max_chars = renderer.max_chars

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
        renderer = self.renderer
        release = renderer.release
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
            t = type(obj)  # (inline: see _rebind)
            if t in STABLE:
                fp, val = _ALWAYS, renderer.value(obj)
            elif t is tuple and (val := renderer.flat_tuple(obj)) is not None:  # type: ignore[assignment]
                fp = _ALWAYS
            else:
                val = renderer.value(obj)
                fp = self.fingerprint(obj, renderer.pieces)
            if old is not None and old[2][2] is not None:
                released.append(old[0])
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
        st.keys, st.objs, st.pos = keys, objs, None
        if rewatch:
            _rewatch(st)
        return changed, deleted

    def _rebound(
        self, st: FrameState, keys: list[Any], objs: list[Any], old_objs: list[Any], pure: bool
    ) -> dict[str, Value] | None:
        """Same names as last time, some bound to other objects (the usual step)."""
        indices = compress(range(len(objs)), map(_is_not, objs, old_objs))
        changed, rebound = self._rebind(st, keys, objs, indices)
        watch = st.rerender if pure else st.watch
        if watch:
            changed = self._recheck(st, watch, rebound, changed)
        return changed

    def _rebind(
        self, st: FrameState, keys: list[Any], objs: list[Any], indices: Any
    ) -> tuple[dict[str, Value] | None, list[str]]:
        """Render the locals at ``indices``, bound to other objects than last time."""
        changed: dict[str, Value] | None = None
        values = st.values
        renderer = self.renderer
        rebound = []
        released = []  # after all renders: a swap `a, b = b, a` keeps both ids
        rewatch = False
        for i in indices:
            name, obj = keys[i], objs[i]
            old = values.get(name)
            if old is None:  # a compiler temporary, not shown
                continue
            rebound.append(name)
            # (inline, not a helper: a call level more would move where a program at its
            # recursion limit overflows inside the recorder, and so change its trace)
            t = type(obj)
            if t in STABLE:
                fp, val = _ALWAYS, renderer.value(obj)
            elif t is tuple and (val := renderer.flat_tuple(obj)) is not None:  # type: ignore[assignment]
                fp = _ALWAYS
            else:
                val = renderer.value(obj)
                fp = self.fingerprint(obj, renderer.pieces)
            if old[2][2] is not None:
                released.append(old[0])
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
        return changed, rebound

    def confined(self, st: FrameState, frame: Any, effect: Effect) -> Delta | None:
        """The delta after a line whose effect is known (``_effects``): only the locals it
        may rebind and the objects it may change are looked at, for the same result as
        ``diff``. None: the checks fail (or a local was bound or unbound): use ``diff``."""
        stores, checks, builtins = effect
        keys, objs = st.keys, st.objs
        pos = st.pos
        if pos is None:
            pos = st.pos = {k: i for i, k in enumerate(keys)}
        mutated: list[Any] | None = None
        for name, table in checks:
            i = pos.get(name)
            if i is None:
                return None
            obj = objs[i]
            effect_on = table.get(type(obj))
            if effect_on is None:
                return None
            if effect_on:
                if mutated is None:
                    mutated = []
                mutated.append(obj)
        if builtins:
            g, b = frame.f_globals, frame.f_builtins
            for name, fn in builtins:
                if name in g or b.get(name) is not fn:
                    return None
            if mutated is not None and any(o is g or o is b for o in mutated):
                return None  # the line may have shadowed a builtin it calls
        changed: dict[str, Value] | None = None
        rebound: list[str] = []
        if stores:
            ns = frame.f_locals
            moved = []
            for name in stores:
                obj = ns.get(name, _UNBOUND)
                i = pos.get(name)
                if i is None or obj is _UNBOUND:
                    if i is None and obj is _UNBOUND:
                        continue
                    return None  # bound or unbound: the names change
                if obj is not objs[i]:
                    moved.append((i, obj))
            if moved:
                if len(moved) > 1:
                    moved.sort(key=_first)  # the order of keys, as diff goes
                for i, obj in moved:
                    objs[i] = obj
                changed, rebound = self._rebind(st, keys, objs, [m[0] for m in moved])
        watch: tuple[str, ...] | list[str]
        if mutated is None:
            watch = st.rerender
        else:  # the names bound to a changed object (it may have several), in watch order
            values = st.values
            if len(mutated) == 1:
                one = mutated[0]
                watch = [n for n in st.watch if (v := values[n])[1] is None or v[0] is one]
            else:
                ids = set(map(id, mutated))  # the objects are alive: ids are theirs
                watch = [n for n in st.watch if (v := values[n])[1] is None or id(v[0]) in ids]
        if watch:
            changed = self._recheck(st, watch, rebound, changed)
        return changed, None

    def _recheck(
        self,
        st: FrameState,
        watch: tuple[str, ...] | list[str],
        skip: Any,
        changed: dict[str, Value] | None = None,
    ) -> dict[str, Value] | None:
        """Did an object bound to the same name as last time change in a way that shows?"""
        values = st.values
        for name in watch:
            if name in skip:
                continue
            obj, fp, old = values[name]
            if fp is not None:
                if _same(obj, fp):
                    continue
                if fp[3] is not None:
                    fp, val = self._more_items(obj, fp, old)
                    if fp is not None:
                        values[name] = (obj, fp, val)
                        if val != old:
                            if changed is None:
                                changed = {}
                            changed[name] = val
                        continue
            if type(obj) in _WHOLE:
                atoms = self._atoms(obj)
                if atoms is not None:  # same object: same type name and id
                    fp, text = atoms
                    val = _new_value(Value, (text, old[1], old[2], False))
                    values[name] = (obj, fp, val)
                    if val != old:
                        if changed is None:
                            changed = {}
                        changed[name] = val
                    continue
            val = self.renderer.value(obj)
            self.renderer.release(obj)  # one hold per binding
            values[name] = (obj, self.fingerprint(obj, self.renderer.pieces), val)
            if val != old:
                if changed is None:
                    changed = {}
                changed[name] = val
        return changed

    def _atoms(self, obj: Any) -> tuple[Any, str] | None:
        """Fingerprint and text of an exact list, set or dict of at most max_items numbers
        (keys and values) whose repr is at most max_chars long: the renderer gives it
        as ``repr``, and its fingerprint holds every item. None: another container."""
        if len(obj) > self.max_items or not ATOMS.issuperset(map(type, obj)):
            return None
        if type(obj) is dict:
            if not ATOMS.issuperset(map(type, obj.values())):
                return None
            vals: tuple[Any, ...] | None = tuple(obj.values())
        else:
            vals = None
        try:
            text = repr(obj)
        except ValueError:  # an int too long for repr(): the renderer marks it
            return None
        if len(text) > self.max_chars:
            return None
        return (len(obj), tuple(obj), vals, None), text

    def _more_items(self, obj: Any, fp: Any, old: Value) -> tuple[Any, Value]:
        """A container cut by item count that only grew or shrank past the items shown
        (a dict or list appended to): its text is the old one with another count.
        (None, old): the shown items changed."""
        _, head, vals, pieces = fp
        m = len(obj)
        if m <= pieces[1]:
            return None, old
        limit = self.max_items
        new = tuple(islice(obj, limit))
        if len(new) != len(head) or not all(map(_is, new, head)):
            return None, old
        if vals is not None and not all(map(_is, islice(obj.values(), limit), vals)):
            return None, old
        text = self.renderer.more_items(pieces, m)
        return (m, head, vals, pieces), _new_value(Value, (text, old[1], old[2], True))

    def forget(self, st: FrameState) -> None:
        renderer = self.renderer
        release = renderer.release
        for obj, _, val in st.values.values():
            if val[2] is not None:
                release(obj)
        st.values.clear()
        st.keys, st.objs, st.watch, st.rerender, st.pos = [], [], (), (), None

    def fingerprint(self, obj: Any, pieces: tuple[str, int, str] | None = None) -> Any:
        """What must stay identical for obj's rendering to stay the same (None: re-render).
        Containers: (length, first items, first values of a dict, ``pieces`` of its text
        when cut by item count)."""
        t = type(obj)
        if t in STABLE or default_repr(t):
            return _ALWAYS
        n = self.max_items
        if t in _IMMUTABLE:  # only the rendered head matters
            return _ALWAYS if _stable(list(islice(obj, n))) else None
        if t is dict:
            keys, vals = tuple(islice(obj, n)), tuple(islice(obj.values(), n))
            if _stable(keys) and _stable(vals):
                return (len(obj), keys, vals, pieces)
            return None
        if t in _MUTABLE:
            head = tuple(islice(obj, n))
            if _stable(head):
                return (len(obj), head, None, pieces)
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


def _same(obj: Any, fp: tuple[int, tuple[Any, ...], tuple[Any, ...] | None, Any]) -> bool:
    """Same length and the same objects in the rendered head (dicts: keys and values)."""
    n, head, values, _ = fp
    if len(obj) != n or not all(map(_is, obj, head)):
        return False
    return values is None or all(map(_is, obj.values(), values))
