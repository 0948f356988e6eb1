"""Batches: verdicts identical at concurrency 1 and oversubscribed, and sandbox errors kept
apart from the program's failures (and retried)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracebox import Runtime, SessionState
from tracebox.verify import FunctionProblem, Verdict, Verifier, VerifyConfig, read_problems

DATA = Path(__file__).parents[1] / "data" / "verify"
PROBLEMS = {
    **read_problems(DATA / "humaneval.jsonl"),
    **read_problems(DATA / "mbpp.jsonl"),
    **read_problems(DATA / "stdio.jsonl"),
}
SAMPLES = [
    ("Toy/add", "    return a + b\n"),
    ("Toy/add", "    return a - b\n"),
    ("Toy/add", "    while a < 0:\n        pass\n    return a + b\n"),  # a timeout
    ("Toy/add", "    return [a + b] * (a + 1) * 10**9\n"),  # memory
    ("Toy/root", "    if x < 0:\n        raise ValueError(x)\n    return math.sqrt(x)\n"),
    ("Toy/root", "    return abs(x) ** 0.5\n"),
    ("Toy/root", "    import sys\n    sys.exit(0)\n"),
    ("Toy/sort", "    return sorted(xs)[::-1]\n"),
    ("Toy/sort", "    return xs\n"),
    ("Toy/sort", "    return sorted(xs, reverse=True)\nimport os\nos._exit(3)\n"),
    ("11", PROBLEMS["11"].canonical_solution or ""),
    ("11", "def remove_Occ(s, ch):\n    return s[1:-1]\n"),
    ("io/sum", "a, b = map(int, input().split())\nprint(a + b)\n"),
    ("io/sum", "a, b = map(int, input().split())\nprint(a * b)\n"),
    ("io/sum", "a, b = map(int, input().split())\nwhile a == 10:\n    pass\nprint(a + b)\n"),
    ("4242", "n = int(input())\nprint(sum(map(int, input().split())))\n"),
]


def _fingerprint(verdicts: list[Verdict]) -> list[object]:
    return [
        (v.sample_index, v.status, [(t.status, t.steps, t.calls) for t in v.tests])
        for v in verdicts
    ]


@pytest.mark.parametrize("fresh", ["spawn", "restore"])
def test_verdicts_do_not_change_with_load(runtime: Runtime, fresh: str) -> None:
    config = VerifyConfig.model_validate({"cpu_seconds": 0.3, "fresh": fresh})
    many = min(32, 8 * (os.cpu_count() or 1))
    with Verifier(runtime, config) as v:
        alone = list(v.run_batch(PROBLEMS, SAMPLES, workers=1))
        crowded = list(v.run_batch(PROBLEMS, SAMPLES * 2, workers=many, ordered=False))
        assert (v.sandboxes.restored > 0) == (fresh == "restore")
    assert [x.sample_index for x in alone] == list(range(len(SAMPLES)))
    assert sorted(x.sample_index for x in crowded) == list(range(2 * len(SAMPLES)))
    expected = _fingerprint(alone)
    by_index = sorted(crowded, key=lambda x: x.sample_index or 0)
    first = _fingerprint(by_index[: len(SAMPLES)])
    second = [(i - len(SAMPLES), *rest) for i, *rest in _fingerprint(by_index[len(SAMPLES) :])]  # type: ignore[misc]
    assert first == expected
    assert second == expected
    statuses = [x.status for x in alone]
    assert statuses.count("passed") == 6
    assert {"failed", "error", "timeout", "memory"} <= set(statuses)
    assert "sandbox_error" not in statuses


def test_an_unknown_task_id_is_an_error(runtime: Runtime) -> None:
    with Verifier(runtime) as v, pytest.raises(KeyError, match="no problem with task_id 'nope'"):
        list(v.run_batch(PROBLEMS, [("nope", "")]))


SLOW_ADD = FunctionProblem(
    task_id="slow/add",
    prompt="def add(a, b):\n",
    entry_point="add",
    # not literal tests (``verify._plan``): each call is its own ``Session.call``, forwarded
    # from the test sandbox (literal ones go in one batch call; see ``SLOW_LITERAL``)
    test=(
        "def check(candidate):\n    got = candidate(1, 2)\n    assert got == 3\n"
        "    got = candidate(2, 2)\n    assert got == 4"
    ),
)
SLOW_LITERAL = SLOW_ADD.model_copy(
    update={
        "task_id": "slow/literal",
        "test": (
            "def check(candidate):\n    assert candidate(1, 2) == 3\n"
            "    assert candidate(2, 2) == 4"
        ),
    }
)
SLOW = "    import time\n    time.sleep(0.3)\n    return a + b\n"


@pytest.fixture
def killer(runtime: Runtime) -> Iterator[threading.Event]:
    """SIGKILLs, from the host, the first candidate sandbox it sees running a call."""
    done = threading.Event()

    def hunt() -> None:
        while not done.is_set():
            for s in runtime.sessions():
                if s.stateful and s.state is SessionState.RUNNING:
                    time.sleep(0.05)  # well inside the call
                    os.kill(s._worker.pid, signal.SIGKILL)
                    done.set()
                    return
            time.sleep(0.002)

    thread = threading.Thread(target=hunt, daemon=True)
    thread.start()
    yield done
    done.set()
    thread.join(5)


@pytest.mark.parametrize("fresh", ["spawn", "restore"])
def test_a_worker_killed_from_outside_is_a_sandbox_error(
    runtime: Runtime, killer: threading.Event, fresh: str
) -> None:
    with Verifier(runtime, VerifyConfig.model_validate({"retries": 0, "fresh": fresh})) as v:
        verdict = v.check(SLOW_ADD, SLOW)
    assert killer.is_set()
    assert (verdict.status, verdict.passed, verdict.attempts) == ("sandbox_error", False, 1)
    killed = [t for t in verdict.tests if t.status == "sandbox_error"]
    assert killed and all(t.error is not None and t.error.type == "WorkerKilled" for t in killed)
    assert "SIGKILL" in (killed[0].error.message if killed[0].error else "")


@pytest.mark.parametrize("fresh", ["spawn", "restore"])
def test_the_retry_after_a_sandbox_error_gives_the_programs_verdict(
    runtime: Runtime, killer: threading.Event, fresh: str
) -> None:
    with Verifier(runtime, VerifyConfig.model_validate({"retries": 1, "fresh": fresh})) as v:
        verdict = v.check(SLOW_ADD, SLOW)
    assert killer.is_set()
    assert (verdict.status, verdict.passed, verdict.attempts) == ("passed", True, 2)
    assert any("WorkerKilled" in note for note in verdict.notes)


def test_a_worker_killed_from_outside_during_a_trial_verifies_again(
    runtime: Runtime, killer: threading.Event
) -> None:
    """``fresh="restore"`` runs the literal tests in a trial of the pristine sandbox; killed
    from outside, the trial is not the program's outcome: the candidate is verified again
    the usual way (a restored sandbox, the batch), with a note."""
    with Verifier(runtime, VerifyConfig.model_validate({"retries": 0})) as v:
        verdict = v.check(SLOW_LITERAL, SLOW)
    assert killer.is_set()
    assert (verdict.status, verdict.passed, verdict.attempts) == ("passed", True, 1)
    assert [t.calls for t in verdict.tests] == [1, 1]
    assert all(t.steps is not None and t.steps > 0 for t in verdict.tests)
    assert any("trial did not complete" in note and "SIGKILL" in note for note in verdict.notes)
    assert not any("one by one" in note for note in verdict.notes)


def test_a_worker_killed_from_outside_during_a_batch_makes_the_calls_again(
    runtime: Runtime, killer: threading.Event
) -> None:
    """The literal calls' batch did not complete: every call again, one by one, in a fresh
    sandbox (as after any failure of the batch call); the kill is not the program's."""
    config = VerifyConfig.model_validate({"retries": 0, "fresh": "spawn"})  # no trials
    with Verifier(runtime, config) as v:
        verdict = v.check(SLOW_LITERAL, SLOW)
    assert killer.is_set()
    assert (verdict.status, verdict.passed, verdict.attempts) == ("passed", True, 1)
    assert [t.calls for t in verdict.tests] == [1, 1]
    assert all(t.steps is not None and t.steps > 0 for t in verdict.tests)
    assert any("one by one" in note and "killed" in note for note in verdict.notes)
