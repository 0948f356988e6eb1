"""Python Tutor's trace JSON (``pg_logger.py``'s output; ``docs/opt-trace-format.md``).

::

    {"code": source, "trace": [
        {"line": n, "event": "step_line" | "call" | "return" | "exception",
         "func_name": name, "globals": {name: encoded}, "ordered_globals": [name, ...],
         "stack_to_render": [{"func_name", "frame_id", "encoded_locals", "ordered_varnames",
                              "is_highlighted", "is_parent", "is_zombie",
                              "parent_frame_id_list", "unique_hash"}, ...],
         "heap": {"id": heap object}, "stdout": "",
         "exception_msg": "ZeroDivisionError: division by zero"   (exception events)},
        ...,
        {"event": "uncaught_exception" | "instruction_limit_reached", "exception_msg": ...}]}

What we follow from pg_logger: the module's ``call`` is not an entry (the trace starts at
its first line); the ``<module>`` frame's locals are ``globals`` and the frames above the
innermost one are the stack, outermost first, the innermost highlighted; a returning frame
shows ``__return__`` last; ``__builtins__``, ``__name__``, ``__doc__``, ``__package__`` (and
``__module__`` in frames) are hidden; a class body and everything it calls is skipped; an
``exception`` entry followed by the module's ``return`` loses that ``return``; a trace that
already shows an exception gets no ``uncaught_exception`` entry; a cut trace ends with
``instruction_limit_reached``. Library calls are not shown (pg_logger traces only the
user's module); a user function a library calls back is shown on the stack above its caller.

What differs, because a trace holds bounded reprs rather than objects:

- ``int``, ``float``, ``bool``, ``None`` and ``str`` values that were not cut are encoded as
  Tutor encodes them (the repr parsed back; floats rounded to 4 places, ``inf``, ``nan`` and
  whole floats as ``["SPECIAL_FLOAT", text]``). Everything else is ``["REF", id]`` with the
  trace's normalised object id; values without one (a cut string, ``bytes``, ``complex``)
  get an id above the trace's, one per distinct (type, repr).
- Heap objects: an exact ``list``, ``tuple``, ``set`` or ``dict`` whose repr was not cut and
  holds only such primitives is Tutor's ``["LIST", ...]`` (``TUPLE``, ``SET``,
  ``["DICT", [k, v], ...]``). Any other object is ``[type name, repr]``, Tutor's encoding of
  an object it does not look inside (the frontend draws a box labelled with the type around
  the text). ``IMPORTED_FAUX_PRIMITIVE`` is not used: Tutor puts it inline, not on the heap,
  and its label is only "imported object". A heap object is drawn from the object's latest
  rendering, so a list a callee changed shows the change in its caller's frame too.
- Frame ids are 1, 2, ... in order of first call (a resumed generator keeps its id); there
  are no closures' parent frames or zombie frames (``is_parent``, ``is_zombie`` false).
- ``ordered_varnames`` and ``ordered_globals`` follow first binding, not ``co_varnames``.
- ``exception_msg`` is rebuilt from the exception's repr (``Type: str(args)``), so a class
  with its own ``__str__`` may read differently; when the repr cannot be parsed it is the
  repr.
- ``stdout`` is always ``""``: output is not recorded per step (RunResult has it whole).
- ``code`` is the source of the file of the first recorded step. Steps in other user files
  (a function from an earlier cell) are kept, their ``line`` numbers refer to their own file.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

from tracebox.trace.model import FrameInfo, Trace, Value

__all__ = ["to_tutor"]

_EVENTS = {"call": "call", "line": "step_line", "return": "return", "exception": "exception"}
_HIDDEN = frozenset({"__builtins__", "__name__", "__exception__", "__doc__", "__package__"})
_HIDDEN_GLOBALS = _HIDDEN | {"__return__"}
_HIDDEN_LOCALS = _HIDDEN | {"__module__"}
# Heap object tags the frontend interprets: an opaque type of that name gets a suffix.
_TAGS = frozenset(
    {
        "LIST", "TUPLE", "SET", "DICT", "INSTANCE", "INSTANCE_PPRINT", "CLASS", "FUNCTION",
        "JS_FUNCTION", "HEAP_PRIMITIVE", "C_STRUCT", "C_ARRAY", "C_MULTIDIMENSIONAL_ARRAY",
        "C_DATA", "REF", "SPECIAL_FLOAT", "JS_SPECIAL_VAL", "IMPORTED_FAUX_PRIMITIVE",
    }
)  # fmt: skip
_CONTAINERS = {"list": ("LIST", list), "tuple": ("TUPLE", tuple), "set": ("SET", set)}
_PRIMITIVE_TYPES = (int, float, str, bool, type(None))
_NOT_PRIMITIVE = object()


def to_tutor(trace: Trace) -> dict[str, Any]:
    """The trace as Python Tutor's trace JSON (see the module docstring)."""
    return _Builder(trace).build()


