"""Problem and sample files: every supported format, and errors that name the line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tracebox.types import ErrorInfo
from tracebox.verify import (
    BadInputFile,
    FunctionProblem,
    IOProblem,
    ProblemError,
    Sample,
    SelfInvokingProblem,
    TestResult,
    Verdict,
    problem_from_record,
    read_problems,
    read_samples,
    write_results,
)

DATA = Path(__file__).parents[1] / "data" / "verify"


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_humaneval_jsonl() -> None:
    problems = read_problems(DATA / "humaneval.jsonl")
    assert list(problems) == ["Toy/add", "Toy/root", "Toy/sort"]
    add = problems["Toy/add"]
    assert isinstance(add, FunctionProblem)
    assert add.entry_point == "add"
    assert add.program("    return a + b\n").endswith('"""\n    return a + b\n')


def test_gzipped_jsonl(tmp_path: Path) -> None:
    gz = tmp_path / "p.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write((DATA / "humaneval.jsonl").read_text())
    assert list(read_problems(gz)) == ["Toy/add", "Toy/root", "Toy/sort"]


def test_mbpp_rows_become_function_problems() -> None:
    (p,) = read_problems(DATA / "mbpp.jsonl").values()
    assert isinstance(p, FunctionProblem)
    assert (p.task_id, p.entry_point, p.prompt) == ("11", "remove_Occ", "")
    assert p.test.count("assert remove_Occ") == 3
    assert p.canonical_solution is not None


def test_humaneval_pro_json_array() -> None:
    (p,) = read_problems(DATA / "pro.json").values()
    assert isinstance(p, SelfInvokingProblem)
    assert p.entry_points() == ("sum_of_parts", "truncate_number")
    assert p.canonical_solution is not None
    assert p.program("X").startswith(p.raw_problem) and p.program("X").endswith("X")
    assert "import math" in p.trusted_prelude()


def test_stdio_formats() -> None:
    problems = read_problems(DATA / "stdio.jsonl")
    assert all(isinstance(p, IOProblem) for p in problems.values())
    assert [len(p.cases) for p in problems.values() if isinstance(p, IOProblem)] == [3, 2, 3, 2]
    apps = problems["4242"]
    assert isinstance(apps, IOProblem) and apps.canonical_solution is not None
    mean = problems["io/mean"]
    assert isinstance(mean, IOProblem) and mean.match.float_tolerance == 1e-6


def test_apps_lists_of_lines_are_joined() -> None:
    io = json.dumps({"inputs": [["1", "2"]], "outputs": [["3"]]})
    p = problem_from_record({"problem_id": 1, "input_output": io})
    assert isinstance(p, IOProblem) and p.cases[0].input == "1\n2\n"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"task_id": "x"}, "unrecognised problem"),
        ({"task_id": "x", "prompt": "", "entry_point": 3, "test": ""}, "'entry_point' must be"),
        ({"kind": "nope"}, "unknown problem kind"),
        ({"kind": "stdio", "task_id": "x", "cases": []}, "cases"),
        ({"input_output": "{", "problem_id": 1}, "not valid JSON"),
        ({"input_output": '{"fn_name": "f", "inputs": [], "outputs": []}'}, "call-based"),
        ({"task_id": "x", "inputs": ["1"], "outputs": []}, "1 inputs but 0 outputs"),
        ({"task_id": 1, "test_list": ["assert True"]}, "which function"),
    ],
)
def test_bad_records_say_what_is_wrong(record: dict[str, object], message: str) -> None:
    with pytest.raises(ProblemError, match=message):
        problem_from_record(record)


def test_a_bad_problem_line_is_named(tmp_path: Path) -> None:
    good = json.loads((DATA / "humaneval.jsonl").read_text().splitlines()[0])
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + '{"task_id": "b", "prompt": ""\n')
    with pytest.raises(BadInputFile, match=r"p\.jsonl line 3: not valid JSON"):
        read_problems(path)
    _jsonl(path, [good, {"task_id": "y"}])
    with pytest.raises(BadInputFile, match=r"line 2: unrecognised problem"):
        read_problems(path)
    _jsonl(path, [good, good])
    with pytest.raises(BadInputFile, match=r"line 2: task_id 'Toy/add' appears twice"):
        read_problems(path)
    _jsonl(path, [good, [1, 2]])
    with pytest.raises(BadInputFile, match=r"line 2: a problem must be a JSON object"):
        read_problems(path)


