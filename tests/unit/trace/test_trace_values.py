"""Full mode's values: locals deltas, locals_at, identity, bounded and guarded rendering."""

from __future__ import annotations

import collections
import textwrap

import pytest

from tracebox.trace import Step, Trace, TraceConfig, Value, record
from tracebox.trace._flat import FlatItems
from tracebox.trace.render import Renderer


def full(source: str, **config: object) -> Trace:
    return record(textwrap.dedent(source), TraceConfig(mode="full", **config))  # type: ignore[arg-type]


def of(trace: Trace, function: str) -> list[Step]:
    return [s for s in trace.steps if s.function == function]


def reprs(values: dict[str, Value] | object) -> dict[str, str]:
    assert isinstance(values, dict)
    return {k: v.repr for k, v in values.items()}


def test_locals_are_stored_as_deltas_and_rebuilt_by_locals_at() -> None:
    t = full("""
        def f(a):
            b = a + 1
            c = b * 2
            del b
            return c
        r = f(1)
    """)
    steps = of(t, "f")
    assert [(s.event, s.line) for s in steps] == [
        ("call", 2), ("line", 3), ("line", 4), ("line", 5), ("line", 6), ("return", 6),
    ]  # fmt: skip
    assert [reprs(dict(s.changed)) for s in steps] == [
        {"a": "1"}, {}, {"b": "2"}, {"c": "4"}, {}, {},
    ]  # fmt: skip
    assert steps[4].deleted == ("b",)  # the line after `del b`
    assert steps[5].value == Value("4", "int", None, False)
    assert reprs(t.locals_at(steps[3].index)) == {"a": "1", "b": "2", "c": "4"}
    assert reprs(t.locals_at(steps[4].index)) == {"a": "1", "c": "4"}
    module = of(t, "<module>")
    assert reprs(t.locals_at(module[-1].index)) == {"f": "<function f>", "r": "4"}


def test_two_names_for_one_list_share_an_id_and_a_mutation_is_a_change() -> None:
    t = full("""
        xs = [1, 2]
        ys = xs
        xs.append(3)
        zs = list(xs)
        done = True
    """)
    lines = [s for s in t.steps if s.event == "line"]
    assert reprs(dict(lines[2].changed)) == {"ys": "[1, 2]"}
    xs, ys = t.locals_at(lines[2].index)["xs"], t.locals_at(lines[2].index)["ys"]
    assert xs.id is not None and xs.id == ys.id
    after_append = lines[3].changed
    assert reprs(dict(after_append)) == {"xs": "[1, 2, 3]", "ys": "[1, 2, 3]"}
    assert after_append["xs"].id == xs.id
    zs = lines[4].changed["zs"]
    assert zs.repr == "[1, 2, 3]" and zs.id not in (None, xs.id)


def test_a_returned_object_keeps_its_id_when_bound_by_the_caller() -> None:
    t = full("""
        def make():
            return {"k": [1]}
        got = make()
        again = got
    """)
    returned = next(s for s in t.steps if s.event == "return" and s.function == "make")
    assert returned.value is not None
    bound = t.locals_at(len(t) - 1)
    assert bound["got"].id == returned.value.id == bound["again"].id


def test_scalars_have_no_id_and_ids_count_from_one() -> None:
    t = full("""
        n = 10 ** 30
        s = "text"
        a = object()
        b = [a]
    """)
    final = t.locals_at(len(t) - 1)
    assert final["n"].id is None and final["s"].id is None
    assert (final["a"].id, final["b"].id) == (1, 2)
    assert final["a"].repr == "<object object>"


def test_exceptions_are_values_and_unwinding_returns_carry_none() -> None:
    t = full("""
        def fail(x):
            raise ValueError(f"bad {x}")
        try:
            fail(3)
        except ValueError as e:
            msg = str(e)
    """)
    raised = [s for s in t.steps if s.event == "exception"]
    assert [(s.function, s.line) for s in raised] == [("fail", 3), ("<module>", 5)]
    assert raised[0].value == Value("ValueError('bad 3')", "ValueError", raised[0].value.id, False)
    unwind = next(s for s in t.steps if s.event == "return" and s.function == "fail")
    assert unwind.value is None
    assert t.locals_at(len(t) - 1)["msg"].repr == "'bad 3'"


def test_hits_count_each_line_and_arcs_mark_jumps() -> None:
    t = full("""
        total = 0
        for i in range(3):
            if i % 2:
                total += 10
            else:
                total += 1
        end = total
    """)
    lines = [(s.line, s.hits, s.arc) for s in t.steps if s.event == "line"]
    assert [h for ln, h, _ in lines if ln == 3] == [1, 2, 3, 4]  # the for line, 3 + exit
    assert (4, 7) in {a for _, _, a in lines}  # the else branch jumps over line 5
    assert (7, 3) in {a for _, _, a in lines}  # loop back-edge
    assert t.coverage is not None
    assert t.coverage.lines["<cell-0>"] == (2, 3, 4, 5, 7, 8)


def test_a_generator_keeps_its_frame_id_across_resumptions() -> None:
    t = full("""
        def gen():
            yield 1
            yield 2
        out = list(gen())
    """)
    gen = of(t, "gen")
    assert {s.frame for s in gen} == {gen[0].frame}
    assert [s.event for s in gen].count("call") == 3
    yields = [s.value.repr for s in gen if s.event == "return" and s.value is not None]
    assert yields == ["1", "2", "None"]


