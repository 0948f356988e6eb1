"""The trace cursor moves like a debugger over known programs, and stays linear on big traces.

Expected steps are written by hand as (event, function, line); the programs avoid
comprehensions, so 3.11 (settrace) and 3.12+ (sys.monitoring) record the same steps.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
from collections.abc import Callable, Iterator
from typing import Any, SupportsIndex, overload

import pytest

from tracebox.trace import Cursor, Recorder, Trace, record
from tracebox.trace.cursor import EndOfTrace, LocalNotBound, StepView
from tracebox.trace.model import Row, Step

FILE = "<cell-0>"

LOOP = """
def helper(x):
    y = x * 2
    return y


total = 0
for i in range(3):
    total += helper(i)
done = True
"""

RECURSION = """
def fact(n):
    if n <= 1:
        return 1
    return n * fact(n - 1)


r = fact(3)
"""

GENERATOR = """
def count(n):
    i = 0
    while i < n:
        yield i
        i += 1


seen = 0
for v in count(2):
    seen += v
end = seen
"""

CAUGHT = """
def inner(x):
    if x > 1:
        raise ValueError(x)
    return x


def outer(x):
    y = inner(x)
    return y


try:
    outer(5)
except ValueError as e:
    msg = str(e)
after = 1
"""

LIBRARY = """
def key(x):
    return -x