def test_empty_unreadable_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(BadInputFile, match="no problems"):
        read_problems(empty)
    with pytest.raises(BadInputFile, match="cannot read"):
        read_problems(tmp_path / "missing.jsonl")
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BadInputFile, match="cannot read"):
        read_problems(binary)
    notgz = tmp_path / "n.jsonl.gz"
    notgz.write_text("{}")
    with pytest.raises(BadInputFile, match="cannot read"):
        read_problems(notgz)
    array = tmp_path / "a.json"
    array.write_text('"text"')
    with pytest.raises(BadInputFile, match="JSON array"):
        read_problems(array)
    array.write_text("[{]")
    with pytest.raises(BadInputFile, match="not valid JSON"):
        read_problems(array)
    array.write_text('[{"task_id": "x"}]')
    with pytest.raises(BadInputFile, match=r"item 0: unrecognised"):
        read_problems(array)


def test_samples_keep_their_extra_fields_and_bad_ones_are_named(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "s.jsonl",
        [{"task_id": "Toy/add", "completion": "x", "model": "m"}, {"task_id": "Toy/add"}],
    )
    with pytest.raises(BadInputFile, match=r"s\.jsonl line 2: field 'completion': Field required"):
        read_samples(path)
    _jsonl(path, [{"task_id": "Toy/add", "completion": "x", "model": "m"}])
    (s,) = read_samples(path, ["Toy/add"])
    assert s.model_extra == {"model": "m"}
    _jsonl(path, [{"task_id": "Toy/add", "completion": "x"}, {"task_id": "T/9", "completion": ""}])
    with pytest.raises(BadInputFile, match=r"line 2: no problem has task_id 'T/9'"):
        read_samples(path, ["Toy/add"])
    _jsonl(path, [{"task_id": "Toy/add", "completion": 5}])
    with pytest.raises(BadInputFile, match=r"line 1: field 'completion'"):
        read_samples(path)
    _jsonl(path, ["just text"])
    with pytest.raises(BadInputFile, match=r"line 1: a sample must be a JSON object"):
        read_samples(path)


def test_results_file_has_human_evals_fields_then_ours(tmp_path: Path) -> None:
    sample = Sample(task_id="T/1", completion="    return 1\n", model="m")  # type: ignore[call-arg]
    fail = TestResult(
        index=0, name="assert f() == 2", status="failed",
        error=ErrorInfo(type="AssertionError", message=""), calls=1, cpu_seconds=0.01, steps=4,
    )  # fmt: skip
    ok = TestResult(index=1, name="assert f() == 1", status="passed", calls=1, steps=4)
    verdicts = [
        Verdict(task_id="T/1", status="failed", passed=False, tests=(fail, ok), steps=8),
        Verdict(task_id="T/1", status="passed", passed=True, tests=(ok,), steps=4),
        Verdict(task_id="T/1", status="timeout", passed=False, tests=()),
    ]
    path = tmp_path / "s.jsonl_results.jsonl"
    assert write_results(path, [(sample, v) for v in verdicts]) == 3
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert list(rows[0])[:5] == ["task_id", "completion", "model", "result", "passed"]
    assert [(r["result"], r["passed"], r["status"]) for r in rows] == [
        ("failed: ", False, "failed"),
        ("passed", True, "passed"),
        ("timed out", False, "timeout"),
    ]
    assert rows[0]["tests"][0] == {
        "name": "assert f() == 2",
        "status": "failed",
        "error": "AssertionError: ",
        "cpu_seconds": 0.01,
        "steps": 4,
    }
    assert rows[0]["steps"] == 8 and rows[0]["attempts"] == 1
    gz = tmp_path / "r.jsonl.gz"
    write_results(gz, [(sample, verdicts[1])])
    with gzip.open(gz, "rt") as f:
        assert json.loads(f.readline())["passed"] is True
