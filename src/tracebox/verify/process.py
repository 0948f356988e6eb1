"""Process rewards from traces: questions about a run with verified answers, graded answers,
and per-line labels from which tests ran which lines.

- ``questions(trace)`` (ExecVerify-style): from a ``full`` trace, "which line runs after
  step k?" and "what is the value / the type of variable v at step k?", each with the
  answer the recording proves.
- ``grade(question, answer)`` scores a model's answer: 1.0 or 0.0 (see its docstring for
  what counts as the same answer).
- ``line_labels(verdict, program)`` (LDB-style): for a verdict made with
  ``VerifyConfig(trace="coverage")`` (or ``"full"``), each line of the program that a test
  ran, labelled by whether passing tests, failing tests or both ran it. Lines that only
  failing tests ran are where a bug most likely is.
"""

from __future__ import annotations

import ast
import itertools
import math
import random
import re
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tracebox.trace.model import Step, Trace
from tracebox.verify.results import Verdict

__all__ = ["LineLabel", "Question", "QuestionKind", "grade", "line_labels", "questions"]

QuestionKind = Literal["next_line", "value", "type"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Question(_Frozen):
    """A question about one step of a recorded run, with its verified answer."""

    kind: QuestionKind
    step: int
    """Index of the step the question is about."""
    function: str
    line: int
    """The line about to run at that step."""
    source: str
    """That line's text."""
    variable: str | None = None
    prompt: str
    """The question, in words."""
    answer: str
    """``next_line``: the line number; ``value``: the value's repr; ``type``: its type."""
    answer_source: str = ""
    """``next_line``: the text of that line (also accepted as an answer)."""


class LineLabel(_Frozen):
    line: int
    text: str
    passing: int
    """Passing tests that ran this line."""
    failing: int
    """Failing tests (failed, error, timeout, memory) that ran it."""
    label: Literal["failing_only", "passing_only", "both"]


# values whose repr says little (``<function f>``): never asked about
_NOT_ASKED = frozenset({"function", "module", "type", "builtin_function_or_method", "method"})


def _line_steps(trace: Trace) -> list[Step]:
    return [s for s in trace.steps if s.event == "line"]


def questions(
    trace: Trace,
    *,
    max_questions: int = 20,
    seed: int = 0,
    kinds: Sequence[QuestionKind] = ("next_line", "value", "type"),
) -> list[Question]:
    """Up to ``max_questions`` questions about ``trace`` (a ``full`` trace), drawn with
    ``random.Random(seed)``: the same trace and seed give the same questions. Values whose
    recording was cut (``Value.cut``) are never asked about."""
    if trace.mode != "full":
        raise ValueError(f"questions need a full trace (this one is {trace.mode!r})")
    lines = _line_steps(trace)
    pool: list[Question] = []
    for a, b in itertools.pairwise(lines):
        if "next_line" in kinds:
            pool.append(_next_line(trace, a, b))
    if "value" in kinds or "type" in kinds:
        for s in lines:
            for name, value in sorted(trace.locals_at(s.index).items()):
                if value.cut or value.type in _NOT_ASKED:
                    continue
                where = _where(trace, s)
                if "value" in kinds:
                    pool.append(
                        Question(
                            kind="value", step=s.index, function=s.function, line=s.line,
                            source=trace.source_line(s.file, s.line), variable=name,
                            prompt=f"{where}, what is the value of `{name}`? Answer with its repr.",
                            answer=value.repr,
                        )
                    )  # fmt: skip
                if "type" in kinds:
                    pool.append(
                        Question(
                            kind="type", step=s.index, function=s.function, line=s.line,
                            source=trace.source_line(s.file, s.line), variable=name,
                            prompt=f"{where}, what is the type of `{name}`?",
                            answer=value.type,
                        )
                    )  # fmt: skip
    rng = random.Random(seed)
    chosen = rng.sample(pool, min(max_questions, len(pool)))
    return sorted(chosen, key=lambda q: (q.step, q.kind, q.variable or ""))


def _where(trace: Trace, s: Step) -> str:
    text = trace.source_line(s.file, s.line).strip()
    return f"At step {s.index}, when line {s.line} of `{s.function}` (`{text}`) is about to run"


def _next_line(trace: Trace, a: Step, b: Step) -> Question:
    return Question(
        kind="next_line",
        step=a.index,
        function=a.function,
        line=a.line,
        source=trace.source_line(a.file, a.line),
        prompt=f"{_where(trace, a)}, which line runs next after it? Answer with its number.",
        answer=str(b.line),
        answer_source=trace.source_line(b.file, b.line),
    )


_SPACE = re.compile(r"\s+")
_LINE = re.compile(r"^(?:line\s*)?(\d+)\.?$", re.IGNORECASE)
_CLASS = re.compile(r"^<class '([^']+)'>$")


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text.strip().strip("`").strip())