class _Builder:
    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.held: dict[int, dict[str, Value]] = {}  # frame id -> locals, deltas replayed
        self.latest: dict[int, Value] = {}  # object id -> its most recent rendering
        self.tutor_ids: dict[int, int] = {}  # frame id -> Tutor frame id
        self.first_lines: dict[int, int] = {}  # frame id -> line of its first call
        self.names: dict[int, str] = {}  # frame id -> the name its stack frame shows
        self.global_order: dict[str, None] = {}  # globals in order of first appearance
        self.made_up: dict[tuple[str, str], int] = {}  # (type, repr) -> id, id-less values
        self.class_starts: dict[str, frozenset[tuple[int, str]]] = {}  # file -> (line, name)
        self.next_id = _max_id(trace) + 1
        self.parsed: dict[str, Any] = {}  # repr -> ast.literal_eval of it: parsing is the cost

    def build(self) -> dict[str, Any]:
        trace = self.trace
        entries: list[dict[str, Any]] = []
        stack: list[int] = []  # frame ids of the live user frames, outermost first
        skipping: int | None = None  # the class body frame whose steps are left out
        code_file: str | None = None
        for event, fid, _depth, line, _hits, changed, deleted, value, _arc in trace.rows:
            info = trace.frames[fid]
            if info.library:
                continue
            if code_file is None:
                code_file = info.file
            self._replay(fid, changed, deleted, value)
            if event == "call":
                stack.append(fid)
                self.first_lines.setdefault(fid, line)
                if skipping is None and self._class_body(info, line):
                    skipping = fid
            if skipping is None and not (event == "call" and info.function == "<module>"):
                entries.append(self._entry(event, fid, line, value, stack))
            if event == "return":
                if fid == skipping:
                    skipping = None
                if fid in stack:  # a truncated trace may lack the matching call: be lenient
                    stack.remove(fid)
        if (
            len(entries) >= 2
            and entries[-2]["event"] == "exception"
            and entries[-1]["event"] == "return"
            and entries[-1]["func_name"] == "<module>"
        ):
            entries.pop()  # pg_logger's finalize(): the uncaught exception is the last step
        if trace.truncation is not None:
            t = trace.truncation
            entries.append(
                {
                    "event": "instruction_limit_reached",
                    "exception_msg": f"Stopped after {t.step} steps ({t.reason}); "
                    f"not recorded: {t.dropped}",
                }
            )
        elif trace.error is not None and not any(e["event"] == "exception" for e in entries):
            entries.append(
                {"event": "uncaught_exception", "exception_msg": _exception_msg(trace.error)}
            )
        code = trace.sources.get(code_file, "") if code_file is not None else ""
        return {"code": code, "trace": entries}

    def _replay(
        self,
        fid: int,
        changed: dict[str, Value] | None,
        deleted: tuple[str, ...] | None,
        value: Value | None,
    ) -> None:
        now = self.held.setdefault(fid, {})
        for name in deleted or ():
            now.pop(name, None)
        for name, v in (changed or {}).items():
            now[name] = v
            if v.id is not None:
                self.latest[v.id] = v
        if value is not None and value.id is not None:
            self.latest[value.id] = value

    def _class_body(self, info: FrameInfo, line: int) -> bool:
        """Is this call a class body's? (pg_logger asks the same of the called code's first
        line.) A class body's call is at its ``class`` line, or at its first decorator's."""
        starts = self.class_starts.get(info.file)
        if starts is None:
            source = self.trace.sources.get(info.file, "")
            starts = self.class_starts[info.file] = _class_starts(source)
        return (line, _co_name(info.function)) in starts

    def _entry(
        self, event: str, fid: int, line: int, value: Value | None, stack: list[int]
    ) -> dict[str, Any]:
        frames = self.trace.frames
        heap: dict[str, Any] = {}
        inner = next((i for i in range(len(stack) - 1, -1, -1) if _is_module(frames, stack[i])), -1)
        globals_: dict[str, Any] = {}
        if inner >= 0:
            for name, v in self.held.get(stack[inner], {}).items():
                if name not in _HIDDEN_GLOBALS:
                    globals_[name] = self._encode(v, heap)
                    self.global_order.setdefault(name)
        rendered = stack[inner + 1 :]
        stack_to_render = []
        for i, f in enumerate(rendered):
            encoded: dict[str, Any] = {}
            for name, v in self.held.get(f, {}).items():
                if name not in _HIDDEN_LOCALS:
                    encoded[name] = self._encode(v, heap)
            order = list(encoded)
            if event == "return" and f == fid:
                # pg_logger binds __return__ in the frame; None when it unwinds by exception
                encoded["__return__"] = None if value is None else self._encode(value, heap)
                order.append("__return__")
            name = self._func_name(f)
            tutor_id = self.tutor_ids.setdefault(f, len(self.tutor_ids) + 1)
            stack_to_render.append(
                {
                    "func_name": name,
                    "is_parent": False,
                    "frame_id": tutor_id,
                    "parent_frame_id_list": [],
                    "encoded_locals": encoded,
                    "ordered_varnames": order,
                    "is_zombie": False,
                    "is_highlighted": i == len(rendered) - 1,
                    "unique_hash": f"{name}_f{tutor_id}",
                }
            )
        entry: dict[str, Any] = {
            "line": line,
            "event": _EVENTS[event],
            "func_name": _co_name(frames[fid].function),
            "globals": globals_,
            "ordered_globals": [n for n in self.global_order if n in globals_],
            "stack_to_render": stack_to_render,
            "heap": heap,
            "stdout": "",
        }
        if event == "exception" and value is not None:
            entry["exception_msg"] = _exception_msg(value)
        return entry

    def _func_name(self, fid: int) -> str:
        """The name a stack frame shows (computed once per frame)."""
        name = self.names.get(fid)
        if name is None:
            name = _co_name(self.trace.frames[fid].function)
            if name == "<lambda>":  # pg_logger tells lambdas apart by their line
                name += f" <line {self.first_lines.get(fid, 0)}>"
            self.names[fid] = name
        return name

    def _encode(self, v: Value, heap: dict[str, Any]) -> Any:
        """A value as Tutor encodes it; objects go on ``heap`` and are referred to."""
        prim = _primitive(v, self.literal)
        if prim is not _NOT_PRIMITIVE:
            return prim
        if v.id is not None:
            oid, shown = v.id, self.latest.get(v.id, v)
        else:
            oid = self.made_up.get((v.type, v.repr), 0)
            if not oid:
                oid = self.made_up[v.type, v.repr] = self.next_id
                self.next_id += 1
            shown = v
        where = str(oid)
        if where not in heap:
            heap[where] = _heap_object(shown, self.literal)
        return ["REF", oid]

    def literal(self, text: str) -> Any:
        """``ast.literal_eval(text)``, or ``_NOT_PRIMITIVE``; remembered, not recomputed."""
        got = self.parsed.get(text, self)
        if got is self:
            got = self.parsed[text] = _literal(text)
        return got


