"""JSON Lines and Parquet export: read back, compared with ``trace.steps``; determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tracebox.trace import Step, Trace, Value, record
from tracebox.trace.export.tables import steps_table, to_jsonl, to_parquet

PROGRAM = (
    "def f(xs, tag):\n"
    "    xs.append(len(xs))\n"
    "    del tag\n"
    "    return xs\n"
    "\n"
    "a = []\n"
    "for i in range(3):\n"
    "    f(a, 'é')\n"
    "s = 'long' * 50\n"
    "try:\n"
    "    1 / 0\n"
    "except ZeroDivisionError:\n"
    "    pass\n"
)


def full(source: str = PROGRAM, **config: Any) -> Trace:
    return record(source, {"mode": "full", "max_repr_chars": 20, **config})


def value(v: Value | None) -> dict[str, Any] | None:
    return None if v is None else {"repr": v.repr, "type": v.type, "id": v.id, "cut": v.cut}


def expected_jsonl(s: Step) -> dict[str, Any]:
    return {
        "kind": "step",
        "index": s.index,
        "event": s.event,
        "depth": s.depth,
        "frame": s.frame,
        "function": s.function,
        "file": s.file,
        "line": s.line,
        "hits": s.hits,
        "changed": {n: value(v) for n, v in s.changed.items()},
        "deleted": list(s.deleted),
        "value": value(s.value),
        "arc": None if s.arc is None else list(s.arc),
    }


def expected_row(s: Step) -> dict[str, Any]:
    row = expected_jsonl(s)
    del row["kind"]
    row["changed"] = [
        {"name": n, "repr": v.repr, "type": v.type, "id": v.id, "cut": v.cut}
        for n, v in s.changed.items()
    ]
    row["arc"] = None if s.arc is None else {"from": s.arc[0], "to": s.arc[1]}
    return row


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]


def test_jsonl_has_a_header_then_one_record_per_step(tmp_path: Path) -> None:
    trace = full()
    path = tmp_path / "t.jsonl"
    assert to_jsonl(trace, path) == len(trace) + 1
    head, *steps = read_jsonl(path)
    assert head == {
        "kind": "header",
        "format": "tracebox.steps/1",
        "mode": "full",
        "backend": trace.backend,
        "python": trace.python,
        "steps": len(trace),
        "counts": trace.step_counts(),
        "truncation": None,
        "error": None,
        "frames": [
            {"function": f.function, "file": f.file, "library": f.library} for f in trace.frames
        ],
        "sources": {"<cell-0>": PROGRAM},
    }
    assert [f["function"] for f in head["frames"]] == ["<module>", "f", "f", "f"]
    assert steps == [expected_jsonl(s) for s in trace.steps]
    # The program exercises every field: a deletion, an arc, a return value, an exception.
    assert any(r["deleted"] for r in steps)
    assert any(r["arc"] for r in steps)
    assert {r["event"] for r in steps} == {"call", "line", "return", "exception"}


def test_jsonl_is_the_same_bytes_for_the_same_trace(tmp_path: Path) -> None:
    first, second, again = tmp_path / "1.jsonl", tmp_path / "2.jsonl", tmp_path / "3.jsonl"
    trace = full()
    to_jsonl(trace, first)
    trace.to_jsonl(second)
    to_jsonl(Trace.from_json(trace.to_json()), again)  # the same trace, through the wire
    data = first.read_bytes()
    assert data == second.read_bytes() == again.read_bytes()
    assert data.isascii()  # non-ASCII is escaped, so no encoding question
    assert b"\\u00e9" in data
    assert b" " not in data.split(b"\n")[1]  # no whitespace between tokens


def test_jsonl_of_a_truncated_trace_says_where_it_was_cut(tmp_path: Path) -> None:
    trace = full(max_steps=12)
    assert trace.truncation is not None
    path = tmp_path / "t.jsonl"
    assert to_jsonl(trace, path) == 13
    head, *steps = read_jsonl(path)
    assert head["truncation"] == dataclasses.asdict(trace.truncation)
    assert head["truncation"]["step"] == 12
    assert head["steps"] == len(steps) == 12
    assert head["counts"]["steps"] > 12  # counting went on past the cut


def test_cut_values_keep_their_flag_and_marker(tmp_path: Path) -> None:
    trace = full()
    path = tmp_path / "t.jsonl"
    to_jsonl(trace, path)
    values = [v for r in read_jsonl(path)[1:] for v in r["changed"].values()]
    cut = [v for v in values if v["cut"]]
    marker = "'longlonglonglonglong'...<cut: 180 more chars>"
    assert cut == [{"repr": marker, "type": "str", "id": None, "cut": True}]
    parquet = tmp_path / "t.parquet"
    to_parquet(trace, parquet)
    cells = [c for row in pq.read_table(parquet).column("changed").to_pylist() for c in row]
    assert [c for c in cells if c["cut"]] == [{"name": "s", **cut[0]}]


def test_jsonl_records_the_error_of_a_failed_run(tmp_path: Path) -> None:
    trace = full("x = 1\nraise ValueError('no')\n")
    path = tmp_path / "t.jsonl"
    to_jsonl(trace, path)
    head = read_jsonl(path)[0]
    error = {"repr": "ValueError('no')", "type": "ValueError", "id": None, "cut": False}
    assert head["error"] == error


def test_parquet_reads_back_as_the_steps(tmp_path: Path) -> None:
    trace = full()
    path = tmp_path / "t.parquet"
    assert to_parquet(trace, path) == len(trace)
    table = pq.read_table(path)
    assert table.to_pylist() == [expected_row(s) for s in trace.steps]
    assert table.equals(steps_table(trace))
    assert table.schema.equals(steps_table(trace).schema, check_metadata=True)


def test_parquet_columns_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    full().to_parquet(path)
    schema = pq.read_schema(path)
    assert schema.field("event").type == pa.dictionary(pa.int8(), pa.string())
    assert schema.field("function").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("file").type == pa.dictionary(pa.int32(), pa.string())
    for name in ("depth", "frame", "line"):
        assert schema.field(name).type == pa.int32()
    assert schema.field("index").type == schema.field("hits").type == pa.int64()
    changed = schema.field("changed").type
    assert pa.types.is_list(changed)
    assert [f.name for f in changed.value_type] == ["name", "repr", "type", "id", "cut"]
    assert [f.type for f in changed.value_type] == [
        pa.string(),
        pa.string(),
        pa.string(),
        pa.int64(),
        pa.bool_(),
    ]
    assert [f.name for f in schema.field("value").type] == ["repr", "type", "id", "cut"]
    assert [f.name for f in schema.field("arc").type] == ["from", "to"]
    assert schema.field("deleted").type.value_type == pa.string()
    nullable = {f.name for f in schema if f.nullable}
    assert nullable == {"value", "arc"}


def test_parquet_metadata_is_the_header(tmp_path: Path) -> None:
    trace = full(max_steps=5)
    path = tmp_path / "t.parquet"
    assert to_parquet(trace, path) == 5
    meta = json.loads(pq.read_schema(path).metadata[b"tracebox"])
    jsonl = tmp_path / "t.jsonl"
    to_jsonl(trace, jsonl)
    head = read_jsonl(jsonl)[0]
    del head["kind"]
    assert meta == head
    assert meta["truncation"]["reason"] == "max_steps"
    assert meta["mode"] == "full"
    assert meta["counts"] == trace.step_counts()


def test_parquet_is_deterministic(tmp_path: Path) -> None:
    trace = full()
    first, second = tmp_path / "1.parquet", tmp_path / "2.parquet"
    to_parquet(trace, first)
    to_parquet(Trace.from_json(trace.to_json()), second)
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("mode", ["steps", "coverage"])
def test_a_trace_without_steps_gives_a_header_and_no_rows(tmp_path: Path, mode: str) -> None:
    trace = record(PROGRAM, {"mode": mode})
    jsonl, parquet = tmp_path / "t.jsonl", tmp_path / "t.parquet"
    assert to_jsonl(trace, jsonl) == 1
    [head] = read_jsonl(jsonl)
    assert head["mode"] == mode
    assert head["steps"] == 0
    assert to_parquet(trace, parquet) == 0
    table = pq.read_table(parquet)
    assert table.num_rows == 0
    assert table.schema.equals(steps_table(full()).schema)  # same columns, whatever the mode


def test_the_header_marks_collapsed_library_frames(tmp_path: Path) -> None:
    trace = full("import json\ns = json.dumps([1])\n")
    path = tmp_path / "t.jsonl"
    to_jsonl(trace, path)
    head, *steps = read_jsonl(path)
    library = {i for i, f in enumerate(head["frames"]) if f["library"]}
    assert [head["frames"][i]["function"] for i in library] == ["dumps"]
    assert [r["event"] for r in steps if r["frame"] in library] == ["call", "return"]
