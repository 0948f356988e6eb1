"""Counts by unit: statements by hand, bytecodes and exact blocks against a naive counter,
blocks derived from steps against exact ones, and what each mode fills."""

from __future__ import annotations

import dataclasses
import dis
import sys
import textwrap
import threading
import types
from typing import Any

import pytest
from pydantic import ValidationError
from trace_corpus import PROGRAMS, compile_program

from tracebox.trace import Settings, Trace, TraceConfig, record
from tracebox.trace._units import count_units
from tracebox.trace.cfg import build_cfg, frame_codes

BACKENDS = ["settrace", "monitoring"] if sys.version_info >= (3, 12) else ["settrace"]


@pytest.fixture(autouse=True)
def _quiet(capsys: pytest.CaptureFixture[str]) -> None:
    """Some programs print."""


def run(source: str | types.CodeType, backend: str = "settrace", **config: Any) -> Trace:
    """Source text is registered in linecache (statements need it), under a name of its
    own: other tests record code objects as ``<cell-1>`` and must not find this source."""
    if isinstance(source, str):
        source = textwrap.dedent(source)
    cfg = TraceConfig(**config)
    return record(source, cfg, filename="<cell-units>", backend=backend)  # type: ignore[arg-type]


# -- statements ----------------------------------------------------------------------------
STATEMENTS = [
    ("a = 1; b = 2", 2, "two statements on one line"),
    ("x = 0\nif x: y = 1", 2, "a body on its condition's line is not counted"),
    ("t = 0\nfor i in range(3):\n    t += i", 1 + 4 + 3, "the header counts at each of 4 tests"),
    ("t = 0\nfor i in range(3): t += i", 1 + 4, "a one-line loop: its header's tests"),
    ("v = max(\n    1,\n    2,\n)", 1, "one statement over four lines"),
    ("n = 3\nwhile n:\n    n -= 1", 1 + 4 + 3, "4 tests of the while, 3 bodies"),
    (
        "k = 0\nwhile True:\n    k += 1\n    if k > 2:\n        break",
        1 + 3 + 3 + 3 + 1,
        "while True shows at each iteration",
    ),
    ("import contextlib\nwith contextlib.nullcontext():\n    z = 1", 3, "with closes on its line"),
    (
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    c = 1",
        3,
        "an except clause is no statement",
    ),
    ("class C:\n    a = 1\n    def m(self):\n        return self.a\nC().m()", 5, "2+2+1"),
    ("def f(x):\n    '''doc'''\n    return x\nf(1)\nf(2)", 3 + 2, "a docstring has no bytecode"),
    ("def gen():\n    yield 1\n    yield 2\nlist(gen())", 2 + 2, "a generator's lines"),
    ("try:\n    a = 1; b = 1 / 0; c = 2\nexcept ZeroDivisionError:\n    pass", 5, "all three"),
    (
        "def d(f):\n    return f\n@d\ndef g(\n    a,\n):\n    global q\n    return a\ng(1)",
        5,
        "3+1+1",
    ),
    ("squares = [i * i for i in range(4)]", 1, "a comprehension holds no statement"),
    (
        "def f(x):\n    if x:\n        return 1\n    elif x is None:\n        return 2\n"
        "    else:\n        return 3\nf(0); f(None); f(1)",
        2 + 2 + 3 + 2 + 3,
        "def and the three calls; then if+elif+return, if+elif+return, if+return",
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("source", "expected", "why"), STATEMENTS, ids=[s[2] for s in STATEMENTS])
def test_statements_by_hand(source: str, expected: int, why: str, backend: str) -> None:
    assert run(source, backend).counts.statements == expected, why


# -- bytecodes and exact blocks -------------------------------------------------------------
def naive_counts(code: types.CodeType) -> tuple[int, int]:
    """(instructions, block entries) of ``<cell-...>`` code run by the main thread: opcode
    events of settrace on 3.11, INSTRUCTION events of every code object on 3.12+ (opcode
    events are unreliable there). A block entry: a fresh frame's start, or an instruction
    that is a leader of ``build_cfg`` (the partition itself is tested in test_cfg)."""
    leaders: dict[types.CodeType, frozenset[int]] = {}
    counts = [0, 0]
    main = threading.get_ident()

    def user(c: types.CodeType) -> bool:
        return c.co_filename.startswith("<cell-")

    def seen(c: types.CodeType, offset: int) -> None:
        if c not in leaders:
            leaders[c] = build_cfg(c).leaders
        counts[0] += 1
        counts[1] += offset != 0 and offset in leaders[c]

    monitoring: Any = getattr(sys, "monitoring", None)
    if monitoring is None:

        def call(frame: types.FrameType, event: str, arg: Any) -> Any:
            if not user(frame.f_code):
                return None
            resume = min(
                i.offset for i in dis.get_instructions(frame.f_code) if i.opname == "RESUME"
            )
            counts[1] += frame.f_lasti <= resume  # fresh, not a resumed generator
            frame.f_trace_opcodes = True
            return local

        def local(frame: types.FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                seen(frame.f_code, frame.f_lasti)
            return local

        sys.settrace(call)
        try:
            exec(code, {"__name__": "__main__"})
        except Exception:
            pass
        finally:
            sys.settrace(None)
        return counts[0], counts[1]

    def instruction(c: types.CodeType, offset: int) -> None:
        if user(c) and threading.get_ident() == main:
            seen(c, offset)

    def start(c: types.CodeType, offset: int) -> None:
        if user(c) and threading.get_ident() == main:
            counts[1] += 1

    tool, events = 5, monitoring.events
    monitoring.use_tool_id(tool, "naive")
    monitoring.register_callback(tool, events.INSTRUCTION, instruction)
    monitoring.register_callback(tool, events.PY_START, start)
    monitoring.set_events(tool, events.INSTRUCTION | events.PY_START)
    try:
        exec(code, {"__name__": "__main__"})
    except Exception:
        pass
    finally:
        monitoring.set_events(tool, 0)
        monitoring.register_callback(tool, events.INSTRUCTION, None)
        monitoring.register_callback(tool, events.PY_START, None)
        monitoring.free_tool_id(tool)
    return counts[0], counts[1]


@pytest.mark.parametrize("mode", ["steps", "full"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(set(PROGRAMS) - {"async_functions"}))
def test_bytecodes_and_exact_blocks_match_a_naive_counter(
    name: str, backend: str, mode: str
) -> None:
    code = compile_program(name)
    expected = naive_counts(code)
    counts = run(code, backend, mode=mode, count_instructions=True).counts
    assert (counts.bytecodes, counts.blocks) == expected


def test_async_code_counts_as_the_naive_counter_says() -> None:
    """asyncio's scheduling may differ run to run: compare the counts of one task."""
    source = """
        import asyncio

        async def work(n):
            total = 0
            for i in range(n):
                total += i
                await asyncio.sleep(0)
            return total

        result = asyncio.run(work(3))
    """
    code = compile(textwrap.dedent(source), "<cell-1>", "exec")
    assert (
        run(code, mode="steps", count_instructions=True).counts.bytecodes == naive_counts(code)[0]
    )


def test_straight_line_bytecodes_and_blocks_by_hand() -> None:
    source = "def f(a, b):\n    c = a + b\n    return c * 2\nf(1, 2)\nf(3, 4)\nf(5, 6)\n"
    code = compile(source, "<cell-1>", "exec")
    f = next(c for c in code.co_consts if isinstance(c, types.CodeType))

    def run_once(c: types.CodeType) -> int:  # every instruction but RESUME runs once
        return sum(1 for i in dis.get_instructions(c) if i.opname not in ("RESUME", "CACHE"))

    for backend in BACKENDS:
        counts = run(code, backend, count_instructions=True).counts
        assert counts.bytecodes == run_once(code) + 3 * run_once(f)
        assert counts.blocks == 1 + 3  # one entry block each


def test_loop_blocks_by_hand() -> None:
    source = "def f():\n    for i in range(3):\n        pass\nf()\n"
    # The module: 1. f: its entry block, FOR_ITER 4 times (3 iterations and the end), the
    # body 3 times, the code after the loop once.
    for backend in BACKENDS:
        assert run(source, backend, count_instructions=True).counts.blocks == 1 + 1 + 4 + 3 + 1
        assert run(source, backend).counts.blocks == 10  # derived from the steps alike


def test_other_threads_are_not_counted() -> None:
    source = """
        import threading
        def spin(n):
            for _ in range(n):
                pass
        t = threading.Thread(target=spin, args=(1000,))
        t.start(); t.join()
    """
    alone = run(source.replace("t.start(); t.join()", "pass"), count_instructions=True)
    with_thread = run(source, count_instructions=True)
    assert with_thread.counts.bytecodes is not None and alone.counts.bytecodes is not None
    assert with_thread.counts.bytecodes - alone.counts.bytecodes < 100  # not 1000s of spin


# -- blocks derived from steps --------------------------------------------------------------
# Programs without a line that branches within itself (comprehension filters, ``and``).
EXACT_FROM_STEPS = sorted(set(PROGRAMS) - {"comprehensions", "async_functions"})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", EXACT_FROM_STEPS)
def test_blocks_from_steps_are_exact_where_lines_do_not_branch_inside(
    name: str, backend: str
) -> None:
    trace = run(PROGRAMS[name], backend, count_instructions=True)
    derived = count_units(trace.rows, trace.frames, frame_codes(trace), trace.sources)
    assert derived == (trace.counts.statements, trace.counts.blocks)


def test_blocks_from_steps_take_the_cheapest_path_inside_a_line() -> None:
    source = "def f(a, b):\n    return a and b\nf(1, 2)\nf(0, 2)\n"
    exact = run(source, count_instructions=True).counts.blocks
    derived = run(source).counts.blocks
    assert exact is not None and derived is not None
    assert derived < exact  # f(1, 2) evaluates b in a block of its own, unseen by lines


# -- what each mode fills -------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_mode_fills_its_units(backend: str) -> None:
    source = "x = 0\nfor i in range(3):\n    x += i\n"
    units = ("statements", "blocks", "bytecodes")

    def filled(**config: Any) -> tuple[bool, ...]:
        counts = run(source, backend, **config).counts
        return tuple(getattr(counts, u) is not None for u in units)

    assert filled(mode="full") == (True, True, False)
    assert filled(mode="full", count_instructions=True) == (True, True, True)
    assert filled(mode="steps") == (False, False, False)
    assert filled(mode="steps", count_instructions=True) == (False, True, True)
    assert filled(mode="coverage") == (False, False, False)
    full = run(source, backend, count_instructions=True).counts
    steps = run(source, backend, mode="steps", count_instructions=True).counts
    assert (full.blocks, full.bytecodes) == (steps.blocks, steps.bytecodes)
    assert run(source, backend).counts.blocks == full.blocks


def test_count_instructions_needs_a_counting_mode() -> None:
    with pytest.raises(ValidationError):
        TraceConfig(mode="coverage", count_instructions=True)
    with pytest.raises(ValueError, match="count_instructions"):
        Settings.from_wire({"mode": "coverage", "count_instructions": True})
    assert TraceConfig(count_instructions=True).settings().count_instructions is True


def test_config_and_settings_have_the_same_fields_and_defaults() -> None:
    assert TraceConfig().to_wire() == dataclasses.asdict(Settings()) | {
        "include": list(Settings().include),
        "files": list(Settings().files),
    }


CUT = """
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def evens(n):
        for i in range(n):
            if i % 2 == 0:
                yield i

    g = evens(9)
    first = next(g)
    total = fib(6) + sum(g)
    try:
        fib(None)
    except TypeError:
        pass
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cut", [1, 9, 30, 61, 100])
def test_counts_cover_the_whole_run_past_a_cut(cut: int, backend: str) -> None:
    whole = run(CUT, backend)
    part = run(CUT, backend, max_steps=cut)
    assert part.truncation is not None
    assert part.counts == whole.counts


def test_statements_need_the_source() -> None:
    counts = run(compile("x = 1\ny = 2\n", "<cell-sourceless>", "exec")).counts
    assert counts.statements is None and counts.blocks == 1


def test_counts_go_through_the_wire() -> None:
    trace = run(CUT, count_instructions=True)
    assert Trace.from_wire(trace.to_wire()).counts == trace.counts