def _class_starts(source: str) -> frozenset[tuple[int, str]]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return frozenset()
    return frozenset(
        (min([node.lineno] + [d.lineno for d in node.decorator_list]), node.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    )


def _max_id(trace: Trace) -> int:
    """The largest object id in the trace (0 if none): made-up ids start above it."""
    top = 0
    if trace.error is not None and trace.error.id is not None:
        top = trace.error.id
    for row in trace.rows:
        for v in (row[5] or {}).values():
            if v.id is not None and v.id > top:
                top = v.id
        if row[7] is not None and row[7].id is not None and row[7].id > top:
            top = row[7].id
    return top


def _is_module(frames: tuple[FrameInfo, ...], fid: int) -> bool:
    return frames[fid].function == "<module>"


def _co_name(function: str) -> str:
    """The code's name (``co_name``, what pg_logger shows) from its qualified name."""
    return function.rsplit(".", 1)[-1]


def _float(x: float) -> Any:
    """pg_encoder's float encoding."""
    if math.isinf(x):
        return ["SPECIAL_FLOAT", "Infinity" if x > 0 else "-Infinity"]
    if math.isnan(x):
        return ["SPECIAL_FLOAT", "NaN"]
    if x == int(x):
        return ["SPECIAL_FLOAT", f"{x:.1f}"]
    return round(x, 4)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_PRIMITIVE


def _primitive(v: Value, literal: Callable[[str], Any]) -> Any:
    """The value as a Tutor primitive, or ``_NOT_PRIMITIVE``."""
    if v.cut:
        return _NOT_PRIMITIVE
    t, text = v.type, v.repr
    if t == "NoneType":
        return None
    if t == "bool":
        return text == "True"
    if t == "int":
        try:
            return int(text)
        except ValueError:
            return _NOT_PRIMITIVE
    if t == "float":
        try:
            return _float(float(text))
        except ValueError:
            return _NOT_PRIMITIVE
    if t == "str":
        s = literal(text)
        return s if type(s) is str else _NOT_PRIMITIVE
    return _NOT_PRIMITIVE


def _item(x: Any) -> Any:
    return _float(x) if type(x) is float else x


def _heap_object(v: Value, literal: Callable[[str], Any]) -> list[Any]:
    """A heap object: a container of primitives as Tutor's own, anything else opaque."""
    if not v.cut:
        if v.type in _CONTAINERS:
            tag, kind = _CONTAINERS[v.type]
            items = literal(v.repr)
            if type(items) is kind and all(type(x) in _PRIMITIVE_TYPES for x in items):
                return [tag, *(_item(x) for x in items)]
        elif v.type == "dict":
            items = literal(v.repr)
            if type(items) is dict and all(
                type(k) in _PRIMITIVE_TYPES and type(x) in _PRIMITIVE_TYPES
                for k, x in items.items()
            ):
                return ["DICT", *([_item(k), _item(x)] for k, x in items.items())]
    label = f"{v.type} object" if v.type in _TAGS else v.type
    return [label, v.repr]


def _exception_msg(v: Value) -> str:
    """``Type: message`` as pg_logger writes it, the message rebuilt from the repr."""
    name = v.type.rsplit(".", 1)[-1]
    text = v.repr
    if v.cut or not (text.startswith(name + "(") and text.endswith(")")):
        return text
    inner = text[len(name) + 1 : -1]
    args = _literal(f"({inner},)") if inner else ()
    if type(args) is not tuple:
        return text
    if not args:
        return f"{name}: "
    if len(args) == 1:
        message = repr(args[0]) if name == "KeyError" else str(args[0])
        return f"{name}: {message}"
    return f"{name}: {args}"
