"""Small programs for the recorder's tests, and an independent settrace reference tracer.

The reference is deliberately naive (a depth counter, no shared code with tracebox): it
reports what ``sys.settrace`` sees in user code, with a call into non-user code reported
as one call and one return, as the recorder's default is.
"""

from __future__ import annotations

import gc
import inspect
import linecache
import re
import sys
import textwrap
import types
from typing import Any

USER_FILE = "<cell-1>"

PROGRAMS: dict[str, str] = {
    "recursion": """
        def fib(n):
            if n < 2:
                return n
            return fib(n - 1) + fib(n - 2)

        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)

        result = fib(5) + fact(4)
    """,
    "generators": """
        def count_up(n):
            i = 0
            while i < n:
                got = yield i
                if got:
                    i += got
                i += 1
            return "done"

        def delegate():
            r = yield from count_up(2)
            yield r

        total = 0
        for v in count_up(3):
            total += v
        g = count_up(10)
        first = next(g)
        jumped = g.send(3)
        g.close()
        both = list(delegate())
        squares = sum(x * x for x in range(4))
        h = count_up(5)
        next(h)
        try:
            h.throw(ValueError("into the generator"))
        except ValueError as e:
            caught = str(e)
    """,
    "exceptions_caught": """
        class Oops(Exception):
            pass

        def risky(x):
            if x > 1:
                raise Oops(f"too big: {x}")
            return x

        def wrapper(x):
            try:
                return risky(x)
            except Oops:
                raise
            finally:
                cleanup = True

        out = []
        for x in range(4):
            try:
                out.append(wrapper(x))
            except Oops as err:
                out.append(str(err))
            else:
                out.append("ok")
        try:
            try:
                1 / 0
            except ZeroDivisionError as z:
                raise KeyError("chained") from z
        except KeyError:
            chained = True
        d = {}
        value = d.get("missing", 5)
    """,
    "uncaught": """
        def inner(values):
            total = 0
            for v in values:
                total += 10 // v
            return total

        def outer():
            data = [5, 2, 0, 1]
            return inner(data)

        print("before the failure")
        outer()
        print("never printed")
    """,
    "comprehensions": """
        xs = [1, 2, 3, 4]
        squares = [x * x for x in xs]
        evens = {x for x in xs if x % 2 == 0}
        table = {x: [y for y in range(x)] for x in xs[:3]}
        lazy = list(x + 1 for x in xs)
        def in_function(n):
            pairs = [(i, j) for i in range(n) for j in range(i)]
            return pairs
        result = in_function(3)
    """,
    "with_statements": """
        import contextlib

        class Managed:
            def __init__(self, name):
                self.name = name
                self.log = []
            def __enter__(self):
                self.log.append("enter")
                return self
            def __exit__(self, kind, exc, tb):
                self.log.append("exit")
                return kind is ValueError

        @contextlib.contextmanager
        def scoped(tag):
            events = [tag]
            try:
                yield events
            finally:
                events.append("closed")

        with Managed("a") as m:
            m.log.append("body")
        with Managed("b") as n:
            raise ValueError("suppressed")
        with scoped("t") as ev:
            ev.append("inside")
    """,
    "try_finally": """
        def first_even(values):
            for v in values:
                try:
                    if v % 2 == 0:
                        return v
                finally:
                    seen = v
            return None

        def loops():
            found = []
            for i in range(6):
                if i == 1:
                    continue
                if i == 4:
                    break
                found.append(i)
            else:
                found.append("no break")
            k = 0
            while True:
                k += 1
                if k >= 3:
                    break
            return found, k

        def finally_wins():
            try:
                return "try"
            finally:
                return "finally"

        a = first_even([1, 3, 4, 5])
        b = loops()
        c = finally_wins()
    """,
    "classes": """
        class Shape:
            sides = 0
            def __init__(self, name):
                self.name = name
            def describe(self):
                return f"{self.name} with {self.sides} sides"
            def __repr__(self):
                return f"Shape({self.name!r})"

        class Square(Shape):
            sides = 4
            def __init__(self, size):
                super().__init__("square")
                self.size = size
            @property
            def area(self):
                return self.size ** 2

        sq = Square(3)
        text = sq.describe()
        area = sq.area
        shapes = [Shape("blob"), sq]
    """,
    "closures": """
        def make_counter(start):
            count = start
            def step(by=1):
                nonlocal count
                count += by
                return count
            return step

        def twice(f):
            def wrapped(*args):
                f(*args)
                return f(*args)
            return wrapped

        counter = make_counter(10)
        counter()
        counter(5)
        add = twice(lambda a, b: a + b)
        s = add(2, 3)
        ordered = sorted([3, 1, 2], key=lambda v: -v)
    """,
    "async_functions": """
        import asyncio

        async def fetch(i):
            await asyncio.sleep(0)
            return i * 2

        async def main():
            a = await fetch(1)
            results = await asyncio.gather(fetch(2), fetch(3))
            return a + sum(results)

        answer = asyncio.run(main())
    """,
    "thread": """
        import threading

        class Box:  # object's repr: the main thread's steps cannot see the worker's progress
            pass

        def work(box):
            go.wait()
            for i in range(50):
                box.items.append(i)

        go = threading.Event()
        box = Box()
        box.items = []
        t = threading.Thread(target=work, args=(box,), name="worker")
        t.start()
        go.set(); t.join()  # one step: no step sees the worker half done
        size = len(box.items)
    """,
    "one_line_loops": """
        s = 0
        for i in range(4): s += i
        while s > 2: s -= 2
        words = (
            "multi"
            + "line"
        )
        value = max(
            1,
            2,
        )
    """,
    "mutations": """
        import collections

        def grow(xs):
            xs.append("g")

        xs = [1]
        d = {"a": 1}
        s = {1}
        grow(xs)
        xs += [2]
        xs[0] = 0
        del d["a"]
        d["b"] = [1]
        d["b"].append(2)
        alias = d["b"]
        y = alias[0] + 1
        nested = [alias, (1, 2)]
        alias.append(3)
        it = iter(xs.pop, 0)
        for v in it:
            y = y + 1
        s.add(2)
        s |= {3}
        dd = collections.defaultdict(list)
        dd["k"]
        z = dd["q"]
        dq = collections.deque([1, 2, 3])
        dq.rotate(1)
        first = dq[0]
        done = len(xs)
    """,
    "prints": """
        for i in range(3):
            print("line", i)
        message = "printed"
    """,
}