def _same_literal(a: str, b: str) -> bool:
    try:
        x, y = ast.literal_eval(a), ast.literal_eval(b)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return _strict_equal(x, y)


def _strict_equal(x: object, y: object) -> bool:
    """Equal and of the same types all the way down (``1 != 1.0 != True`` here)."""
    if type(x) is not type(y):
        return False
    if isinstance(x, float) and isinstance(y, float):
        return x == y or (math.isnan(x) and math.isnan(y))
    if isinstance(x, list | tuple) and isinstance(y, list | tuple):
        return len(x) == len(y) and all(_strict_equal(a, b) for a, b in zip(x, y, strict=True))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_strict_equal(x[k], y[k]) for k in x)
    return x == y


def grade(question: Question, answer: str) -> float:
    """1.0 if ``answer`` is the question's verified answer, else 0.0.

    - ``next_line``: the line number (``12``, ``line 12``) or the line's text, whitespace
      normalised.
    - ``value``: the same repr after whitespace normalisation, or a Python literal equal to
      the answer's with the same types throughout (``[1, 2]`` for ``[1,2]``; ``1.0`` is
      not ``1``).
    - ``type``: the type's name, bare or as ``<class '...'>``; a qualified name matches its
      last part (``deque`` for ``collections.deque``).
    """
    given = _norm(answer)
    if question.kind == "next_line":
        m = _LINE.match(given)
        if m is not None:
            return float(int(m.group(1)) == int(question.answer))
        return float(bool(given) and given == _norm(question.answer_source))
    if question.kind == "value":
        want = _norm(question.answer)
        return float(given == want or _same_literal(given, want))
    m = _CLASS.match(given)
    name = m.group(1) if m is not None else given
    want = question.answer
    return float(name == want or name.rsplit(".", 1)[-1] == want.rsplit(".", 1)[-1])


def line_labels(verdict: Verdict, program: str) -> list[LineLabel]:
    """Lines of ``program`` each test ran, labelled (see the module's docstring). Needs a
    verdict made with ``trace="coverage"`` or ``"full"``; sandbox errors are left out."""
    if any(t.lines is None for t in verdict.tests if t.calls):
        raise ValueError("the verdict has no line coverage: verify with trace='coverage'")
    passing: dict[int, int] = {}
    failing: dict[int, int] = {}
    for t in verdict.tests:
        if t.status == "sandbox_error" or not t.lines:
            continue
        side = passing if t.passed else failing
        for line in t.lines:
            side[line] = side.get(line, 0) + 1
    text = program.splitlines()
    labels = []
    for line in sorted(passing.keys() | failing.keys()):
        p, f = passing.get(line, 0), failing.get(line, 0)
        label: Literal["failing_only", "passing_only", "both"] = (
            "both" if p and f else "failing_only" if f else "passing_only"
        )
        src = text[line - 1] if 0 < line <= len(text) else ""
        labels.append(LineLabel(line=line, text=src, passing=p, failing=f, label=label))
    return labels
