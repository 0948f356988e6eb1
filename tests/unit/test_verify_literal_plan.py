"""Literal tests: which tests the host can check itself, and how it checks them (no sandbox)."""

from __future__ import annotations

import pytest

from tracebox.types import ErrorInfo
from tracebox.verify import FunctionProblem
from tracebox.verify._plan import plan
from tracebox.verify.functions import _checked, _items, _seen_by_tests


def _problem(test: str, entry: str = "inc") -> FunctionProblem:
    return FunctionProblem(task_id="T", prompt="", entry_point=entry, test=test)


def _literals(test: str, entry: str = "inc") -> list[tuple[str, ...] | None]:
    out: list[tuple[str, ...] | None] = []
    for u in plan(_problem(test, entry)).tests:
        lit = u.literal
        out.append(None if lit is None else (lit.function, lit.form))
    return out


def test_the_literal_shapes() -> None:
    test = (
        "def check(candidate):\n"
        "    assert candidate(1) == 2\n"
        "    assert 2 == candidate(x=1)\n"
        "    assert candidate([1, (2, 3)], {'a': {1, 2}}) is None\n"
        "    assert candidate(-1.5e3, b'x')\n"
        "    assert not candidate('s'), 'a message'\n"
        "    assert candidate(1) is True\n"
        "    assert candidate(1) == 2, f'{1}'\n"  # not a literal message
        "    assert candidate(len('x')) == 2\n"  # not a literal argument
        "    assert candidate(*[1]) == 2\n"
        "    assert candidate(1) != 2\n"
        "    assert candidate(1) is 3\n"
        "    assert candidate(1) == candidate(2)\n"
        "    assert abs(candidate(1) - 2) < 1e-6\n"
        "    assert inc(1) == 2\n"
    )
    assert _literals(test) == [
        ("inc", "eq"),
        ("inc", "req"),
        ("inc", "is"),
        ("inc", "truthy"),
        ("inc", "falsy"),
        ("inc", "is"),
        *[None] * 7,
        ("inc", "eq"),
    ]
    p = plan(_problem(test))
    assert [u.index for u in p.host_tests] == [0, 1, 2, 3, 4, 5]
    first = p.tests[1].literal
    assert first is not None and first.args == () and first.kwargs == {"x": 1}
    assert p.tests[4].literal is not None and p.tests[4].literal.message == ("a message",)


@pytest.mark.parametrize(
    "setup",
    [
        "    candidate = lambda x: x + 1\n",
        "    def candidate(x):\n        return x\n",
        "    from math import *\n",
        "    globals()['x'] = 1\n",
        "    import sys\n",
        "    for candidate in [1]:\n        pass\n",
    ],
)
def test_nothing_is_literal_when_the_test_code_may_rebind_the_candidate(setup: str) -> None:
    test = "def check(candidate):\n    assert candidate(1) == 2\n" + setup
    test += "    assert candidate(2) == 3\n"
    assert set(_literals(test)) == {None}


def test_module_level_tests_by_the_entry_points_name() -> None:
    assert _literals("assert inc(1) == 2\nassert inc(2) == 3\n") == [("inc", "eq")] * 2
    assert _literals("def inc(x):\n    return 0\nassert inc(1) == 2\n") == [None]


def test_the_host_checks_as_the_assert_would() -> None:
    p = plan(_problem("def check(candidate):\n    assert candidate(1) == [1, 2.0], 'm'\n"))
    lit = p.tests[0].literal
    assert lit is not None
    assert _checked(lit, [1, 2]) == ("passed", None)
    assert _checked(lit, (1, 2)) == ("failed", ErrorInfo(type="AssertionError", message="m"))
    p = plan(_problem("def check(candidate):\n    assert candidate(1) is True\n"))
    lit = p.tests[0].literal
    assert lit is not None
    assert _checked(lit, 1) == ("failed", ErrorInfo(type="AssertionError", message=""))
    assert _checked(lit, True) == ("passed", None)


def test_a_candidates_exception_is_seen_as_the_test_code_sees_it() -> None:
    status, err = _seen_by_tests(ErrorInfo(type="KeyError", message="k"))
    assert (status, err) == ("error", ErrorInfo(type="KeyError", message="'k'"))
    status, err = _seen_by_tests(ErrorInfo(type="AssertionError", message="no"))
    assert status == "failed" and err is not None and err.message == "no"
    status, err = _seen_by_tests(ErrorInfo(type="MyError", message="m"))
    assert (status, err) == ("error", ErrorInfo(type="ToolError", message="MyError: m"))


@pytest.mark.parametrize(
    "answer",
    [
        [],
        None,
        [("ok", b"x", 0.0)] * 3,  # more answers than calls
        [("ok", "not bytes", 0.0)],
        [("ok", b"x", -1.0)],
        [("ok", b"x", 1)],
        [("weird", None, 0.0)],
        [("error", {"type": "E"}, 0.0)],
        [("too_large", "1", 0.0)],
    ],
)
def test_a_malformed_helper_answer_is_refused(answer: object) -> None:
    assert _items(answer, 2) is None


def test_a_well_formed_helper_answer() -> None:
    err = {"type": "E", "message": "m", "traceback": ""}
    answer = [("ok", b"x", 0.5), ("error", err, 0.0)]
    assert _items(answer, 2) == [(*item, None, None) for item in answer]
    assert _items(answer, 2, traced=True) is None  # no step counts


@pytest.mark.parametrize(
    "answer",
    [
        [("ok", b"x", 0.0)],  # no step count
        [("ok", b"x", 0.0, None, None)],
        [("ok", b"x", 0.0, -1, None)],
        [("ok", b"x", 0.0, 1.0, None)],
        [("ok", b"x", 0.0, True, None)],
        [("ok", b"x", 0.0, 3, "bored")],
        [("ok", b"x", 0.0, 3, None, None)],
    ],
)
def test_a_malformed_traced_helper_answer_is_refused(answer: object) -> None:
    assert _items(answer, 2, traced=True) is None


def test_a_well_formed_traced_helper_answer() -> None:
    err = {"type": "E", "message": "m", "traceback": ""}
    answer = [("ok", b"x", 0.5, 12, None), ("error", err, 0.0, 40, "recursion_limit")]
    assert _items(answer, 2, traced=True) == answer
    assert _items(answer, 2) is None