def compile_program(name: str) -> types.CodeType:
    """The program's code, its source registered in linecache (where recorders, like
    tracebacks, look for it): whatever an earlier test left there under the same name
    must not leak into this trace."""
    source = textwrap.dedent(PROGRAMS[name])
    linecache.cache[USER_FILE] = (len(source), None, source.splitlines(True), USER_FILE)
    return compile(source, USER_FILE, "exec")


Event = tuple[str, str, int, int]  # event, function, line, depth


def reference(code: types.CodeType) -> tuple[list[Event], BaseException | None]:
    """What settrace reports for user code (files named ``<cell-...>``)."""
    events: list[Event] = []
    depth = 0

    def user(frame: types.FrameType) -> bool:
        return frame.f_code.co_filename.startswith("<cell-")

    def glob(frame: types.FrameType, event: str, arg: Any) -> Any:
        nonlocal depth
        name = frame.f_code.co_qualname
        if user(frame):
            events.append(("call", name, frame.f_lineno, depth))
            depth += 1
            return local
        if frame.f_back is not None and user(frame.f_back):
            events.append(("call", name, frame.f_code.co_firstlineno, depth))
            depth += 1
            frame.f_trace_lines = False
            return library
        return None

    def local(frame: types.FrameType, event: str, arg: Any) -> Any:
        nonlocal depth
        name = frame.f_code.co_qualname
        if event == "line":
            events.append(("line", name, frame.f_lineno, depth - 1))
        elif event == "exception":
            events.append(("exception", name, frame.f_lineno, depth - 1))
        elif event == "return":
            depth -= 1
            events.append(("return", name, frame.f_lineno, depth))
        return local

    def library(frame: types.FrameType, event: str, arg: Any) -> Any:
        nonlocal depth
        if event == "return":
            depth -= 1
            events.append(("return", frame.f_code.co_qualname, frame.f_code.co_firstlineno, depth))
        return library

    error = None
    gc.collect()  # garbage of earlier tests must not run finalizers inside the reference
    sys.settrace(glob)
    try:
        exec(code, {"__name__": "__main__"})
    except Exception as exc:
        error = exc
    finally:
        sys.settrace(None)
    return events, error


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def reference_locals(code: types.CodeType) -> list[dict[str, str]]:
    """At every step (as ``reference`` counts them): each local of that frame, as repr().

    A module frame shows the globals its code names, without dunders, like the recorder.
    Values are plain ``repr`` with addresses removed; compare only short ones.
    """
    views: list[dict[str, str]] = []

    def snapshot(frame: types.FrameType) -> None:
        code = frame.f_code
        if code.co_flags & inspect.CO_OPTIMIZED:
            ns = dict(frame.f_locals)
        else:
            space = frame.f_globals if code.co_name == "<module>" else frame.f_locals
            ns = {n: space[n] for n in code.co_names if not n.startswith("__") and n in space}
        views.append({k: _plain_repr(v) for k, v in ns.items() if k[:1] != "."})

    def glob(frame: types.FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename.startswith("<cell-"):
            snapshot(frame)
            return local
        if frame.f_back is not None and frame.f_back.f_code.co_filename.startswith("<cell-"):
            views.append({})
            frame.f_trace_lines = False
            return library
        return None

    def local(frame: types.FrameType, event: str, arg: Any) -> Any:
        if event in ("line", "return", "exception"):
            snapshot(frame)
        return local

    def library(frame: types.FrameType, event: str, arg: Any) -> Any:
        if event == "return":
            views.append({})
        return library

    gc.collect()
    sys.settrace(glob)
    try:
        exec(code, {"__name__": "__main__"})
    except Exception:
        pass
    finally:
        sys.settrace(None)
    return views


def _plain_repr(value: object) -> str:
    try:  # addresses and native thread ids go, as in the recorder
        return re.sub(r" \d{6,}\)>$", ")>", _ADDRESS.sub("", repr(value)))
    except Exception:  # a user __repr__ that fails (the recorder marks it as cut)
        return "<repr failed>"


def counts(events: list[Event]) -> dict[str, int]:
    kinds = {"line": "line_events", "call": "calls", "return": "returns"}
    out = {"line_events": 0, "calls": 0, "returns": 0, "exceptions": 0}
    for ev, *_ in events:
        out[kinds.get(ev, "exceptions")] += 1
    return out
