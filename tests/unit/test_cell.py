"""The cell runner, in-process: notebook semantics and user-only tracebacks."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tracebox.worker.cell import CellRunner, bounded_repr


@pytest.fixture
def runner() -> Iterator[CellRunner]:
    main = sys.modules["__main__"]
    yield CellRunner()
    sys.modules["__main__"] = main  # the runner installs its own __main__


def test_last_expression_is_the_value(runner: CellRunner) -> None:
    assert runner.run("x = 2\nx * 21", stateful=True, max_value_chars=100) == {
        "status": "ok",
        "value": "42",
    }
    assert runner.run("x = 3", stateful=True, max_value_chars=100)["value"] is None
    assert runner.run("None", stateful=True, max_value_chars=100)["value"] is None


def test_stateless_runs_start_empty(runner: CellRunner) -> None:
    runner.run("x = 1", stateful=False, max_value_chars=100)
    out = runner.run("x", stateful=False, max_value_chars=100)
    assert out["status"] == "error"
    assert out["error"]["type"] == "NameError"


def test_traceback_shows_user_frames_only(runner: CellRunner) -> None:
    out = runner.run("def f():\n    return 1 / 0\nf()", stateful=True, max_value_chars=100)
    tb = out["error"]["traceback"]
    assert 'File "<cell-1>", line 3, in <module>' in tb
    assert "return 1 / 0" in tb
    assert "cell.py" not in tb


def test_syntax_error_names_the_line(runner: CellRunner) -> None:
    out = runner.run("x = 1\ndef f(:\n", stateful=True, max_value_chars=100)
    assert out["error"]["type"] == "SyntaxError"
    assert 'File "<cell-1>", line 2' in out["error"]["traceback"]
    assert "ast.py" not in out["error"]["traceback"]


def test_system_exit_and_user_keyboard_interrupt_are_outcomes(runner: CellRunner) -> None:
    assert (
        runner.run("raise SystemExit(3)", stateful=True, max_value_chars=10)["error"]["type"]
        == "SystemExit"
    )
    with pytest.raises(KeyboardInterrupt):  # the worker loop decides what it means
        runner.run("raise KeyboardInterrupt", stateful=True, max_value_chars=10)


def test_classes_defined_in_cells_pickle(runner: CellRunner) -> None:
    runner.run(
        "import pickle\nclass A:\n    pass\nb = pickle.dumps(A())",
        stateful=True,
        max_value_chars=10,
    )
    assert isinstance(runner.namespace["b"], bytes)


def test_bounded_repr_marks_what_was_cut() -> None:
    assert bounded_repr("x" * 10, 100) == repr("x" * 10)
    cut = bounded_repr("x" * 10**6, 20)
    assert cut.startswith("'xxxxxxxxxxxxxxxxxxx")
    assert "[tracebox: repr truncated to 20 of 1000000 chars]" in cut
    assert "of 1000 bytes" in bounded_repr(b"y" * 1000, 20)

    class Broken:
        def __repr__(self) -> str:
            raise ValueError("nope")

    assert bounded_repr(Broken(), 100) == "<repr of Broken failed: ValueError: nope>"


def test_chained_tracebacks_hide_the_runner_too(runner: CellRunner) -> None:
    code = "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    raise ValueError('wrapped') from e"
    tb = runner.run(code, stateful=True, max_value_chars=10)["error"]["traceback"]
    assert "ZeroDivisionError" in tb
    assert "ValueError: wrapped" in tb
    assert "cell.py" not in tb
