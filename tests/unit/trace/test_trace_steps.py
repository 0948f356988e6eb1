"""Step sequences and counts agree with an independent settrace reference, on every backend."""

from __future__ import annotations

import sys

import pytest
from trace_corpus import (
    PROGRAMS,
    USER_FILE,
    compile_program,
    counts,
    reference,
    reference_locals,
)

from tracebox.trace import TraceConfig, record

BACKENDS = ["settrace", "monitoring"] if sys.version_info >= (3, 12) else ["settrace"]


@pytest.fixture(autouse=True)
def _quiet(capsys: pytest.CaptureFixture[str]) -> None:
    """Some programs print; capsys keeps the output off the terminal."""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_full_steps_match_the_reference(name: str, backend: str) -> None:
    code = compile_program(name)
    expected, error = reference(code)
    trace = record(code, TraceConfig(mode="full"), backend=backend)  # type: ignore[arg-type]
    got = [(s.event, s.function, s.line, s.depth) for s in trace.steps]
    assert got == expected
    assert (trace.error is None) == (error is None)
    assert trace.truncation is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_steps_mode_counts_match_the_reference(name: str, backend: str) -> None:
    code = compile_program(name)
    expected, _ = reference(code)
    trace = record(code, TraceConfig(mode="steps"), backend=backend)  # type: ignore[arg-type]
    got = trace.step_counts()
    assert {k: got[k] for k in ("line_events", "calls", "returns", "exceptions")} == counts(
        expected
    )
    assert got["steps"] == len(expected)
    assert len(trace) == 0


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring needs 3.12+")
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_both_backends_record_the_same_trace(name: str) -> None:
    code = compile_program(name)
    config = TraceConfig(mode="full")
    by_monitoring = record(code, config, backend="monitoring").to_wire()
    by_settrace = record(code, config, backend="settrace").to_wire()
    assert by_monitoring.pop("backend") == "monitoring"
    assert by_settrace.pop("backend") == "settrace"
    assert by_monitoring == by_settrace


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_coverage_mode_agrees_with_the_full_trace(name: str, backend: str) -> None:
    code = compile_program(name)
    full = record(code, TraceConfig(mode="full"), backend=backend)  # type: ignore[arg-type]
    cov = record(code, TraceConfig(mode="coverage"), backend=backend)  # type: ignore[arg-type]
    assert full.coverage is not None and cov.coverage is not None
    assert cov.coverage.lines == full.coverage.lines
    got = set(cov.coverage.arcs.get(USER_FILE, ()))
    want = set(full.coverage.arcs.get(USER_FILE, ()))
    if backend == "settrace":
        assert got == want
    else:  # branch events miss exception edges and jumps that are not instrumented
        assert got <= want
    assert cov.step_counts()["steps"] is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_locals_at_every_step_match_plain_repr_snapshots(name: str, backend: str) -> None:
    code = compile_program(name)
    expected = reference_locals(code)
    trace = record(code, TraceConfig(mode="full"), backend=backend)  # type: ignore[arg-type]
    assert len(trace) == len(expected)
    for k, want in enumerate(expected):
        got = trace.locals_at(k) if not trace.frames[trace.steps[k].frame].library else {}
        assert set(got) == set(want), (k, trace.steps[k])
        for var, text in want.items():
            if len(text) < 150 and not got[var].cut:
                assert got[var].repr == text, (k, var, trace.steps[k])
