"""CWM export: frames checked one by one against expectations written out by hand.

The programs avoid comprehensions, so 3.11 (settrace) and 3.12+ (sys.monitoring) give the
same steps and the expectations hold on both.
"""

from __future__ import annotations

import json
import linecache
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tracebox.trace import Trace, record
from tracebox.trace.export.cwm import to_cwm, to_cwm_text

ZDE = "ZeroDivisionError('integer division or modulo by zero')"


def full(source: str, **config: Any) -> Trace:
    return record(source, {"mode": "full", **config})


def frames(trace: Trace) -> list[tuple[str, dict[str, str] | None, str, str | None]]:
    """(event, locals, action, value) of each frame: what the text form holds."""
    return [(f["event"], f["locals"], f["action"], f["value"]) for f in to_cwm(trace)]


def test_a_loop_shows_unchanged_values_as_dots_and_resets_after_the_call_returns() -> None:
    trace = full(
        "def total(n):\n"
        "    s = 0\n"
        "    for i in range(n):\n"
        "        s += i\n"
        "    return s\n"
        "\n"
        "r = total(2)\n"
        "q = r + 1\n"
    )
    assert frames(trace) == [
        ("call", {}, "def total(n):\n", None),
        ("line", {}, "def total(n):\n", None),
        ("line", {"total": "<function total>"}, "r = total(2)\n", None),
        ("call", {"n": "2"}, "def total(n):\n", None),
        ("line", {"n": ".."}, "    s = 0\n", None),
        ("line", {"n": "..", "s": "0"}, "    for i in range(n):\n", None),
        ("line", {"n": "..", "s": "..", "i": "0"}, "        s += i\n", None),
        ("line", {"n": "..", "s": "..", "i": ".."}, "    for i in range(n):\n", None),
        ("line", {"n": "..", "s": "..", "i": "1"}, "        s += i\n", None),
        ("line", {"n": "..", "s": "1", "i": ".."}, "    for i in range(n):\n", None),
        ("line", {"n": "..", "s": "..", "i": ".."}, "    return s\n", None),
        ("return", None, "    return s\n", "1"),
        # The caller's first frame after a return shows every value again.
        ("line", {"total": "<function total>", "r": "1"}, "q = r + 1\n", None),
        ("return", None, "q = r + 1\n", "None"),
    ]


def test_frames_say_which_step_they_come_from() -> None:
    trace = full("def f(a):\n    return a\n\nf(1)\n")
    assert trace.to_cwm() == to_cwm(trace)
    got = [(f["step"], f["frame"], f["function"], f["line"]) for f in to_cwm(trace)]
    assert got == [
        (0, 0, "<module>", 0),
        (1, 0, "<module>", 1),
        (2, 0, "<module>", 4),
        (3, 1, "f", 1),
        (4, 1, "f", 2),
        (5, 1, "f", 2),
        (6, 0, "<module>", 4),
    ]


def test_the_text_form_of_a_function_call() -> None:
    trace = full("def f(a):\n    b = a * 2\n    return b\n\nx = f(3)\n")
    assert to_cwm_text(trace) == (
        "<|trace_context_start|>"
        "def f(a):  # << START_OF_TRACE\n"
        "    b = a * 2\n"
        "    return b\n"
        "\n"
        "x = f(3)\n"
        "<|frame_sep|>"
        "<|call_sep|>{}<|action_sep|>def f(a):\n<|frame_sep|>"
        "<|line_sep|>{}<|action_sep|>def f(a):\n<|frame_sep|>"
        '<|line_sep|>{"f": "<function f>"}<|action_sep|>x = f(3)\n<|frame_sep|>'
        '<|call_sep|>{"a": "3"}<|action_sep|>def f(a):\n<|frame_sep|>'
        '<|line_sep|>{"a": ".."}<|action_sep|>    b = a * 2\n<|frame_sep|>'
        '<|line_sep|>{"a": "..", "b": "6"}<|action_sep|>    return b\n<|frame_sep|>'
        '<|return_sep|><|action_sep|>    return b\n<|arg_sep|>"6"<|frame_sep|>'
        '<|return_sep|><|action_sep|>x = f(3)\n<|arg_sep|>"None"<|frame_sep|>'
        "<|end_of_text|>"
    )
    without = to_cwm_text(trace, context=False)
    assert without.startswith("<|call_sep|>{}<|action_sep|>def f(a):\n<|frame_sep|>")
    assert without.endswith("<|end_of_text|>")
    assert "<|trace_context_start|>" not in without