def test_module_frames_show_the_names_their_code_uses_without_dunders() -> None:
    ns = {"__name__": "__main__", "unrelated": [1, 2, 3], "seen": 5}
    t = record("x = seen + 1\n", TraceConfig(mode="full"), namespace=ns)
    assert reprs(t.locals_at(len(t) - 1)) == {"seen": "5", "x": "6"}


def test_values_are_bounded_with_explicit_markers() -> None:
    t = full(
        """
        long = "x" * 500
        many = list(range(100))
        deep = [[[[[1]]]]]
        wide = {i: str(i) for i in range(50)}
        big = 10 ** 5000
        """,
        max_repr_chars=40,
        max_items=5,
        max_repr_depth=2,
    )
    final = t.locals_at(len(t) - 1)
    assert final["long"].repr == f"'{'x' * 40}'...<cut: 460 more chars>"
    assert final["many"].repr == "[0, 1, 2, 3, 4, ...<cut: 95 more items>]"
    assert final["deep"].repr == "[[[...<cut: 1 items, depth>]]]"
    assert final["wide"].repr == "{0: '0', 1: '1', 2: '2', 3: '3', 4: '4', ...<cut: 45 more items>}"
    assert final["big"].repr == "<int of 16610 bits; cut: too long to render>"
    assert all(final[k].cut for k in ("long", "many", "deep", "wide", "big"))


def test_user_reprs_are_guarded() -> None:
    t = full("""
        calls = []
        class Loud:
            def __repr__(self):
                calls.append("repr")
                return helper()
        def helper():
            return "Loud!"
        class Broken:
            def __repr__(self):
                raise RuntimeError("no repr for you")
        class Recursive:
            def __repr__(self):
                return f"R({self!r})"
        a = Loud()
        b = Broken()
        c = Recursive()
        done = len(calls) > 0
    """)
    final = t.locals_at(len(t) - 1)
    assert final["a"].repr == "Loud!"
    assert final["b"].repr == "<Broken object; cut: repr raised RuntimeError>"
    assert final["c"].repr == "<Recursive object; cut: repr raised RecursionError>"
    assert final["done"].repr == "True"
    # the __repr__ and helper ran inside the recorder: they are not steps of the program
    assert not [s for s in t.steps if s.function in ("Loud.__repr__", "helper")]


def test_a_slow_repr_is_skipped_after_the_first_time() -> None:
    t = full("""
        import time
        class Slow:
            def __repr__(self):
                time.sleep(0.06)
                return "slow"
        s = Slow()
        a = 1
        b = 2
    """)
    shown = [s.changed["s"].repr for s in t.steps if "s" in s.changed]
    assert shown == ["slow", "<Slow object; cut: repr skipped, slow>"]


def test_a_call_into_a_library_is_one_call_step() -> None:
    t = full("""
        import json
        text = json.dumps({"a": [1, 2]})
    """)
    library = [s for s in t.steps if t.frames[s.frame].library]
    assert [(s.event, s.function) for s in library] == [("call", "dumps"), ("return", "dumps")]
    assert library[0].file.endswith("json/__init__.py")
    assert library[1].value is not None and library[1].value.repr == """'{"a": [1, 2]}'"""
    assert all(s.depth == 1 for s in library)
    assert {s.file for s in t.steps} == {"<cell-0>", library[0].file}


def test_user_code_called_back_from_a_library_is_recorded_inside_its_call() -> None:
    t = full("""
        import json
        def default(o):
            return sorted(o)
        text = json.dumps({"s": {3, 1}}, default=default)
    """)
    events = [(s.event, s.function, s.depth) for s in t.steps if s.depth >= 1]
    assert events[0] == ("call", "dumps", 1)
    # dumps -> JSONEncoder.encode -> (C) -> default: library frames between are not counted
    assert ("call", "default", 2) in events
    assert events[-1] == ("return", "dumps", 1)


def test_trace_libraries_records_inside_library_code() -> None:
    t = full(
        """
        import json
        text = json.dumps([1])
        """,
        trace_libraries=True,
    )
    assert any(s.event == "line" and s.file.endswith("json/encoder.py") for s in t.steps)
    assert not any("tracebox" in s.file for s in t.steps)


def test_addresses_go_but_strings_that_look_like_them_stay() -> None:
    t = full("""
        def f():
            pass
        where = "mapped at 0x7f00deadbeef"
        fn = f
        obj = object()
    """)
    final = t.locals_at(len(t) - 1)
    assert final["where"].repr == "'mapped at 0x7f00deadbeef'"
    assert final["fn"].repr == "<function f>"
    assert final["obj"].repr == "<object object>"


SAMPLES: list[object] = [
    [1, 2.5, None, True],
    list(range(30)),
    (7,),
    {(1, 2): "a", (3,): "b"},
    {3, 1, 2},
    frozenset({(1, "x")}),
    collections.deque([(1, "x")] * 25, maxlen=30),
    ("s" * 10, (1,), ()),
    [("a", 1)] * 40,
    {i: (i, str(i)) for i in range(25)},
    [10**50, -3, 2**5000],
    [[1, 2], (3, [4])],
    {"k": "v" * 300},
]


def test_the_fast_paths_render_exactly_what_item_by_item_rendering_gives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = [Renderer(200, 3, 20).text(x) for x in SAMPLES]
    monkeypatch.setattr(FlatItems, "texts", lambda *args: None)
    monkeypatch.setattr(FlatItems, "whole", lambda *args: None)
    slow = [Renderer(200, 3, 20).text(x) for x in SAMPLES]
    assert fast == slow
    text, cut = fast[6]
    assert cut and text.startswith("deque([(1, 'x'), ") and text.endswith(" more chars>")
