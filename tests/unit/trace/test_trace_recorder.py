"""The recorder's lifecycle: which backend, tracing off afterwards, printing and failing
programs, threads, and a recorder bug that must not become the program's failure."""

from __future__ import annotations

import gc
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from trace_corpus import compile_program

from tracebox.trace import Recorder, RecorderState, TraceConfig, record
from tracebox.trace._locals import LocalsDiffer

NEW_PYTHON = sys.version_info >= (3, 12)


def _tracebox_tools() -> list[int]:
    if not NEW_PYTHON:
        return []
    return [t for t in range(6) if sys.monitoring.get_tool(t) == "tracebox"]


@pytest.fixture(autouse=True)
def _tracing_is_off_after_each_test() -> Iterator[None]:
    before = sys.gettrace()
    yield
    assert sys.gettrace() is before
    assert _tracebox_tools() == []


def test_the_backend_is_sys_monitoring_on_new_pythons_and_settrace_on_311() -> None:
    rec = Recorder(TraceConfig())
    with rec:
        exec(compile("x = 1\n", "<cell-1>", "exec"), {})
        during = _tracebox_tools()
    if NEW_PYTHON:
        assert rec.backend == "monitoring" and len(during) == 1
    else:
        assert rec.backend == "settrace" and during == []
        with pytest.raises(RuntimeError):
            Recorder(backend="monitoring")
    assert rec.trace().backend == rec.backend
    assert rec.state is RecorderState.DONE


@pytest.mark.parametrize("mode", ["full", "steps", "coverage"])
def test_nothing_is_recorded_after_the_block(mode: str) -> None:
    ns: dict[str, Any] = {}
    code = compile("def f(n):\n    return n + 1\n", "<cell-1>", "exec")
    with Recorder(TraceConfig(mode=mode)) as rec:  # type: ignore[arg-type]
        exec(code, ns)
    before = rec.trace().to_json()
    ns["f"](1)
    assert rec.trace().to_json() == before
    assert sys.gettrace() is None


def test_a_tracer_installed_before_is_put_back() -> None:
    def other(frame: Any, event: str, arg: Any) -> None:
        return None

    sys.settrace(other)
    try:
        record("x = 1\n", TraceConfig(), backend="settrace")
        assert sys.gettrace() is other
    finally:
        sys.settrace(None)


def test_recorders_do_not_nest_and_record_once() -> None:
    outer = Recorder()
    with outer, pytest.raises(RuntimeError, match="nest"), Recorder():
        pass
    with pytest.raises(RuntimeError, match="once"):
        outer.start()
    with pytest.raises(RuntimeError, match="stopped"):
        Recorder().trace()


def test_a_program_that_prints_is_traced_and_prints(capsys: pytest.CaptureFixture[str]) -> None:
    trace = record(compile_program("prints"), TraceConfig(mode="full"))
    assert capsys.readouterr().out == "line 0\nline 1\nline 2\n"
    assert trace.error is None
    assert trace.locals_at(len(trace) - 1)["message"].repr == "'printed'"


def test_a_program_that_fails_keeps_its_trace_up_to_the_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    trace = record(compile_program("uncaught"), TraceConfig(mode="full"))
    assert capsys.readouterr().out == "before the failure\n"
    assert trace.error is not None and trace.error.type == "ZeroDivisionError"
    tail = [(s.event, s.function) for s in trace.steps][-6:]
    assert tail == [
        ("exception", "inner"),
        ("return", "inner"),
        ("exception", "outer"),
        ("return", "outer"),
        ("exception", "<module>"),
        ("return", "<module>"),
    ]
    assert all(s.value is None for s in trace.steps[-5::2])  # unwinding returns
    assert trace.locals_at(len(trace) - 6)["v"].repr == "0"


def test_with_the_recorder_block_the_caller_sees_the_exception() -> None:
    rec = Recorder(TraceConfig(mode="steps"))
    with pytest.raises(ZeroDivisionError), rec:
        exec(compile("x = 1 / 0\n", "<cell-1>", "exec"), {})
    assert rec.trace().step_counts()["exceptions"] == 1
    error = rec.trace().error
    assert error is not None and error.repr == "ZeroDivisionError('division by zero')"


def test_only_the_recording_thread_is_traced() -> None:
    trace = record(compile_program("thread"), TraceConfig(mode="full"))
    seen = sorted({s.function for s in trace.steps})
    assert "work" not in seen
    assert "Thread.start" in seen and "Thread.join" in seen
    assert trace.locals_at(len(trace) - 1)["size"].repr == "50"
    assert threading.active_count() == 1


def test_a_callable_from_a_file_is_traced_when_its_file_is_user_code() -> None:
    def target() -> int:
        total = 0
        for i in range(3):
            total += i
        return total

    trace = record(target, TraceConfig(mode="full", files=(__file__,)))
    steps = [(s.event, s.function) for s in trace.steps]
    assert steps[0] == ("call", target.__qualname__)
    assert trace.steps[-1].value is not None and trace.steps[-1].value.repr == "3"


def test_a_recorder_bug_ends_recording_but_not_the_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug in the recorder")

    ns: dict[str, Any] = {"__name__": "__main__"}
    source = textwrap.dedent("""
        a = 1
        b = 2
        c = a + b
    """)
    monkeypatch.setattr(LocalsDiffer, "diff", broken)
    trace = record(source, TraceConfig(mode="full"), namespace=ns)
    assert ns["c"] == 3
    assert trace.error is None
    assert trace.truncation is not None and trace.truncation.reason == "internal_error"
    assert "a bug in the recorder" in trace.truncation.dropped


@pytest.mark.parametrize("mode", ["full", "steps"])
def test_the_recursion_limit_ends_recording_with_a_marker(mode: str) -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    source = textwrap.dedent("""
        def down(n):
            return down(n + 1)
        try:
            down(0)
        except RecursionError:
            caught = True
        after = 1
    """)
    trace = record(source, TraceConfig(mode=mode), namespace=ns)  # type: ignore[arg-type]
    assert ns["caught"] is True and ns["after"] == 1
    assert trace.error is None
    assert trace.truncation is not None
    assert trace.truncation.reason in ("recursion_limit", "internal_error")
    assert trace.truncation.step > 100


def test_the_public_surface_is_sorted_and_resolves() -> None:
    from tracebox import trace

    assert list(trace.__all__) == sorted(trace.__all__)
    for name in trace.__all__:
        assert getattr(trace, name) is not None, name


def test_full_collections_are_rarer_while_a_full_trace_grows_and_restored_after() -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []
    record(lambda: seen.append(gc.get_threshold()), {"mode": "full", "files": (__file__,)})
    record(lambda: seen.append(gc.get_threshold()), {"mode": "steps", "files": (__file__,)})
    assert seen == [(before[0], before[1], before[2] * 100), before]
    assert gc.get_threshold() == before