def test_recursion_gives_each_call_its_own_scope() -> None:
    trace = full(
        "def fact(n):\n"
        "    if n <= 1:\n"
        "        return 1\n"
        "    sub = fact(n - 1)\n"
        "    return n * sub\n"
        "\n"
        "r = fact(2)\n"
    )
    assert frames(trace) == [
        ("call", {}, "def fact(n):\n", None),
        ("line", {}, "def fact(n):\n", None),
        ("line", {"fact": "<function fact>"}, "r = fact(2)\n", None),
        ("call", {"n": "2"}, "def fact(n):\n", None),
        ("line", {"n": ".."}, "    if n <= 1:\n", None),
        ("line", {"n": ".."}, "    sub = fact(n - 1)\n", None),
        # The inner call's n is not "unchanged": it is another scope.
        ("call", {"n": "1"}, "def fact(n):\n", None),
        ("line", {"n": ".."}, "    if n <= 1:\n", None),
        ("line", {"n": ".."}, "        return 1\n", None),
        ("return", None, "        return 1\n", "1"),
        ("line", {"n": "2", "sub": "1"}, "    return n * sub\n", None),
        ("return", None, "    return n * sub\n", "2"),
        ("return", None, "r = fact(2)\n", "None"),
    ]


def test_a_caught_exception_keeps_the_frame_going() -> None:
    trace = full(
        "def safe(x):\n"
        "    try:\n"
        "        return 10 // x\n"
        "    except ZeroDivisionError:\n"
        "        return -1\n"
        "\n"
        "r = safe(0)\n"
    )
    assert frames(trace) == [
        ("call", {}, "def safe(x):\n", None),
        ("line", {}, "def safe(x):\n", None),
        ("line", {"safe": "<function safe>"}, "r = safe(0)\n", None),
        ("call", {"x": "0"}, "def safe(x):\n", None),
        ("line", {"x": ".."}, "    try:\n", None),
        ("line", {"x": ".."}, "        return 10 // x\n", None),
        ("exception", None, "        return 10 // x\n", ZDE),
        # An exception frame does not break the chain of the same scope.
        ("line", {"x": ".."}, "    except ZeroDivisionError:\n", None),
        ("line", {"x": ".."}, "        return -1\n", None),
        ("return", None, "        return -1\n", "-1"),
        ("return", None, "r = safe(0)\n", "None"),
    ]
    assert trace.error is None


def test_an_uncaught_exception_unwinds_every_frame() -> None:
    trace = full("def boom(x):\n    return 1 // x\n\nboom(0)\n")
    assert frames(trace) == [
        ("call", {}, "def boom(x):\n", None),
        ("line", {}, "def boom(x):\n", None),
        ("line", {"boom": "<function boom>"}, "boom(0)\n", None),
        ("call", {"x": "0"}, "def boom(x):\n", None),
        ("line", {"x": ".."}, "    return 1 // x\n", None),
        ("exception", None, "    return 1 // x\n", ZDE),
        ("return", None, "    return 1 // x\n", "None"),
        ("exception", None, "boom(0)\n", ZDE),
        ("return", None, "boom(0)\n", "None"),
    ]
    assert trace.error is not None
    assert to_cwm_text(trace).endswith(
        f'<|exception_sep|><|action_sep|>boom(0)\n<|arg_sep|>"{ZDE}"<|frame_sep|>'
        '<|return_sep|><|action_sep|>boom(0)\n<|arg_sep|>"None"<|frame_sep|><|end_of_text|>'
    )