top = heapq.nlargest(2, [3, 1, 2], key=key)
s = sorted([2, 1], key=key)
"""

PROGRAMS = {
    "loop": LOOP,
    "recursion": RECURSION,
    "generator": GENERATOR,
    "caught": CAUGHT,
    "library": LIBRARY,
}

Where = tuple[str, str, int]


def trace_of(source: str, **config: Any) -> Trace:
    # heapq comes in through the namespace: an import would add an import-machinery
    # library call, or not, depending on what the test process imported before.
    namespace = {"__name__": "__main__", "heapq": heapq}
    return record(source.lstrip("\n"), {"mode": "full", **config}, namespace=namespace)


def where(step: Step) -> Where:
    return (step.event, step.function, step.line)


def walk(cur: Cursor, move: Callable[[], Step]) -> list[Where]:
    """Where the cursor is, then after each ``move`` until the trace ends."""
    seen = [where(cur.step)]
    while True:
        try:
            seen.append(where(move()))
        except EndOfTrace:
            return seen


def test_trace_cursor_starts_at_step_zero() -> None:
    trace = trace_of(LOOP)
    cur = trace.cursor()
    assert isinstance(cur, Cursor)
    assert cur.index == 0
    assert where(cur.step) == ("call", "<module>", 0)


def test_step_into_visits_every_step() -> None:
    trace = trace_of(LOOP)
    cur = trace.cursor()
    assert walk(cur, cur.step_into) == [where(s) for s in trace.steps]


# -- a helper called in a loop ---------------------------------------------------------------

MODULE_OVER_LOOP = [
    ("call", "<module>", 0),
    ("line", "<module>", 1),
    ("line", "<module>", 6),
    ("line", "<module>", 7),
    ("line", "<module>", 8),
    ("line", "<module>", 7),
    ("line", "<module>", 8),
    ("line", "<module>", 7),
    ("line", "<module>", 8),
    ("line", "<module>", 7),
    ("line", "<module>", 9),
    ("return", "<module>", 9),
]


def test_step_over_stays_in_the_frame_and_skips_calls() -> None:
    cur = trace_of(LOOP).cursor()
    assert walk(cur, cur.step_over) == MODULE_OVER_LOOP


def test_back_over_retraces_step_over_in_reverse() -> None:
    cur = trace_of(LOOP).cursor()
    cur.goto(-1)
    assert walk(cur, cur.back_over) == MODULE_OVER_LOOP[::-1]


def test_step_into_the_helper_then_over_its_return_to_the_caller() -> None:
    cur = trace_of(LOOP).cursor()
    assert cur.run_to(line=8).index == 4
    assert where(cur.step_into()) == ("call", "helper", 1)
    assert where(cur.step_over()) == ("line", "helper", 2)
    assert where(cur.step_over()) == ("line", "helper", 3)
    assert where(cur.step_over()) == ("return", "helper", 3)
    assert cur.step.value is not None and cur.step.value.repr == "0"
    step = cur.step_over()  # from a return: the caller's next step
    assert (where(step), step.index) == (("line", "<module>", 7), 9)


def test_step_out_and_back_out_of_the_helper() -> None:
    cur = trace_of(LOOP).cursor()
    cur.run_to(line=2)
    cur.run_to(line=2)  # in the second call, helper(1)
    assert (cur.index, cur.value("x")) == (12, "1")
    step = cur.step_out()
    assert (where(step), step.index, cur.value("total")) == (("line", "<module>", 7), 15, "2")
    cur.goto(12)
    step = cur.back_out()  # the last step before the call
    assert (where(step), step.index) == (("line", "<module>", 8), 10)
    cur.goto(11)
    step = cur.back_over()  # from a call: the caller's step that made it
    assert (where(step), step.index) == (("line", "<module>", 8), 10)
    cur.goto(9)
    assert where(cur.step_back()) == ("return", "helper", 3)


# -- recursion --------------------------------------------------------------------------------


def test_stack_in_recursion() -> None:
    cur = trace_of(RECURSION).cursor()
    cur.run_to(line=3)  # the base case, three frames of fact deep
    stack = cur.stack
    assert [(f.function, f.line, f.depth) for f in stack] == [
        ("<module>", 7, 0),
        ("fact", 4, 1),
        ("fact", 4, 2),
        ("fact", 3, 3),
    ]
    assert [f.locals.get("n") for f in stack] == [None, "3", "2", "1"]
    assert stack[-1].index == cur.index
    assert "fact" in stack[0].locals
    assert stack[1].source == "    return n * fact(n - 1)"


def test_step_out_climbs_the_recursion() -> None:
    cur = trace_of(RECURSION).cursor()
    cur.run_to(line=3)
    out = walk(cur, cur.step_out)
    assert out == [
        ("line", "fact", 3),
        ("return", "fact", 4),
        ("return", "fact", 4),
        ("return", "<module>", 7),
    ]
    assert [s.value.repr for s in cur.trace.steps[12:15] if s.value] == ["1", "2", "6"]


def test_step_over_skips_the_whole_recursion() -> None:
    cur = trace_of(RECURSION).cursor()
    cur.run_to(line=4)  # in fact(3)
    step = cur.step_over()
    assert (where(step), step.depth) == (("return", "fact", 4), 1)
    assert step.value is not None and step.value.repr == "6"


# -- a generator -----------------------------------------------------------------------------


def test_step_over_in_the_consumer_skips_the_generator() -> None:
    cur = trace_of(GENERATOR).cursor()
    assert walk(cur, cur.step_over) == [
        ("call", "<module>", 0),
        ("line", "<module>", 1),
        ("line", "<module>", 8),
        ("line", "<module>", 9),
        ("line", "<module>", 10),
        ("line", "<module>", 9),
        ("line", "<module>", 10),
        ("line", "<module>", 9),
        ("line", "<module>", 11),
        ("return", "<module>", 11),
    ]


def test_a_resumed_generator_keeps_its_frame_and_locals() -> None:
    cur = trace_of(GENERATOR).cursor()
    cur.break_at(where=lambda v: v.event == "call" and v.function == "count")
    resumes = [cur.continue_() for _ in range(3)]
    with pytest.raises(EndOfTrace):
        cur.continue_()
    assert [where(s) for s in resumes] == [("call", "count", 1)] + [("call", "count", 4)] * 2
    assert [s.index for s in resumes] == [4, 11, 18]
    assert len({s.frame for s in resumes}) == 1
    cur.goto(11)  # resumed at the yield: i carries over from the first activation
    assert dict(cur.locals) == {"n": "2", "i": "0"}
    assert walk(cur, cur.step_over) == [
        ("call", "count", 4),
        ("line", "count", 5),
        ("line", "count", 3),
        ("line", "count", 4),
        ("return", "count", 4),
        ("line", "<module>", 10),  # from the yield: the consumer's next step
        ("line", "<module>", 9),
        ("line", "<module>", 11),
        ("return", "<module>", 11),
    ]


def test_step_out_of_a_resumption_goes_back_to_the_consumer() -> None:
    cur = trace_of(GENERATOR).cursor()
    cur.goto(12)
    step = cur.step_out()
    assert (where(step), step.index, cur.value("v")) == (("line", "<module>", 10), 16, "1")
    cur.goto(13)
    assert cur.back_out().index == 10  # before this resumption, not the first call
    assert cur.value("v") == "0"


# -- an exception caught by the caller's caller ---------------------------------------------


def test_step_over_follows_an_exception_out_of_two_frames() -> None:
    cur = trace_of(CAUGHT).cursor()
    cur.run_to(line=3)
    assert walk(cur, cur.step_over) == [
        ("line", "inner", 3),
        ("exception", "inner", 3),
        ("return", "inner", 3),
        ("exception", "outer", 8),
        ("return", "outer", 8),
        ("exception", "<module>", 13),
        ("line", "<module>", 14),
        ("line", "<module>", 15),
        ("line", "<module>", 16),
        ("return", "<module>", 16),
    ]


def test_step_out_during_unwinding() -> None:
    cur = trace_of(CAUGHT).cursor()
    cur.run_to(line=3)
    assert walk(cur, cur.step_out) == [
        ("line", "inner", 3),
        ("exception", "outer", 8),
        ("exception", "<module>", 13),
    ]
    assert cur.step.value is not None and cur.step.value.repr == "ValueError(5)"


def test_unbound_locals_raise_a_clear_key_error() -> None:
    cur = trace_of(CAUGHT).cursor()
    cur.run_to(where=lambda v: v.function == "outer" and v.event == "exception")
    assert cur.value("x") == "5"
    with pytest.raises(LocalNotBound) as info:
        cur.value("y")  # inner raised before y was bound
    assert isinstance(info.value, KeyError)
    assert str(info.value) == (
        f"local 'y' is not bound in outer (frame 1) at step {cur.index}; bound: x"
    )
    cur.run_to(line=15)
    assert cur.value("e") == "ValueError(5)"
    cur.step_over()  # leaving the handler deletes e
    assert "e" not in cur.locals
    assert cur.locals.get("msg") == "'5'"
    with pytest.raises(LocalNotBound):
        cur.value("e")


# -- library frames --------------------------------------------------------------------------


def test_a_library_frame_and_the_user_code_it_calls_back() -> None:
    cur = trace_of(LIBRARY).cursor()
    assert walk(cur, cur.step_over) == [
        ("call", "<module>", 0),
        ("line", "<module>", 1),
        ("line", "<module>", 5),
        ("line", "<module>", 6),
        ("return", "<module>", 6),
    ]
    cur.goto(2)
    lib = cur.step_into()
    assert (lib.event, lib.function) == ("call", "nlargest")
    assert cur.view.library
    over = cur.step_over()  # over the library call and its callbacks, to its return
    assert (over.event, over.function, over.index) == ("return", "nlargest", 13)
    assert over.value is not None and over.value.repr == "[1, 2]"


def test_stack_and_moves_inside_a_callback_from_a_library() -> None:
    cur = trace_of(LIBRARY).cursor()
    cur.run_to(where=lambda v: v.function == "key")
    assert cur.index == 4
    assert [(f.function, f.library) for f in cur.stack] == [
        ("<module>", False),
        ("nlargest", True),
        ("key", False),
    ]
    assert cur.stack[0].line == 5
    cur.goto(5)
    step = cur.step_out()  # first step after key returns: the library's next callback
    assert (where(step), step.index, cur.value("x")) == (("call", "key", 1), 7, "1")
    assert cur.back_over().index == 3  # the caller's step that made the call
    cur.goto(6)
    assert cur.step_over().index == 13  # from key's return: the library frame's next step


def test_run_to_a_library_file() -> None:
    cur = trace_of(LIBRARY).cursor()
    step = cur.run_to(file=heapq.nlargest.__code__.co_filename)
    assert (step.index, step.event, step.function) == (3, "call", "nlargest")
    assert cur.view.source == ""  # no source is kept for library files
    assert cur.run_to(file=FILE).index == 4


def test_callbacks_from_a_builtin_are_callees_of_the_user_frame() -> None:
    cur = trace_of(LIBRARY).cursor()
    cur.run_to(line=6)
    assert where(cur.step_into()) == ("call", "key", 1)
    assert [f.function for f in cur.stack] == ["<module>", "key"]
    cur.run_back_to(line=6)
    assert where(cur.step_over()) == ("return", "<module>", 6)


# -- run to, breakpoints ---------------------------------------------------------------------


def test_run_to_a_line_until_there_is_none() -> None:
    cur = trace_of(LOOP).cursor()
    assert [cur.run_to(line=8).index for _ in range(3)] == [4, 10, 16]
    with pytest.raises(EndOfTrace, match="no later step at line 8") as info:
        cur.run_to(line=8)
    assert info.value.forward and isinstance(info.value, IndexError)
    assert cur.index == 16  # a failed move leaves the cursor where it was
    with pytest.raises(EndOfTrace):
        cur.run_to(line=8, file="<cell-other>")
    assert cur.run_to(line=2, file=FILE).index == 18


def test_run_to_a_condition_on_locals() -> None:
    cur = trace_of(LOOP).cursor()
    step = cur.run_to(where=lambda v: v.locals.get("i") == "2")
    assert (where(step), step.index) == (("line", "<module>", 8), 16)
    cur.goto(0)
    assert cur.run_to(line=2, where=lambda v: v.value("x") == "1").index == 12
    cur.goto(0)  # a condition on a name some steps lack is false there, not an error
    assert cur.run_to(where=lambda v: v.value("x") == "1").index == 11


def test_run_back_to() -> None:
    cur = trace_of(LOOP).cursor()
    cur.goto(-1)
    assert cur.run_back_to(line=7).index == 21
    step = cur.run_back_to(where=lambda v: v.event == "call" and v.function == "helper")
    assert step.index == 17
    assert cur.run_back_to(where=lambda v: v.locals.get("total") == "0").index == 10
    with pytest.raises(EndOfTrace, match="start of trace") as info:
        cur.run_back_to(line=9)
    assert not info.value.forward
    assert cur.index == 10


def test_run_to_needs_a_condition() -> None:
    cur = trace_of(LOOP).cursor()
    with pytest.raises(ValueError, match="needs line="):
        cur.run_to()


def test_breakpoints_and_continue() -> None:
    cur = trace_of(LOOP).cursor()
    cur.break_at(line=2)
    cur.break_at(where=lambda v: v.event == "return" and v.function == "helper")
    hits = [cur.continue_().index for _ in range(6)]
    assert hits == [6, 8, 12, 14, 18, 20]
    with pytest.raises(EndOfTrace, match="breakpoint"):
        cur.continue_()
    assert cur.continue_back().index == 18
    cur.breakpoints.pop()
    assert cur.continue_back().index == 12
    cur.breakpoints.clear()
    with pytest.raises(EndOfTrace, match="no later step at a breakpoint"):
        cur.continue_()
    assert cur.index == 12


# -- locals and values -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_locals_agree_with_replay_at_every_step(name: str) -> None:
    trace = trace_of(PROGRAMS[name])
    cur = trace.cursor()
    for k in range(len(trace)):
        cur.goto(k)
        replayed = trace.locals_at(k)
        assert dict(cur.values) == replayed
        assert cur.locals == {n: v.repr for n, v in replayed.items()}
        assert len(cur.locals) == len(replayed)


def test_value_of_a_local() -> None:
    cur = trace_of(LOOP).cursor()
    cur.run_to(line=7)
    assert cur.value("total") == "0"
    assert cur.values["total"].type == "int"
    with pytest.raises(LocalNotBound, match="local 'i' is not bound in <module>"):
        cur.value("i")
    cur.goto(-1)
    assert (cur.value("total"), cur.value("done")) == ("6", "True")


# -- the ends of a trace ---------------------------------------------------------------------


def test_moves_at_the_ends_report_the_end() -> None:
    trace = trace_of(LOOP)
    cur = trace.cursor()
    for back in (cur.step_back, cur.back_over, cur.back_out):
        with pytest.raises(EndOfTrace, match="start of trace") as info:
            back()
        assert not info.value.forward
        assert cur.index == 0
    last = cur.goto(-1)
    assert last.index == len(trace) - 1
    for forward in (cur.step_into, cur.step_over, cur.step_out):
        with pytest.raises(EndOfTrace, match="the program ended at step 23"):
            forward()
        assert cur.index == last.index
    with pytest.raises(EndOfTrace, match="no step 24 in a trace of 24 steps"):
        cur.goto(24)
    with pytest.raises(EndOfTrace):
        cur.goto(-25)


def test_the_end_of_a_failed_program_names_its_exception() -> None:
    cur = trace_of("def f(n):\n    raise KeyError(n)\n\nf(1)\n").cursor()
    cur.goto(-1)
    with pytest.raises(EndOfTrace, match=r"ended at step 8 with KeyError\(1\)"):
        cur.step_into()


def test_a_truncated_trace_says_where_and_why_it_was_cut() -> None:
    trace = trace_of(LOOP, max_steps=12)
    assert trace.truncation is not None
    cur = trace.cursor()
    cur.goto(-1)
    assert (where(cur.step), cur.value("x")) == (("call", "helper", 1), "1")
    assert [f.function for f in cur.stack] == ["<module>", "helper"]
    cut = "the recording was cut at step 12 (max_steps, limit 12)"
    for move in (cur.step_into, cur.step_over):
        with pytest.raises(EndOfTrace, match=re.escape(cut)) as info:
            move()
        assert info.value.truncation == trace.truncation
    with pytest.raises(EndOfTrace, match="helper does not return within the trace"):
        cur.step_out()
    cur.goto(4)  # a module step: its frame never returns either
    with pytest.raises(EndOfTrace, match=r"<module> does not return"):
        cur.step_out()
    assert cur.step_over().index == 9  # the first call is whole: stepping over it works


@pytest.mark.parametrize("mode", ["full", "steps"])
def test_a_trace_without_steps(mode: str) -> None:
    if mode == "full":  # nothing recorded, as a Recorder stopped at once gives
        trace = Trace(mode="full", backend="settrace", python="3.11")
    else:
        trace = record("x = 1\n", {"mode": "steps"})
    cur = trace.cursor()
    assert cur.index == 0
    assert "empty" in repr(cur)
    for read in (lambda: cur.step, lambda: cur.locals, lambda: cur.stack, cur.step_into):
        with pytest.raises(EndOfTrace, match="the trace has no steps"):
            read()
    with pytest.raises(EndOfTrace):
        cur.goto(0)
    if trace.mode == "steps":
        with pytest.raises(EndOfTrace, match="record with mode='full'"):
            cur.step_back()


def test_top_level_frames_without_a_recorded_caller() -> None:
    namespace: dict[str, Any] = {}
    with Recorder({"mode": "full"}) as rec:
        exec(compile("a = 1\n", "<cell-1>", "exec"), namespace)
        exec(compile("b = a\n", "<cell-2>", "exec"), namespace)
    cur = rec.trace().cursor()
    seen = walk(cur, cur.step_over)  # from one cell's return to the next cell
    assert seen == [
        ("call", "<module>", 0),
        ("line", "<module>", 1),
        ("return", "<module>", 1),
        ("call", "<module>", 0),
        ("line", "<module>", 1),
        ("return", "<module>", 1),
    ]
    assert [s.file for s in cur.trace.steps] == ["<cell-1>"] * 3 + ["<cell-2>"] * 3
    assert cur.value("b") == "1"
    assert cur.back_over().file == "<cell-2>"
    cur.goto(3)
    assert cur.back_over().index == 2  # from a top-level call: the step before it
    cur.goto(4)
    assert cur.back_out().index == 2


# -- a big trace -----------------------------------------------------------------------------


class CountingRows(tuple[Row, ...]):
    """A trace's rows that count how often they are read: the cursor's work, measured.
    Past ``budget`` reads they fail at once, so quadratic work fails fast, not slowly."""

    reads = 0
    budget = 0

    def _count(self, reads: int) -> None:
        self.reads += reads
        if self.reads > self.budget:
            raise AssertionError(f"the cursor read rows more than {self.budget} times")

    @overload
    def __getitem__(self, k: SupportsIndex) -> Row: ...
    @overload
    def __getitem__(self, k: slice) -> tuple[Row, ...]: ...
    def __getitem__(self, k: SupportsIndex | slice) -> Row | tuple[Row, ...]:
        self._count(len(range(*k.indices(len(self)))) if isinstance(k, slice) else 1)
        return super().__getitem__(k)

    def __iter__(self) -> Iterator[Row]:
        for row in super().__iter__():
            self._count(1)
            yield row


BIG = """
def add(a, b):
    return a + b


