"""Run one cell of user code in a namespace, as a notebook would, inside the worker."""

from __future__ import annotations

import ast
import builtins
import linecache
import os
import sys
import traceback
import types
from typing import Any

Outcome = dict[str, Any]


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

    def compile(self, source: str) -> tuple[types.CodeType, types.CodeType | None]:
        self.count += 1
        filename = f"<cell-{self.count}>"
        tree = ast.parse(source, filename, "exec")
        last: types.CodeType | None = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(ast.Expression(tree.body[-1].value), filename, "eval")
            del tree.body[-1]
        body = compile(tree, filename, "exec")
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        return body, last

    def run(self, source: str, *, stateful: bool, max_value_chars: int) -> Outcome:
        """Run ``source``; user exceptions become the outcome, KeyboardInterrupt propagates."""
        if not stateful:
            self.namespace = fresh_namespace()
        try:
            body, last = self.compile(source)
        except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
            return {"status": "error", "error": describe(exc, compiling=True)}
        ns = self.namespace
        try:
            exec(body, ns)
            value = eval(last, ns) if last is not None else None
        except KeyboardInterrupt:
            raise
        except MemoryError as exc:
            return {"status": "memory", "error": describe(exc)}
        except BaseException as exc:  # SystemExit too: it is the cell's outcome, not ours
            return {"status": "error", "error": describe(exc)}
        shown = None if value is None else bounded_repr(value, max_value_chars)
        return {"status": "ok", "value": shown}
