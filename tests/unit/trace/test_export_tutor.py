"""Python Tutor export: entry structure, value encodings, globals vs stack frames, heap refs."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tracebox.trace import Trace, Value, record
from tracebox.trace.export.tutor import to_tutor

ENTRY_KEYS = [
    "line",
    "event",
    "func_name",
    "globals",
    "ordered_globals",
    "stack_to_render",
    "heap",
    "stdout",
]
FRAME_KEYS = {
    "func_name",
    "frame_id",
    "encoded_locals",
    "ordered_varnames",
    "is_highlighted",
    "is_parent",
    "is_zombie",
    "parent_frame_id_list",
    "unique_hash",
}


def full(source: str, **config: Any) -> Trace:
    return record(source, {"mode": "full", **config})


def frame(name: str, fid: int, local_vars: dict[str, Any], top: bool = True) -> dict[str, Any]:
    return {
        "func_name": name,
        "is_parent": False,
        "frame_id": fid,
        "parent_frame_id_list": [],
        "encoded_locals": local_vars,
        "ordered_varnames": list(local_vars),
        "is_zombie": False,
        "is_highlighted": top,
        "unique_hash": f"{name}_f{fid}",
    }


def entry(
    line: int,
    event: str,
    func: str,
    globals_: dict[str, Any],
    stack: list[dict[str, Any]],
    *,
    heap: dict[str, Any],
) -> dict[str, Any]:
    return {
        "line": line,
        "event": event,
        "func_name": func,
        "globals": globals_,
        "ordered_globals": list(globals_),
        "stack_to_render": stack,
        "heap": heap,
        "stdout": "",
    }


def test_a_call_that_changes_a_list_entry_by_entry() -> None:
    source = "def f(xs):\n    xs.append(3)\n    return len(xs)\n\na = [1, 2]\nk = f(a)\n"
    out = to_tutor(full(source))
    fn = ["function", "<function f>"]
    f_a = {"f": ["REF", 1], "a": ["REF", 2]}
    assert out == {
        "code": source,
        "trace": [
            entry(1, "step_line", "<module>", {}, [], heap={}),
            entry(5, "step_line", "<module>", {"f": ["REF", 1]}, [], heap={"1": fn}),
            entry(6, "step_line", "<module>", f_a, [], heap={"1": fn, "2": ["LIST", 1, 2]}),
            entry(
                1, "call", "f", f_a, [frame("f", 1, {"xs": ["REF", 2]})],
                heap={"1": fn, "2": ["LIST", 1, 2]},
            ),
            entry(
                2, "step_line", "f", f_a, [frame("f", 1, {"xs": ["REF", 2]})],
                heap={"1": fn, "2": ["LIST", 1, 2]},
            ),
            # The callee changed the list: the heap shows it, for the global alias too.
            entry(
                3, "step_line", "f", f_a, [frame("f", 1, {"xs": ["REF", 2]})],
                heap={"1": fn, "2": ["LIST", 1, 2, 3]},
            ),
            entry(
                3, "return", "f", f_a, [frame("f", 1, {"xs": ["REF", 2], "__return__": 3})],
                heap={"1": fn, "2": ["LIST", 1, 2, 3]},
            ),
            entry(
                6, "return", "<module>", {**f_a, "k": 3}, [],
                heap={"1": fn, "2": ["LIST", 1, 2, 3]},
            ),
        ],
    }  # fmt: skip


def test_every_entry_has_tutors_keys_and_the_whole_is_json() -> None:
    trace = full("def g(x):\n    y = x * 2.5\n    return y\n\nz = g(2)\nw = float('nan')\n")
    out = to_tutor(trace)
    assert out == trace.to_tutor()
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    events = set()
    for e in out["trace"]:
        assert list(e) == ENTRY_KEYS
        assert e["stdout"] == ""
        events.add(e["event"])
        for f in e["stack_to_render"]:
            assert set(f) == FRAME_KEYS
            assert list(f["encoded_locals"]) == f["ordered_varnames"]
    assert events == {"step_line", "call", "return"}
    # The module's call is not an entry: the trace starts at its first line.
    assert out["trace"][0]["event"] == "step_line"
    assert out["trace"][0]["line"] == 1


def test_scalars_are_tutors_primitives_and_other_values_heap_objects() -> None:
    source = (
        "class Node:\n"
        "    pass\n"
        "\n"
        "i = 7\n"
        "fl = 1.5\n"
        "whole = 2.0\n"
        "third = 1 / 3\n"
        "inf = float('inf')\n"
        "nan = float('nan')\n"
        "yes = True\n"
        "nothing = None\n"
        "s = 'a\"b'\n"
        "long = 'xy' * 100\n"
        "c = 2j\n"
        "raw = b'hi'\n"
        "t = (1, 'a', None)\n"
        "st = {3}\n"
        "d = {'k': 1.25}\n"
        "nested = [[1], 2]\n"
        "alias = nested\n"
        "obj = Node()\n"
    )
    trace = full(source, max_repr_chars=20)
    last = to_tutor(trace)["trace"][-1]
    g, heap = last["globals"], last["heap"]
    assert last["event"] == "return"
    assert {
        k: g[k] for k in ("i", "fl", "whole", "third", "inf", "nan", "yes", "nothing", "s")
    } == {
        "i": 7,
        "fl": 1.5,
        "whole": ["SPECIAL_FLOAT", "2.0"],
        "third": 0.3333,
        "inf": ["SPECIAL_FLOAT", "Infinity"],
        "nan": ["SPECIAL_FLOAT", "NaN"],
        "yes": True,
        "nothing": None,
        "s": 'a"b',
    }

    def deref(name: str) -> Any:
        ref = g[name]
        assert ref[0] == "REF"
        return heap[str(ref[1])]

    assert deref("t") == ["TUPLE", 1, "a", None]
    assert deref("st") == ["SET", 3]
    assert deref("d") == ["DICT", ["k", 1.25]]
    assert deref("nested") == ["list", "[[1], 2]"]  # not only primitives: opaque
    assert g["alias"] == g["nested"]
    assert deref("obj") == ["Node", "<__main__.Node object>"]
    assert deref("Node") == ["type", "<class '__main__.Node'>"]
    assert deref("long") == ["str", "'xyxyxyxyxyxyxyxyxyxy'...<cut: 180 more chars>"]
    assert deref("c") == ["complex", "2j"]
    assert deref("raw") == ["bytes", "b'hi'"]
    # Values without an object id get ids the trace does not use.
    trace_ids = {v.id for s in trace.steps for v in s.changed.values()}
    made_up = {g[k][1] for k in ("long", "c", "raw")}
    assert len(made_up) == 3
    assert not made_up & trace_ids
    assert list(last["ordered_globals"]) == list(g)


def test_a_class_body_is_skipped_like_pg_logger_does() -> None:
    trace = full(
        "import dataclasses\n\n@dataclasses.dataclass\nclass P:\n    x: int = 1\n\np = P()\n"
    )
    out = to_tutor(trace)
    assert all(f["func_name"] != "P" for e in out["trace"] for f in e["stack_to_render"])
    assert [(e["event"], e["line"], e["func_name"]) for e in out["trace"]] == [
        ("step_line", 1, "<module>"),
        ("step_line", 3, "<module>"),  # the decorator
        ("step_line", 4, "<module>"),  # the class statement: its body runs, unseen
        ("step_line", 3, "<module>"),  # the decorator applied
        ("step_line", 4, "<module>"),
        ("step_line", 7, "<module>"),
        ("return", 7, "<module>"),
    ]


def test_globals_are_the_module_and_the_stack_holds_the_calls_outermost_first() -> None:
    trace = full(
        "def fact(n):\n"
        "    if n <= 1:\n"
        "        return 1\n"
        "    return n * fact(n - 1)\n"
        "\n"
        "r = fact(2)\n"
    )
    out = to_tutor(trace)["trace"]
    inner_return = next(e for e in out if e["event"] == "return" and e["line"] == 3)
    assert inner_return["globals"] == {"fact": ["REF", 1]}
    assert inner_return["stack_to_render"] == [
        frame("fact", 1, {"n": 2}, top=False),
        frame("fact", 2, {"n": 1, "__return__": 1}),
    ]
    assert inner_return["func_name"] == "fact"
    module_steps = [e for e in out if e["func_name"] == "<module>"]
    assert module_steps
    assert all(e["stack_to_render"] == [] for e in module_steps)
    assert out[-1]["globals"] == {"fact": ["REF", 1], "r": 2}


def test_a_generator_keeps_its_frame_id_across_resumptions() -> None:
    trace = full(
        "def gen(n):\n"
        "    for i in range(n):\n"
        "        yield i\n"
        "\n"
        "total = 0\n"
        "for v in gen(2):\n"
        "    total += v\n"
    )
    out = to_tutor(trace)["trace"]
    calls = [e for e in out if e["event"] == "call"]
    assert [c["line"] for c in calls] == [1, 3, 3]
    assert [c["stack_to_render"] for c in calls] == [
        [frame("gen", 1, {"n": 2})],
        [frame("gen", 1, {"n": 2, "i": 0})],
        [frame("gen", 1, {"n": 2, "i": 1})],
    ]
    returns = [e for e in out if e["event"] == "return" and e["func_name"] == "gen"]
    yields = [e["stack_to_render"][0]["encoded_locals"]["__return__"] for e in returns]
    assert yields == [0, 1, None]


def test_a_caught_exception_has_its_message() -> None:
    trace = full(
        "def safe(x):\n"
        "    try:\n"
        "        return 10 // x\n"
        "    except ZeroDivisionError:\n"
        "        return -1\n"
        "\n"
        "r = safe(0)\n"
    )
    out = to_tutor(trace)["trace"]
    exc = [e for e in out if e["event"] == "exception"]
    assert len(exc) == 1
    assert exc[0]["exception_msg"] == "ZeroDivisionError: integer division or modulo by zero"
    assert (exc[0]["line"], exc[0]["func_name"]) == (3, "safe")
    assert exc[0]["stack_to_render"] == [frame("safe", 1, {"x": 0})]
    assert out[-1]["event"] == "return"
    assert out[-1]["globals"] == {"safe": ["REF", 1], "r": -1}


def test_an_uncaught_exception_ends_the_trace_at_the_module() -> None:
    trace = full("def boom(x):\n    return 1 // x\n\nboom(0)\n")
    out = to_tutor(trace)["trace"]
    assert [(e["event"], e["line"], e["func_name"]) for e in out] == [
        ("step_line", 1, "<module>"),
        ("step_line", 4, "<module>"),
        ("call", 1, "boom"),
        ("step_line", 2, "boom"),
        ("exception", 2, "boom"),
        ("return", 2, "boom"),
        ("exception", 4, "<module>"),  # pg_logger drops the module's return after it
    ]
    assert out[5]["stack_to_render"][0]["encoded_locals"] == {"x": 0, "__return__": None}
    assert out[-1]["exception_msg"] == "ZeroDivisionError: integer division or modulo by zero"


def test_an_error_without_exception_steps_is_an_uncaught_exception_entry() -> None:
    trace = dataclasses.replace(full("x = 1\n"), error=Value("ValueError('bad')", "ValueError"))
    out = to_tutor(trace)["trace"]
    assert out[-1] == {"event": "uncaught_exception", "exception_msg": "ValueError: bad"}
    assert out[-2]["event"] == "return"


@pytest.mark.parametrize(
    "raised",
    ["KeyError('k')", "ValueError()", "ValueError(1, 'two')", "TypeError('a b')"],
)
def test_exception_messages_read_as_python_prints_them(raised: str) -> None:
    trace = full(f"try:\n    raise {raised}\nexcept Exception:\n    pass\n")
    exc = next(e for e in to_tutor(trace)["trace"] if e["event"] == "exception")
    error = eval(raised)
    assert exc["exception_msg"] == f"{type(error).__name__}: {error}"


def test_a_truncated_trace_ends_with_instruction_limit_reached() -> None:
    trace = full("n = 0\nfor i in range(100):\n    n += i\n", max_steps=10)
    assert trace.truncation is not None
    out = to_tutor(trace)["trace"]
    assert out[-1]["event"] == "instruction_limit_reached"
    assert "max_steps" in out[-1]["exception_msg"]
    assert len(out) == 10  # 10 steps, less the module's call, plus the limit entry
    assert all(list(e) == ENTRY_KEYS for e in out[:-1])


def test_library_frames_are_not_shown_but_their_callbacks_are() -> None:
    trace = full(
        'import json\n\ndef enc(o):\n    return str(o)\n\ns = json.dumps(b"x", default=enc)\n'
    )
    out = to_tutor(trace)["trace"]
    assert all(e["func_name"] != "dumps" for e in out)
    call = next(e for e in out if e["event"] == "call")
    [enc] = call["stack_to_render"]
    assert enc == frame("enc", 1, {"o": enc["encoded_locals"]["o"]})
    assert call["heap"][str(enc["encoded_locals"]["o"][1])] == ["bytes", "b'x'"]
    assert list(call["globals"]) == ["json", "enc"]
    assert call["heap"][str(call["globals"]["json"][1])][0] == "module"


def test_a_trace_without_steps_gives_an_empty_trace() -> None:
    assert to_tutor(record("x = 1\n", {"mode": "steps"})) == {"code": "", "trace": []}
