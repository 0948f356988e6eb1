"""Run one cell of user code in a namespace, as a notebook would, inside the worker."""

from __future__ import annotations

import ast
import builtins
import collections
import linecache
import os
import sys
import traceback
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from tracebox.trace.recorder import Recorder

if TYPE_CHECKING:
    from tracebox.trace.model import Trace

T = TypeVar("T")

Outcome = dict[str, Any]


def _recorder(wire: Mapping[str, Any]) -> Recorder:
    """A recorder for validated-on-the-host settings (``ValueError`` if malformed)."""
    from tracebox.trace.settings import Settings

    return Recorder(Settings.from_wire(wire))


def fresh_namespace() -> dict[str, Any]:
    """The globals of a real ``__main__`` module, so classes defined in cells can be pickled."""
    module = types.ModuleType("__main__")
    module.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = module
    return module.__dict__


def bounded_repr(value: object, limit: int) -> str:
    """``repr`` cut at ``limit`` characters, saying what was cut; never raises."""
    if isinstance(value, str | bytes | bytearray) and len(value) > limit:
        text, total = (
            repr(value[:limit]),
            f"{len(value)} {'chars' if isinstance(value, str) else 'bytes'}",
        )
    else:
        try:
            text = repr(value)
        except Exception as exc:  # a user __repr__ may fail; that is not the run's failure
            return f"<repr of {type(value).__name__} failed: {type(exc).__name__}: {exc}>"
        total = f"{len(text)} chars"
    if len(text) > limit:
        return f"{text[:limit]}... [tracebox: repr truncated to {limit} of {total}]"
    return text


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _drop_own_frames(te: traceback.TracebackException, seen: set[int]) -> None:
    """Remove tracebox's frames (cell runner, interrupt handler) from every chained stack."""
    if id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if not f.filename.startswith(_PACKAGE)]
    )
    for chained in (te.__cause__, te.__context__):
        if chained is not None:
            _drop_own_frames(chained, seen)


def _user_traceback(exc: BaseException, compiling: bool) -> str:
    try:
        if compiling:  # the source never ran: where the parser failed is all that matters
            return "".join(traceback.format_exception_only(type(exc), exc))
        te = traceback.TracebackException.from_exception(exc)
        _drop_own_frames(te, set())
        return "".join(te.format())
    except Exception as fmt_exc:  # a hostile __str__ must not break the worker
        return f"{type(exc).__name__}: <formatting failed: {type(fmt_exc).__name__}>"


def describe(exc: BaseException, *, compiling: bool = False) -> dict[str, str]:
    try:
        message = str(exc)
    except Exception:
        message = "<str() of the exception failed>"
    return {
        "type": type(exc).__name__,
        "message": message,
        "traceback": _user_traceback(exc, compiling or isinstance(exc, SyntaxError)),
    }


class CellRunner:
    """Holds the session namespace and runs cells in it."""

    def __init__(self) -> None:
        self.namespace = fresh_namespace()
        self.count = 0
        self._file = ""
        self.trace: Trace | None = None
        """The recording of the last traced run, kept even when the run was interrupted."""

    def compile(self, source: str) -> tuple[types.CodeType, types.CodeType | None]:
        """The cell's body and, when it ends in an expression, that expression apart."""
        tree = self._parse(source)
        last: types.CodeType | None = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(ast.Expression(tree.body[-1].value), self._file, "eval")
            del tree.body[-1]
        return compile(tree, self._file, "exec"), last

    def compile_single(self, source: str) -> tuple[types.CodeType, bool]:
        """The cell as ONE code object (a traced run shows one ``<module>`` frame), in the
        REPL's mode: each top-level expression statement hands its value to
        ``sys.displayhook``. Also says whether the cell ends in an expression."""
        tree = self._parse(source)
        ends_in_expr = bool(tree.body) and isinstance(tree.body[-1], ast.Expr)
        return compile(ast.Interactive(tree.body), self._file, "single"), ends_in_expr

    def _parse(self, source: str) -> ast.Module:
        self.count += 1
        self._file = filename = f"<cell-{self.count}>"
        tree = ast.parse(source, filename, "exec")
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        return tree

    def run(
        self,
        source: str,
        *,
        stateful: bool,
        max_value_chars: int,
        trace: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Run ``source``; user exceptions become the outcome, KeyboardInterrupt propagates.

        With ``trace`` (``TraceConfig.to_wire()``) the run is recorded into ``self.trace``;
        recording stops however the run ends, so an interrupted run keeps its partial trace.
        """
        self.trace = None
        if not stateful:
            self.namespace = fresh_namespace()
        try:
            if trace is not None:
                recorder = _recorder(trace)
                single, ends_in_expr = self.compile_single(source)
            else:
                body, last = self.compile(source)
        except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
            return {"status": "error", "error": describe(exc, compiling=True)}
        ns = self.namespace
        try:
            if trace is None:
                exec(body, ns)
                value = eval(last, ns) if last is not None else None
            else:
                value = self._traced(recorder, single, ends_in_expr)
        except KeyboardInterrupt:
            raise
        except MemoryError as exc:
            return {"status": "memory", "error": describe(exc)}
        except BaseException as exc:  # SystemExit too: it is the cell's outcome, not ours
            return {"status": "error", "error": describe(exc)}
        shown = None if value is None else bounded_repr(value, max_value_chars)
        return {"status": "ok", "value": shown}

    def _traced(self, recorder: Recorder, code: types.CodeType, ends_in_expr: bool) -> object:
        """Run ``code`` under ``recorder``; the trace is kept however the run ends."""
        # A C callable as the display hook: invisible to the tracer, keeps only the last value
        shown: collections.deque[object] = collections.deque(maxlen=1)
        saved, sys.displayhook = sys.displayhook, shown.append
        try:
            self.recorded(recorder, lambda: exec(code, self.namespace))
        finally:
            sys.displayhook = saved
        return shown[0] if ends_in_expr and shown else None

    def recorded(self, recorder: Recorder | Mapping[str, Any], action: Callable[[], T]) -> T:
        """``action()`` under a recorder (or its wire settings); the trace lands in
        ``self.trace`` however the action ends."""
        from tracebox.trace.recorder import RecorderState

        if not isinstance(recorder, Recorder):
            recorder = _recorder(recorder)
        try:
            with recorder:
                return action()
        finally:
            if recorder.state is RecorderState.DONE:  # not if it could not start
                self.trace = recorder.trace()
