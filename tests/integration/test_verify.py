"""Verification with real sandboxes: each verdict kind, each problem format, cost figures,
process rewards, and the ``tracebox eval`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracebox import Runtime
from tracebox.verify import (
    FunctionProblem,
    IOCase,
    IOProblem,
    Verifier,
    VerifyConfig,
    check,
    line_labels,
    questions,
    read_problems,
)

DATA = Path(__file__).parents[1] / "data" / "verify"
PROBLEMS = {
    **read_problems(DATA / "humaneval.jsonl"),
    **read_problems(DATA / "mbpp.jsonl"),
    **read_problems(DATA / "pro.json"),
    **read_problems(DATA / "stdio.jsonl"),
}
ADD = PROBLEMS["Toy/add"]
ROOT = PROBLEMS["Toy/root"]


@pytest.fixture(scope="module")
def verifier(runtime: Runtime) -> Iterator[Verifier]:
    with Verifier(runtime, VerifyConfig(cpu_seconds=0.5, memory_mb=512)) as v:
        yield v


def _statuses(verdict) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.status for t in verdict.tests]


# -- verdict kinds ----------------------------------------------------------------------------


def test_a_correct_candidate_passes_with_cost_figures(verifier: Verifier) -> None:
    v = verifier.check(ADD, "    return a + b\n")
    assert (v.status, v.passed, v.attempts, v.load) == ("passed", True, 1, None)
    assert [t.name for t in v.tests] == [
        "assert candidate(1, 2) == 3",
        "assert candidate(-1, 1) == 0",
        "assert candidate(total, 1) == 11",
    ]
    assert all(t.calls == 1 and t.cpu_seconds >= 0 for t in v.tests)
    assert [t.steps for t in v.tests] == [3, 3, 3]  # call, line, return
    assert v.steps == 9 and v.peak_memory_mb is not None and v.cpu_seconds > 0
    assert v.result_text() == "passed" and v.fraction_passed == 1.0


def test_one_failing_assert_does_not_hide_the_others(verifier: Verifier) -> None:
    v = verifier.check(ADD, "    return a + b if a > 0 else 99\n")
    assert (v.status, v.passed) == ("failed", False)
    assert _statuses(v) == ["passed", "failed", "passed"]
    assert v.tests[1].error is not None and v.tests[1].error.type == "AssertionError"
    assert v.fraction_passed == pytest.approx(2 / 3)
    assert v.result_text() == "failed: "


def test_an_exception_is_an_error_of_that_test_only(verifier: Verifier) -> None:
    v = verifier.check(ADD, "    if a < 0:\n        raise KeyError('neg')\n    return a + b\n")
    assert _statuses(v) == ["passed", "error", "passed"]
    err = v.tests[1].error
    assert err is not None and (err.type, err.message) == ("KeyError", "'neg'")
    assert v.status == "error"


def test_tests_expecting_exceptions_see_the_candidates_exception(verifier: Verifier) -> None:
    good = "    if x < 0:\n        raise ValueError('negative')\n    return math.sqrt(x)\n"
    assert verifier.check(ROOT, good).passed
    v = verifier.check(ROOT, "    return math.sqrt(abs(x))\n")
    assert _statuses(v) == ["passed", "failed"]
    v = verifier.check(ROOT, "    if x < 0:\n        raise TypeError('no')\n    return x ** 0.5\n")
    assert _statuses(v) == ["passed", "error"]


def test_a_candidate_that_does_not_load_fails_every_test(verifier: Verifier) -> None:
    v = verifier.check(ADD, "    return a +\n")
    assert v.status == "error" and v.load is not None and v.load.type == "SyntaxError"
    assert _statuses(v) == ["error"] * 3
    v = verifier.check(ADD, "    return a + b\nraise RuntimeError('at import')\n")
    assert v.load is not None and v.load.type == "RuntimeError" and not v.passed


def test_a_missing_function_is_an_error(verifier: Verifier) -> None:
    problem = ADD.model_copy(update={"prompt": ""})
    v = verifier.check(problem, "def plus(a, b):\n    return a + b\n")
    assert _statuses(v) == ["error"] * 3
    assert v.tests[0].error is not None and v.tests[0].error.type == "NameError"


def test_spinning_is_a_timeout_and_later_tests_get_a_fresh_sandbox(verifier: Verifier) -> None:
    v = verifier.check(ADD, "    while a == -1:\n        pass\n    return a + b\n")
    assert _statuses(v) == ["passed", "timeout", "passed"]
    assert v.status == "timeout" and v.result_text() == "timed out"
    err = v.tests[1].error
    assert err is not None and err.type == "TimeLimitExceeded" and "CPU" in err.message
    assert v.tests[1].steps is None and v.steps is None  # where it stopped is not a cost


def test_ignoring_the_interrupt_is_still_a_timeout(verifier: Verifier) -> None:
    code = (
        "    import signal\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "    signal.signal(signal.SIGPROF, signal.SIG_IGN)\n"
        "    while a == 1:\n        pass\n    return a + b\n"
    )
    v = verifier.check(ADD, code)
    assert _statuses(v) == ["timeout", "passed", "passed"]


def test_running_out_of_memory_is_memory(verifier: Verifier) -> None:
    v = verifier.check(ADD, "    if a == 1:\n        x = bytearray(8 << 30)\n    return a + b\n")
    assert _statuses(v) == ["memory", "passed", "passed"]
    assert v.status == "memory"


def test_the_sample_cpu_budget_ends_the_remaining_tests(runtime: Runtime) -> None:
    config = VerifyConfig(cpu_seconds=0.4, sample_cpu_seconds=0.5)
    with Verifier(runtime, config) as v:
        burn = "    import time\n    t = time.process_time()\n"
        burn += "    while time.process_time() - t < 0.3:\n        pass\n    return a + b\n"
        verdict = v.check(ADD, burn)
    assert _statuses(verdict) == ["passed", "passed", "timeout"]
    assert verdict.tests[2].error is not None
    assert "sample_cpu_seconds" in verdict.tests[2].error.message


def test_check_starts_its_own_runtime() -> None:
    assert check(ADD.model_dump(), "    return a + b\n").passed


# -- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task_id", ["Toy/add", "Toy/root", "Toy/sort", "11", "2", "4242", "io/sum"]
)
def test_canonical_solutions_pass(verifier: Verifier, task_id: str) -> None:
    p = PROBLEMS[task_id]
    assert p.canonical_solution is not None
    v = verifier.check(p, p.canonical_solution)
    assert v.status == "passed", v
    assert v.steps is not None and v.steps > 0


def test_mbpp_wrong_solution_fails(verifier: Verifier) -> None:
    v = verifier.check(PROBLEMS["11"], "def remove_Occ(s, ch):\n    return s[1:-1]\n")
    assert _statuses(v) == ["failed", "passed", "passed"]


def test_self_invoking_problem(verifier: Verifier) -> None:
    p = PROBLEMS["2"]
    body = (
        "    return number % 1.0\n\nimport math\n"
        "def sum_of_parts(numbers):\n    return sum(n - truncate_number(n) for n in numbers)"
        " * sum(truncate_number(n) for n in numbers)\n"
    )
    assert verifier.check(p, body).passed
    v = verifier.check(p, "    return 0.0\n\ndef sum_of_parts(numbers):\n    return 0.0\n")
    assert _statuses(v) == ["failed", "passed", "failed"]


STDIO = IOProblem(
    task_id="io/t",
    cases=(IOCase(input="1 2\n", output="3\n"), IOCase(input="5 5\n", output="10\n")),
)


@pytest.mark.parametrize(
    "program",
    [
        "a, b = map(int, input().split())\nprint(a + b)\n",
        "import sys\nprint(sum(map(int, sys.stdin.read().split())))\nsys.exit(0)\n",
        "import os\nprint(sum(map(int, os.read(0, 100).split())))\nexit()\n",
        "import sys\nsys.stdout.write(str(sum(map(int, sys.stdin.buffer.readline().split()))))\n",
        "if __name__ == '__main__':\n    print(sum(map(int, input().split())), '  ')\n",
    ],
)
def test_stdio_programs_that_pass(verifier: Verifier, program: str) -> None:
    v = verifier.check(STDIO, program)
    assert v.status == "passed", v.tests
    assert v.tests[0].output is not None and v.tests[0].output.startswith("3")


def test_stdio_failures(verifier: Verifier) -> None:
    v = verifier.check(STDIO, "a, b = map(int, input().split())\nprint(a * b if a > 1 else 3)\n")
    assert _statuses(v) == ["passed", "failed"]
    assert v.tests[1].output == "25\n"
    v = verifier.check(
        STDIO, "a, b = map(int, input().split())\nprint(a + b)\nraise SystemExit(1)\n"
    )
    assert _statuses(v) == ["error", "error"]
    v = verifier.check(
        STDIO, "a, b = map(int, input().split())\nwhile a == 5:\n    pass\nprint(a + b)\n"
    )
    assert _statuses(v) == ["passed", "timeout"]
    v = verifier.check(STDIO, "import os\nprint(3)\nos._exit(0)\n")  # leaving is not ending
    assert _statuses(v) == ["error", "error"]
    v = verifier.check(STDIO, "print('PASSED')\nprint(3)\n")
    assert not v.passed


def test_stdio_formats_and_float_tolerance(verifier: Verifier) -> None:
    cc = "input()\nprint(max(map(int, input().split())))\n"
    assert verifier.check(PROBLEMS["cc/max"], cc).passed
    mean = "xs = list(map(int, input().split()))\nprint(sum(xs) / len(xs))\n"
    assert verifier.check(PROBLEMS["io/mean"], mean).passed
    rounded = "xs = list(map(int, input().split()))\nprint(round(sum(xs) / len(xs), 2))\n"
    assert _statuses(verifier.check(PROBLEMS["io/mean"], rounded)) == ["passed", "failed"]


# -- process rewards --------------------------------------------------------------------------


SIGN = FunctionProblem(
    task_id="Toy/sign",
    prompt="def sign(x):\n",
    entry_point="sign",
    test=(
        "def check(candidate):\n    assert candidate(5) == 1\n    assert candidate(0) == 0\n"
        "    assert candidate(-3) == -1\n"
    ),
)
BUGGY_SIGN = "    if x > 0:\n        return 1\n    if x < 0:\n        return 1\n    return 0\n"


def test_line_labels_point_at_the_bug(runtime: Runtime) -> None:
    with Verifier(runtime, VerifyConfig(trace="coverage")) as v:
        verdict = v.check(SIGN, BUGGY_SIGN)
    assert [t.status for t in verdict.tests] == ["passed", "passed", "failed"]
    assert verdict.tests[0].lines == (2, 3) and verdict.steps is None
    labels = {x.line: x.label for x in line_labels(verdict, SIGN.program(BUGGY_SIGN))}
    assert labels == {2: "both", 3: "passing_only", 4: "both", 5: "failing_only", 6: "passing_only"}


def test_questions_from_a_verified_call_are_graded(runtime: Runtime) -> None:
    with Verifier(runtime, VerifyConfig(trace="full", keep_traces=True)) as v:
        verdict = v.check(SIGN, BUGGY_SIGN)
    (trace,) = verdict.tests[2].traces
    assert verdict.tests[2].steps == trace.counts.steps == len(trace.steps)
    qs = questions(trace)
    assert {q.kind for q in qs} == {"next_line", "value", "type"}
    nxt = next(q for q in qs if q.kind == "next_line" and q.line == 4)
    assert nxt.answer == "5" and nxt.answer_source == "        return 1"
    x = next(q for q in qs if q.kind == "value" and q.variable == "x")
    assert x.answer == "-3"
    assert "traces" not in verdict.model_dump()["tests"][2]


# -- the command --------------------------------------------------------------------------------


_SCRIPT = Path(sys.executable).with_name("tracebox")
TRACEBOX = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tracebox.cli"]


@pytest.mark.parametrize("fresh", ["spawn", "restore"])
def test_tracebox_eval_writes_human_evals_results_file(tmp_path: Path, fresh: str) -> None:
    samples = tmp_path / "samples.jsonl"
    rows = [
        {"task_id": "Toy/add", "completion": "    return a + b\n"},
        {"task_id": "Toy/add", "completion": "    return a - b\n"},
        {"task_id": "Toy/sort", "completion": "    return sorted(xs)[::-1]\n"},
        {"task_id": "Toy/sort", "completion": "    import sys\n    sys.exit(0)\n"},
    ]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    run = subprocess.run(
        [*TRACEBOX, "eval", str(DATA / "humaneval.jsonl"), str(samples), "-j", "2",
         "--k", "1,2,5", "--json", "--fresh", fresh],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"pass@1": 0.5, "pass@2": 1.0}
    lines = (tmp_path / "samples.jsonl_results.jsonl").read_text().splitlines()
    results = [json.loads(x) for x in lines]
    assert [(r["task_id"], r["passed"], r["result"]) for r in results] == [
        ("Toy/add", True, "passed"),
        ("Toy/add", False, "failed: "),
        ("Toy/sort", True, "passed"),
        ("Toy/sort", False, "failed: 0"),
    ]
    assert results[3]["status"] == "error"
    assert results[3]["tests"][0]["error"] == "SystemExit: 0"


def test_tracebox_eval_names_the_bad_line(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        '{"task_id": "Toy/add", "completion": ""}\n{"task_id": "Toy/nope", "completion": ""}\n'
    )
    run = subprocess.run(
        [*TRACEBOX, "eval", str(DATA / "humaneval.jsonl"), str(samples)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )  # fmt: skip
    assert run.returncode == 2
    assert "samples.jsonl line 2: no problem has task_id 'Toy/nope'" in run.stderr
