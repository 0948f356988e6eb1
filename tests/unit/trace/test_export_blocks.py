"""LDB's view: the blocks each call ran, their lines and the values at their end."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from typing import Any

import pytest

from tracebox.trace import Trace, TraceConfig, record
from tracebox.trace.export.blocks import to_ldb_blocks

BACKENDS = ["settrace", "monitoring"] if sys.version_info >= (3, 12) else ["settrace"]


def run(source: str, backend: str = "settrace", **config: Any) -> Trace:
    """Recorded as ``<cell-ldb>``: the source goes into linecache, where other tests' code
    objects named ``<cell-1>`` must not find it."""
    cfg = TraceConfig(**config)
    file = "<cell-ldb>"
    return record(textwrap.dedent(source), cfg, filename=file, backend=backend)  # type: ignore[arg-type]


def view(blocks: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(lines, state) of each block, the marker as ("elided", n)."""
    return [("elided", b["elided"]) if "elided" in b else (b["lines"], b["state"]) for b in blocks]


TOTAL = """\
def total(xs):
    s = 0
    for x in xs:
        if x > 2:
            s += x
        else:
            s -= 1
    return s

r = total([1, 5])
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_loop_block_by_block(backend: str) -> None:
    (call,) = run(TOTAL, backend).to_ldb_blocks()
    assert (call["function"], call["file"], call["depth"]) == ("total", "<cell-ldb>", 1)
    assert call["arguments"] == {"xs": "[1, 5]"}
    xs = {"xs": "[1, 5]"}
    # The for header is a block apart from the body; the values are those after the block
    # (x is bound by the body's first instruction, on the header's line).
    assert view(call["blocks"]) == [
        ([2, 3], xs | {"s": "0", "x": "1"}),
        ([4], xs | {"s": "0", "x": "1"}),  # the test
        ([7], xs | {"s": "-1", "x": "1"}),  # else
        ([3], xs | {"s": "-1", "x": "5"}),
        ([4], xs | {"s": "-1", "x": "5"}),
        ([5], xs | {"s": "4", "x": "5"}),  # then
        ([3], xs | {"s": "4", "x": "5"}),  # the loop ends
        ([8], xs | {"s": "4", "x": "5"}),  # return
    ]
    assert call["blocks"][0]["source"] == ["    s = 0", "    for x in xs:"]
    assert [b["index"] for b in call["blocks"]] == list(range(8))
    assert call["total_blocks"] == 8
    assert (call["return"], call["exception"], call["finished"]) == ("4", None, True)
    trace = run(TOTAL, backend)
    for block in call["blocks"]:  # the values are those the step after the block shows
        step = trace.steps[block["step"]]
        assert step.frame == call["frame"]
        assert {k: v.repr for k, v in trace.locals_at(block["step"]).items()} == block["state"]


LONG = """\
def count(n):
    k = 0
    while k < n:
        k += 1
    return k

count(12)
"""


def test_many_blocks_keep_the_first_and_last_as_ldb_does() -> None:
    trace = run(LONG)
    (full,) = trace.to_ldb_blocks(max_blocks=1000)
    blocks = full["blocks"]
    assert full["total_blocks"] == len(blocks) > 10
    (call,) = trace.to_ldb_blocks()  # max_blocks=10: 5 and 5, as LDB's block level
    n = len(blocks)
    assert call["blocks"] == [*blocks[:5], {"elided": n - 10}, *blocks[-5:]]
    assert call["total_blocks"] == n
    (odd,) = trace.to_ldb_blocks(max_blocks=5)  # the odd one goes to the end
    assert [b.get("index", "...") for b in odd["blocks"]] == [0, 1, "...", n - 3, n - 2, n - 1]
    (one,) = trace.to_ldb_blocks(max_blocks=1)
    assert one["blocks"] == [{"elided": n - 1}, blocks[-1]]
    assert blocks[-1]["lines"] == [5] and blocks[-1]["state"] == {"n": "12", "k": "12"}
    with pytest.raises(ValueError, match="max_blocks"):
        to_ldb_blocks(trace, max_blocks=0)


def test_each_call_is_an_entry_and_only_functions_count() -> None:
    source = """\
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    class Box:
        def __init__(self, v):
            self.v = v

    double = lambda v: 2 * v
    b = Box(fact(3))
    evens = [double(v) for v in range(3) if v % 2 == 0]
    """
    calls = run(source).to_ldb_blocks()
    assert [(c["function"], c["arguments"]) for c in calls] == [
        ("fact", {"n": "3"}),
        ("fact", {"n": "2"}),
        ("fact", {"n": "1"}),
        ("Box.__init__", {"self": calls[3]["arguments"]["self"], "v": "6"}),
    ]
    assert [c["depth"] for c in calls] == [1, 2, 3, 1]
    assert [c["return"] for c in calls[:3]] == ["6", "2", "1"]
    assert [len(c["blocks"]) for c in calls[:3]] == [1, 1, 1]  # one line, one step each


def test_an_exception_ends_a_call() -> None:
    source = """\
    def parse(text):
        value = int(text)
        return value

    def safe(text):
        try:
            return parse(text)
        except ValueError:
            return None

    safe("x")
    """
    safe, parse = run(source).to_ldb_blocks()
    assert parse["function"] == "parse"
    assert parse["exception"] is not None and "invalid literal" in parse["exception"]
    assert (parse["return"], parse["finished"]) == (None, True)
    assert view(parse["blocks"]) == [([2], {"text": "'x'"})]
    assert (safe["return"], safe["exception"]) == ("None", None)
    assert safe["blocks"][0]["lines"] == [6, 7]
    assert [8] in [b["lines"] for b in safe["blocks"]]  # the handler is a block of its own


def test_a_generator_is_one_entry_over_its_activations() -> None:
    source = """\
    def squares(n):
        for i in range(n):
            yield i * i

    got = list(squares(2))
    """
    (call,) = run(source).to_ldb_blocks()
    assert call["function"] == "squares"
    lines = [b["lines"] for b in call["blocks"]]
    assert lines == [[2], [3], [2], [3], [2]]  # header and body, twice; the end
    assert call["blocks"][-1]["state"] == {"n": "2", "i": "1"}
    assert (call["return"], call["finished"]) == ("None", True)


def test_a_call_cut_short_is_not_finished() -> None:
    trace = run(LONG, max_steps=8)
    (call,) = trace.to_ldb_blocks()
    assert call["finished"] is False and call["return"] is None
    last = call["blocks"][-1]
    assert last["step"] == len(trace) - 1  # its values are those of the last step kept


def test_the_view_survives_the_wire_and_needs_the_same_python() -> None:
    trace = run(TOTAL)
    assert Trace.from_json(trace.to_json()).to_ldb_blocks() == trace.to_ldb_blocks()
    other = dataclasses.replace(trace, python="2.7")
    with pytest.raises(ValueError, match=r"Python 2\.7"):
        other.to_ldb_blocks()
