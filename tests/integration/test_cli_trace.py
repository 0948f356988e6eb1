"""``tracebox trace FILE``: a file recorded in a real sandbox, exported in each format."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_cli import script, tracebox

from tracebox.trace.model import Trace

PROGRAM = """\
def total(n):
    t = 0
    for i in range(n):
        t += i
    return t

print("result", total(3))
"""


@pytest.fixture
def prog(tmp_path: Path) -> str:
    return script(tmp_path, PROGRAM)


def test_the_summary_counts_steps_and_lines(prog: str) -> None:
    out = tracebox("trace", prog)
    assert out.returncode == 0, out.stderr
    assert "result 3" in out.stderr  # the program's output stays off stdout
    assert "result 3" not in out.stdout
    assert "steps" in out.stdout and "lines run in <cell-1>" in out.stdout
    assert "1-5, 7" in out.stdout


def test_raw_is_the_wire_trace(prog: str) -> None:
    out = tracebox("trace", prog, "--format", "raw")
    assert out.returncode == 0, out.stderr
    trace = Trace.from_json(out.stdout)
    assert [s.line for s in trace.steps if s.function == "total" and s.event == "line"] == [
        2, 3, 4, 3, 4, 3, 4, 3, 5,
    ]  # fmt: skip


def test_cwm_tutor_and_blocks_are_json(prog: str) -> None:
    cwm = json.loads(tracebox("trace", prog, "-f", "cwm").stdout)
    assert cwm[0]["event"] == "call"
    assert any(f["action"].strip() == "t += i" for f in cwm)
    tutor = json.loads(tracebox("trace", prog, "-f", "tutor").stdout)
    assert tutor["code"] == PROGRAM and tutor["trace"]
    blocks = json.loads(tracebox("trace", prog, "-f", "blocks").stdout)
    assert [call["function"] for call in blocks] == ["total"]


def test_jsonl_and_parquet_are_written_to_files(prog: str, tmp_path: Path) -> None:
    jsonl, parquet = tmp_path / "t.jsonl", tmp_path / "t.parquet"
    out = tracebox("trace", prog, "-f", "jsonl", "-o", str(jsonl))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert lines[0]["kind"] == "header"
    steps = [line for line in lines if line["kind"] == "step"]
    out = tracebox("trace", prog, "-f", "parquet", "-o", str(parquet))
    assert out.returncode == 0, out.stderr
    assert pq.read_table(parquet).num_rows == len(steps)


def test_parquet_needs_a_file_and_a_failing_program_still_gives_its_trace(
    prog: str, tmp_path: Path
) -> None:
    out = tracebox("trace", prog, "-f", "parquet")
    assert out.returncode == 2
    assert "--output" in out.stderr
    bad = script(tmp_path, "x = 1\ny = x / 0\n", name="bad.py")
    out = tracebox("trace", bad, "-f", "raw")
    assert out.returncode == 1
    assert "ZeroDivisionError" in out.stderr
    trace = Trace.from_json(out.stdout)
    assert trace.error is not None and trace.error.type == "ZeroDivisionError"