def test_a_generator_is_called_at_each_resumption_and_returns_at_each_yield() -> None:
    trace = full(
        "def gen(n):\n"
        "    for i in range(n):\n"
        "        yield i * 10\n"
        "\n"
        "total = 0\n"
        "for v in gen(2):\n"
        "    total += v\n"
    )
    assert frames(trace) == [
        ("call", {}, "def gen(n):\n", None),
        ("line", {}, "def gen(n):\n", None),
        ("line", {"gen": "<function gen>"}, "total = 0\n", None),
        ("line", {"gen": "..", "total": "0"}, "for v in gen(2):\n", None),
        ("call", {"n": "2"}, "def gen(n):\n", None),
        ("line", {"n": ".."}, "    for i in range(n):\n", None),
        ("line", {"n": "..", "i": "0"}, "        yield i * 10\n", None),
        ("return", None, "        yield i * 10\n", "0"),
        ("line", {"gen": "<function gen>", "total": "0", "v": "0"}, "    total += v\n", None),
        ("line", {"gen": "..", "total": "..", "v": ".."}, "for v in gen(2):\n", None),
        # Resumed: a call frame at the yield, with everything the generator holds.
        ("call", {"n": "2", "i": "0"}, "        yield i * 10\n", None),
        ("line", {"n": "..", "i": ".."}, "    for i in range(n):\n", None),
        ("line", {"n": "..", "i": "1"}, "        yield i * 10\n", None),
        ("return", None, "        yield i * 10\n", "10"),
        ("line", {"gen": "<function gen>", "total": "0", "v": "10"}, "    total += v\n", None),
        ("line", {"gen": "..", "total": "10", "v": ".."}, "for v in gen(2):\n", None),
        ("call", {"n": "2", "i": "1"}, "        yield i * 10\n", None),
        ("line", {"n": "..", "i": ".."}, "    for i in range(n):\n", None),
        ("return", None, "    for i in range(n):\n", "None"),
        ("return", None, "for v in gen(2):\n", "None"),
    ]


def test_a_library_call_is_left_out_and_a_callback_from_it_is_kept() -> None:
    trace = full(
        "import json\n"
        "\n"
        "def enc(o):\n"
        "    return str(o)\n"
        "\n"
        's = json.dumps(b"x", default=enc)\n'
        "t = s\n"
    )
    json_repr = f"<module 'json' from {json.__file__!r}>"
    dumped = repr(json.dumps("b'x'"))
    assert frames(trace) == [
        ("call", {}, "import json\n", None),
        ("line", {}, "import json\n", None),
        ("line", {"json": json_repr}, "def enc(o):\n", None),
        (
            "line",
            {"json": "..", "enc": "<function enc>"},
            's = json.dumps(b"x", default=enc)\n',
            None,
        ),
        ("call", {"o": "b'x'"}, "def enc(o):\n", None),
        ("line", {"o": ".."}, "    return str(o)\n", None),
        ("return", None, "    return str(o)\n", "\"b'x'\""),
        (
            "line",
            {"json": json_repr, "enc": "<function enc>", "s": dumped},
            "t = s\n",
            None,
        ),
        ("return", None, "t = s\n", "None"),
    ]
    assert all(f["function"] != "dumps" for f in to_cwm(trace))


def test_without_a_callback_the_library_call_does_not_break_the_chain() -> None:
    trace = full("import json\nx = 1\ns = json.dumps(x)\ny = 2\n")
    got = frames(trace)
    assert [f["function"] for f in to_cwm(trace)].count("dumps") == 0
    assert got[-2] == ("line", {"json": "..", "x": "..", "s": "'1'"}, "y = 2\n", None)


