"""Process rewards from traces: questions with verified answers, grading, line labels."""

from __future__ import annotations

import pytest

from tracebox.trace import TraceConfig, record
from tracebox.types import ErrorInfo
from tracebox.verify import Question, TestResult, Verdict, grade, line_labels, questions

PROGRAM = """\
def total(n):
    s = 0
    for i in range(n):
        s += i
    return s
x = total(3)
label = "done" if x == 3 else "no"
"""


@pytest.fixture(scope="module")
def trace():  # type: ignore[no-untyped-def]
    return record(PROGRAM, TraceConfig(mode="full"))


def test_answers_are_what_the_trace_proves(trace) -> None:  # type: ignore[no-untyped-def]
    qs = questions(trace, max_questions=1000)
    assert qs and len({(q.kind, q.step, q.variable) for q in qs}) == len(qs)
    steps = trace.steps
    for q in qs:
        s = steps[q.step]
        assert s.event == "line" and q.line == s.line and q.function == s.function
        assert q.source == PROGRAM.splitlines()[s.line - 1]
        if q.kind == "next_line":
            after = next(t for t in steps[q.step + 1 :] if t.event == "line")
            assert q.answer == str(after.line)
            assert q.answer_source == PROGRAM.splitlines()[after.line - 1]
        else:
            value = trace.locals_at(q.step)[q.variable]
            assert q.answer == (value.repr if q.kind == "value" else value.type)
        assert grade(q, q.answer) == 1.0
    assert {q.kind for q in qs} == {"next_line", "value", "type"}
    assert not any(q.answer.startswith("<function") for q in qs)


def test_questions_are_drawn_reproducibly(trace) -> None:  # type: ignore[no-untyped-def]
    a = questions(trace, max_questions=5, seed=1)
    assert a == questions(trace, max_questions=5, seed=1)
    assert len(a) == 5
    assert {q.kind for q in questions(trace, kinds=["type"])} == {"type"}


def test_only_full_traces_have_questions() -> None:
    with pytest.raises(ValueError, match="full trace"):
        questions(record(PROGRAM, TraceConfig(mode="steps")))


def _q(kind: str, answer: str, source: str = "") -> Question:
    variable = None if kind == "next_line" else "v"
    fields = {"kind": kind, "step": 3, "function": "f", "line": 2, "source": "", "prompt": "?"}
    return Question.model_validate(
        {**fields, "answer": answer, "answer_source": source, "variable": variable}
    )


@pytest.mark.parametrize(
    ("answer", "score"),
    [("4", 1.0), (" line 4 ", 1.0), ("Line 4.", 1.0), ("5", 0.0), ("s += i", 1.0),
     ("`s  +=  i`", 1.0), ("s = i", 0.0), ("", 0.0)],
)  # fmt: skip
def test_grading_next_line(answer: str, score: float) -> None:
    assert grade(_q("next_line", "4", "        s += i"), answer) == score


@pytest.mark.parametrize(
    ("expected", "answer", "score"),
    [
        ("[1, 2]", "[1,2]", 1.0),
        ("[1, 2]", "[1, 2.0]", 0.0),
        ("1", "True", 0.0),
        ("1.0", "1", 0.0),
        ("{'a': (1, 'x')}", "{'a':(1,'x')}", 1.0),
        ("'ab'", '"ab"', 1.0),
        ("<Node object>", "<Node  object>", 1.0),
        ("<Node object>", "Node", 0.0),
        ("nan", "nan", 1.0),
    ],
)
def test_grading_values_is_type_strict(expected: str, answer: str, score: float) -> None:
    assert grade(_q("value", expected), answer) == score


@pytest.mark.parametrize(
    ("expected", "answer", "score"),
    [("int", "int", 1.0), ("int", "<class 'int'>", 1.0), ("int", "float", 0.0),
     ("collections.deque", "deque", 1.0), ("Node", "__main__.Node", 1.0)],
)  # fmt: skip
def test_grading_types(expected: str, answer: str, score: float) -> None:
    assert grade(_q("type", expected), answer) == score


def _t(index: int, status: str, lines: tuple[int, ...] | None) -> TestResult:
    err = None if status == "passed" else ErrorInfo(type="AssertionError", message="")
    fields = {"index": index, "name": f"t{index}", "status": status, "calls": 1}
    return TestResult.model_validate({**fields, "error": err, "lines": lines})


def test_line_labels_diff_the_lines_of_passing_and_failing_tests() -> None:
    program = "def f(x):\n    if x > 0:\n        return x\n    return -x + 1\n"
    verdict = Verdict(
        task_id="T",
        status="failed",
        passed=False,
        tests=(
            _t(0, "passed", (2, 3)),
            _t(1, "failed", (2, 4)),
            _t(2, "timeout", (2, 4)),
            _t(3, "sandbox_error", (1,)),
        ),
    )
    labels = line_labels(verdict, program)
    assert [(x.line, x.label, x.passing, x.failing) for x in labels] == [
        (2, "both", 1, 2),
        (3, "passing_only", 1, 0),
        (4, "failing_only", 0, 2),
    ]
    assert labels[2].text == "    return -x + 1"


def test_line_labels_need_coverage() -> None:
    verdict = Verdict(task_id="T", status="failed", passed=False, tests=(_t(0, "failed", None),))
    with pytest.raises(ValueError, match="coverage"):
        line_labels(verdict, "")
