"""Budgets end recording with an explicit marker; the program runs on, or is stopped."""

from __future__ import annotations

import sys
import textwrap

import pytest

from tracebox.trace import TraceBudgetExceeded, TraceConfig, record

BACKENDS = ["settrace", "monitoring"] if sys.version_info >= (3, 12) else ["settrace"]

LOOP = textwrap.dedent("""
    total = 0
    for i in range(100):
        total += i
    finished = True
""")


def run(mode: str, backend: str, **config: object) -> tuple[object, dict[str, object]]:
    ns: dict[str, object] = {"__name__": "__main__"}
    cfg = TraceConfig(mode=mode, **config)  # type: ignore[arg-type]
    return record(LOOP, cfg, namespace=ns, backend=backend), ns  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_steps_cuts_the_trace_with_a_marker_and_the_program_runs_on(backend: str) -> None:
    whole, _ = run("full", backend)
    cut, ns = run("full", backend, max_steps=20)
    assert ns["finished"] is True and ns["total"] == 4950
    assert len(cut) == 20  # type: ignore[arg-type]
    assert cut.steps[:] == whole.steps[:20]  # type: ignore[attr-defined]
    t = cut.truncation  # type: ignore[attr-defined]
    assert (t.step, t.reason, t.limit, t.stopped) == (20, "max_steps", 20, False)
    assert t.dropped_steps == len(whole) - 20  # type: ignore[arg-type]
    assert cut.step_counts() == whole.step_counts()  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_bytes_cuts_the_trace_where_the_values_stop_fitting(backend: str) -> None:
    whole, _ = run("full", backend)
    cut, ns = run("full", backend, max_bytes=100)
    assert ns["finished"] is True
    t = cut.truncation  # type: ignore[attr-defined]
    assert t.reason == "max_bytes" and t.limit == 100 and 0 < t.step < len(whole)  # type: ignore[arg-type]
    kept = sum(len(v.repr) for s in cut.steps for v in [*s.changed.values(), s.value] if v)  # type: ignore[attr-defined]
    assert kept <= 100


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["full", "steps"])
def test_on_budget_stop_raises_in_user_code_and_the_program_stops(backend: str, mode: str) -> None:
    source = textwrap.dedent("""
        total = 0
        try:
            for i in range(100):
                total += i
        except Exception:
            swallowed = True
        finished = True
    """)
    ns: dict[str, object] = {"__name__": "__main__"}
    config = TraceConfig(mode=mode, max_steps=30, on_budget="stop")  # type: ignore[arg-type]
    trace = record(source, config, namespace=ns, backend=backend)  # type: ignore[arg-type]
    assert "finished" not in ns and "swallowed" not in ns
    assert trace.error is not None
    assert trace.error.type == "tracebox.trace.errors.TraceBudgetExceeded"
    assert trace.truncation is not None and trace.truncation.stopped
    counts = trace.step_counts()
    assert counts["calls"] == 1 and counts["returns"] == 0  # the module frame never returned
    assert counts["steps"] is not None and counts["steps"] <= 31
    if mode == "full":
        assert len(trace) == 30


@pytest.mark.parametrize("backend", BACKENDS)
def test_steps_mode_budget_marks_and_counts_on(backend: str) -> None:
    whole, _ = run("steps", backend)
    cut, ns = run("steps", backend, max_steps=25)
    assert ns["finished"] is True
    t = cut.truncation  # type: ignore[attr-defined]
    assert (t.reason, t.step, t.stopped) == ("max_steps", 25, False)
    assert cut.step_counts() == whole.step_counts()  # type: ignore[attr-defined]
    assert t.dropped_steps == whole.step_counts()["steps"] - 25  # type: ignore[attr-defined]


def test_the_budget_exception_is_a_base_exception() -> None:
    assert issubclass(TraceBudgetExceeded, BaseException)
    assert not issubclass(TraceBudgetExceeded, Exception)