def test_the_entry_marker_goes_on_the_first_frames_def_line() -> None:
    source = "def helper(x):\n    return x + 1\n\ndef main():\n    y = helper(1)\n    return y\n"
    file = "<cell-900>"
    linecache.cache[file] = (len(source), None, source.splitlines(True), file)
    try:
        namespace: dict[str, Any] = {"__name__": "__main__"}
        exec(compile(source, file, "exec"), namespace)
        trace = record(namespace["main"], {"mode": "full"})
    finally:
        linecache.cache.pop(file, None)
    text = to_cwm_text(trace)
    assert text.startswith(
        "<|trace_context_start|>def helper(x):\n    return x + 1\n\n"
        "def main():  # << START_OF_TRACE\n    y = helper(1)\n    return y\n<|frame_sep|>"
        "<|call_sep|>{}<|action_sep|>def main():\n<|frame_sep|>"
        "<|line_sep|>{}<|action_sep|>    y = helper(1)\n<|frame_sep|>"
        '<|call_sep|>{"x": "1"}<|action_sep|>def helper(x):\n<|frame_sep|>'
    )
    assert text.endswith(
        '<|line_sep|>{"y": "2"}<|action_sep|>    return y\n<|frame_sep|>'
        '<|return_sep|><|action_sep|>    return y\n<|arg_sep|>"2"<|frame_sep|><|end_of_text|>'
    )


def test_a_truncated_trace_ends_without_end_of_text() -> None:
    trace = full(
        "def f(n):\n    s = 0\n    return s\n\nfor k in range(5):\n    f(k)\n", max_steps=7
    )
    assert trace.truncation is not None
    got = frames(trace)
    assert len(got) == 7
    assert got[-1] == ("line", {"n": "..", "s": "0"}, "    return s\n", None)
    text = to_cwm_text(trace)
    assert not text.endswith("<|end_of_text|>")
    assert text.endswith(
        '<|line_sep|>{"n": "..", "s": "0"}<|action_sep|>    return s\n<|frame_sep|>'
    )


def test_a_cut_value_keeps_its_marker_and_is_compared_as_shown() -> None:
    trace = full('s = "ab" * 200\nt = 1\n', max_repr_chars=20)
    cut = "'abababababababababab'...<cut: 380 more chars>"
    assert frames(trace) == [
        ("call", {}, 's = "ab" * 200\n', None),
        ("line", {}, 's = "ab" * 200\n', None),
        ("line", {"s": cut}, "t = 1\n", None),
        ("return", None, "t = 1\n", "None"),
    ]


def test_deleted_locals_leave_the_frame() -> None:
    trace = full("a = 1\nb = 2\ndel a\nc = 3\n")
    assert frames(trace)[-2:] == [
        ("line", {"b": ".."}, "c = 3\n", None),
        ("return", None, "c = 3\n", "None"),
    ]


def test_a_trace_without_steps_gives_no_frames() -> None:
    trace = record("x = 1\n", {"mode": "steps"})
    assert to_cwm(trace) == []
    assert to_cwm_text(trace) == ""


def _parse(text: str) -> Iterator[tuple[str, Any, str, Any]]:
    """Read CWM text back the way the reference reader (cwmdbg.py) does."""
    body = text.split("<|frame_sep|>", 1)[1].removesuffix("<|end_of_text|>")
    for piece in body.split("<|frame_sep|>")[:-1]:
        m = re.fullmatch(
            r"<\|(\w+)_sep\|>(.*?)<\|action_sep\|>(.*?)(?:<\|arg_sep\|>(.*))?", piece, re.S
        )
        assert m is not None, piece
        event, local_vars, action, arg = m.groups()
        yield (
            event,
            json.loads(local_vars) if local_vars else None,
            action,
            None if arg is None else json.loads(arg),
        )


@pytest.mark.parametrize(
    "source",
    [
        "def f(a):\n    b = [a, 'x\"y']\n    return b\n\nf('é')\n",
        "def g():\n    raise KeyError('k')\n\ntry:\n    g()\nexcept KeyError:\n    pass\n",
    ],
)
def test_the_text_reads_back_as_the_frames(source: str) -> None:
    trace = full(source)
    assert list(_parse(to_cwm_text(trace))) == frames(trace)