total = 0
for i in range(10_000):
    total = add(total, i)
"""


def test_navigating_a_big_trace_reads_each_row_a_few_times() -> None:
    recorded = trace_of(BIG)
    rows = CountingRows(recorded.rows)
    n = len(rows)
    assert n > 50_000
    rows.budget = 20 * n  # replaying locals from the start would read n * n / 2 rows
    trace = dataclasses.replace(recorded, rows=rows)
    cur = trace.cursor()
    # Forward: a condition over locals at every step, then run_to a line, then step over.
    cur.run_to(where=lambda v: v.locals.get("i") == "5000")
    for _ in range(1000):
        cur.run_to(line=7)
    assert cur.value("i") == "6000"
    while cur.step.event != "return":
        cur.step_over()
        cur.locals.get("total")
    assert cur.value("total") == str(sum(range(10_000)))
    # Backward: step back through every frame, out of a call, then to a condition.
    for _ in range(20_000):
        cur.step_back()
        cur.locals.get("a")
    assert where(cur.run_back_to(line=2)) == ("line", "add", 2)
    assert where(cur.back_out()) == ("line", "<module>", 7)
    views: list[StepView] = []

    def i_is_10(view: StepView) -> bool:
        views.append(view)
        return view.locals.get("i") == "10"

    cur.run_back_to(where=i_is_10)
    assert (cur.value("i"), len(cur.stack)) == ("10", 1)
    assert len(views) > 25_000
    assert rows.reads > n  # the count is real: each row was read at least once
