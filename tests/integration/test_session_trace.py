"""Traced runs in real sessions: ``s.run(code, trace=...)`` gives ``RunResult.trace``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tracebox import Limits, RunResult, Session
from tracebox.trace import Trace, TraceConfig
from tracebox.worker.cell import CellRunner

PROGRAM = """\
def total(n):
    t = 0
    for i in range(n):
        if i % 2:
            t += i
    return t

result = total(5)
result
"""


def _in_process(source: str, config: TraceConfig, cell: int) -> Trace:
    """The same cell traced by the worker's cell runner in this process."""
    runner = CellRunner()
    runner.count = cell - 1
    outcome = runner.run(source, stateful=True, max_value_chars=100, trace=config.to_wire())
    assert outcome["status"] == "ok", outcome
    assert runner.trace is not None
    return runner.trace


def test_a_full_trace_crosses_from_the_worker_byte_for_byte(session: Session) -> None:
    r = session.run(PROGRAM, trace="full")
    assert r.status == "ok", r.error
    assert r.value == "4"
    assert r.trace is not None
    assert r.trace.to_json() == _in_process(PROGRAM, TraceConfig(), 1).to_json()


def test_a_program_that_prints_is_traced_and_its_output_kept(session: Session) -> None:
    r = session.run("for i in range(3):\n    print(i)\nprint('done')", trace="full")
    assert r.stdout == "0\n1\n2\ndone\n"
    assert r.trace is not None
    assert [st.line for st in r.trace.steps if st.event == "line"] == [1, 2, 1, 2, 1, 2, 1, 3]


def test_one_cell_is_one_module_frame_and_its_value_is_kept(session: Session) -> None:
    r = session.run("xs = [3, 1, 2]\nfor x in xs: x\nsorted(xs)", trace="full")
    assert r.value == "[1, 2, 3]"
    assert r.trace is not None
    events = [(st.event, st.function, st.line) for st in r.trace.steps]
    assert events[0] == ("call", "<module>", 0)
    assert events[-1] == ("return", "<module>", 3)
    assert sum(1 for e in events if e[0] == "call") == 1  # sorted() is C: no frame
    assert r.trace.sources == {"<cell-1>": "xs = [3, 1, 2]\nfor x in xs: x\nsorted(xs)"}
    assert session.run("1 + 1", trace="steps").value == "2"
    assert session.run("y = 1", trace="steps").value is None


def test_every_mode_and_untraced_runs(session: Session) -> None:
    session.run(PROGRAM)
    full = session.run("total(7)", trace="full")
    steps = session.run("total(7)", trace="steps")
    cov = session.run("total(7)", trace=TraceConfig(mode="coverage"))
    assert full.trace is not None and steps.trace is not None and cov.trace is not None
    events = ("line_events", "calls", "returns", "exceptions")  # what steps mode counts
    assert [getattr(steps.trace.counts, e) for e in events] == [
        getattr(full.trace.counts, e) for e in events
    ]
    assert steps.trace.counts.steps == len(full.trace)
    assert steps.trace.rows == ()
    assert cov.trace.coverage is not None
    assert set(cov.trace.coverage.lines) == {"<cell-1>", "<cell-4>"}
    assert session.run("total(7)").trace is None


def test_a_failing_run_keeps_its_trace_up_to_the_failure(session: Session) -> None:
    r = session.run("a = 1\nb = a / 0\nc = 2", trace="full")
    assert r.status == "error"
    assert r.error is not None and r.error.type == "ZeroDivisionError"
    assert "ZeroDivisionError" in r.error.traceback
    assert r.trace is not None
    assert [st.event for st in r.trace.steps] == ["call", "line", "line", "exception", "return"]
    assert r.trace.error is not None and r.trace.error.type == "ZeroDivisionError"


def test_a_run_that_times_out_keeps_a_partial_trace(new_session: Callable[..., Session]) -> None:
    s = new_session(limits=Limits(cpu_seconds=0.5))
    r = s.run("n = 0\nwhile True:\n    n += 1", trace=TraceConfig(max_steps=10_000))
    assert r.status == "timeout"
    assert r.session_alive
    assert r.trace is not None
    assert r.trace.truncation is not None and r.trace.truncation.reason == "max_steps"
    assert len(r.trace) == 10_000
    assert r.trace.error is not None and r.trace.error.type == "KeyboardInterrupt"
    assert s.run("n > 0").value == "True"


def test_budgets_are_marked_or_stop_the_program(session: Session) -> None:
    loop = "for i in range(1000):\n    pass"
    r = session.run(loop, trace=TraceConfig(max_steps=50))
    assert r.status == "ok"
    assert r.trace is not None and r.trace.truncation is not None
    assert (r.trace.truncation.step, r.trace.truncation.dropped_steps) == (50, 2003 - 50)
    assert r.trace.counts.steps == 2003  # call, 1001 + 1000 lines, return: counting went on
    stopped = session.run(loop, trace=TraceConfig(max_steps=50, on_budget="stop"))
    assert stopped.status == "error"
    assert stopped.error is not None and stopped.error.type == "TraceBudgetExceeded"
    assert stopped.trace is not None and stopped.trace.truncation is not None
    assert stopped.trace.truncation.stopped


def test_the_trace_survives_json_inside_the_run_result(session: Session) -> None:
    r = session.run(PROGRAM, trace="full")
    again = RunResult.model_validate_json(r.model_dump_json())
    assert again.trace is not None and r.trace is not None
    assert again.trace.to_json() == r.trace.to_json()


def test_a_forged_trace_kills_the_session(new_session: Callable[..., Session]) -> None:
    s = new_session()
    s.run("import tracebox.trace.model as m\nm.Trace.to_json = lambda self: b'{\"steps\": 1}'")
    r = s.run("x = 1", trace="full")
    assert r.status == "killed"
    assert r.error is not None and r.error.type == "ProtocolViolation"
    assert "malformed trace" in r.error.message
    assert r.trace is None
    assert not r.session_alive


def test_a_trace_bigger_than_the_transfer_limit_is_refused_not_inflated(
    new_session: Callable[..., Session],
) -> None:
    s = new_session(limits=Limits(max_transfer_bytes=100_000))
    # a compression bomb: 50 MB of zeros in about 50 kB
    s.run("import zlib\nbomb = zlib.compress(bytes(50 << 20), 9)\n"
          "zlib.compress = lambda data, level: bomb")  # fmt: skip
    r = s.run("x = 1", trace="full")
    assert r.trace is None
    assert r.trace_error is not None and "larger than 100000 bytes" in r.trace_error
    assert r.status == "ok" and r.session_alive


@pytest.mark.parametrize("bad", ["everything", 3])
def test_a_bad_trace_argument_is_refused_before_anything_runs(
    session: Session, bad: object
) -> None:
    with pytest.raises(ValueError, match="mode"):
        session.run("x = 1", trace=bad)  # type: ignore[arg-type]
    assert session.run("'x' in dir()").value == "False"


def test_a_counted_run_past_its_budget_that_times_out_keeps_its_counts(
    new_session: Callable[..., Session],
) -> None:
    s = new_session(limits=Limits(cpu_seconds=0.3))
    s.run("def spin():\n    while True:\n        pass")
    config = TraceConfig(mode="steps", max_steps=1000)
    for r in (s.run("spin()", trace=config), s.call("spin", trace__=config)):
        assert r.status == "timeout" and r.session_alive
        assert r.trace is not None and r.trace.rows == ()
        assert r.trace.truncation is not None and r.trace.truncation.step == 1000
        assert r.trace.counts.steps is not None and r.trace.counts.steps > 1000
