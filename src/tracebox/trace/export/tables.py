"""One record per step: JSON Lines (``to_jsonl``) and Parquet (``to_parquet``, ``steps_table``).

JSON Lines: the first line is a header, then one line per step; ``kind`` tells them apart::

    {"kind": "header", "format": "tracebox.steps/1", "mode": "full", "backend": "settrace",
     "python": "3.11", "steps": 18, "counts": {"line_events": 12, ..., "steps": 18},
     "truncation": {"step": ..., "reason": ..., ...} | null, "error": value | null,
     "frames": [{"function": str, "file": str, "library": bool}, ...],
     "sources": {file: text}}
    {"kind": "step", "index": 0, "event": "call", "depth": 0, "frame": 0,
     "function": "<module>", "file": "<cell-0>", "line": 0, "hits": 0,
     "changed": {name: value}, "deleted": [name, ...], "value": value | null,
     "arc": [from_line, to_line] | null}

    value = {"repr": str, "type": str, "id": int | null, "cut": bool}

``changed`` holds only the locals bound or changed since the frame's previous step, as in
``Trace`` (replay them, or use ``Trace.locals_at``). The same trace always gives the same
bytes: keys in a fixed order, no whitespace, non-ASCII escaped, one ``\\n`` per line.

Parquet: one row per step with the columns above (``arc`` as a struct ``{from, to}``);
``event``, ``function`` and ``file`` are dictionary-encoded; ``changed`` is
``list<struct<name, repr, type, id, cut>>``. The header (without ``kind``) is JSON in the
schema metadata under ``b"tracebox"``. pyarrow is imported only by the Parquet functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any

from tracebox.trace.model import Trace, Value

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FORMAT", "METADATA_KEY", "header", "steps_table", "to_jsonl", "to_parquet"]

FORMAT = "tracebox.steps/1"
METADATA_KEY = b"tracebox"
_EVENTS = ("call", "line", "return", "exception")  # the event dictionary, in a fixed order
_EVENT_CODE = {e: i for i, e in enumerate(_EVENTS)}


def header(trace: Trace) -> dict[str, Any]:
    """What the trace says about itself as a whole: the JSONL header and Parquet metadata."""
    t = trace.truncation
    return {
        "kind": "header",
        "format": FORMAT,
        "mode": trace.mode,
        "backend": trace.backend,
        "python": trace.python,
        "steps": len(trace.rows),
        "counts": trace.step_counts(),
        "truncation": None if t is None else dataclasses.asdict(t),
        "error": None if trace.error is None else _value(trace.error),
        # Which frames are collapsed library calls (only their call and return recorded).
        "frames": [
            {"function": f.function, "file": f.file, "library": f.library} for f in trace.frames
        ],
        "sources": dict(trace.sources),
    }


def to_jsonl(trace: Trace, path: str | os.PathLike[str]) -> int:
    """Write the header and one JSON object per step; returns the lines written (steps + 1)."""
    frames = trace.frames
    dump = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
    with open(path, "wb") as out:  # not a temporary file and rename: path may be /dev/stdout
        out.write(dump(header(trace)).encode() + b"\n")
        for k, (event, fid, depth, line, hits, changed, deleted, value, arc) in enumerate(
            trace.rows
        ):
            frame = frames[fid]
            record = {
                "kind": "step",
                "index": k,
                "event": event,
                "depth": depth,
                "frame": fid,
                "function": frame.function,
                "file": frame.file,
                "line": line,
                "hits": hits,
                "changed": {n: _value(v) for n, v in changed.items()} if changed else {},
                "deleted": list(deleted or ()),
                "value": None if value is None else _value(value),
                "arc": None if arc is None else list(arc),
            }
            out.write(dump(record).encode() + b"\n")
    return len(trace.rows) + 1


def steps_table(trace: Trace) -> pa.Table:
    """The steps as a typed Arrow table, the header in its schema metadata."""
    import pyarrow as pa

    rows = trace.rows
    value_fields = [
        pa.field("repr", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("id", pa.int64()),
        pa.field("cut", pa.bool_(), nullable=False),
    ]
    value_type = pa.struct(value_fields)
    changed_type = pa.list_(
        pa.field(
            "element", pa.struct([pa.field("name", pa.string(), nullable=False), *value_fields])
        )
    )
    arc_type = pa.struct(
        [pa.field("from", pa.int32(), nullable=False), pa.field("to", pa.int32(), nullable=False)]
    )
    names = pa.dictionary(pa.int32(), pa.string())
    strings = pa.list_(pa.field("element", pa.string(), nullable=False))
    functions, function_of = _dictionary([f.function for f in trace.frames])
    files, file_of = _dictionary([f.file for f in trace.frames])
    fids = [r[1] for r in rows]
    columns = [
        pa.array(range(len(rows)), pa.int64()),
        pa.DictionaryArray.from_arrays(
            pa.array([_EVENT_CODE[r[0]] for r in rows], pa.int8()), pa.array(_EVENTS)
        ),
        pa.array([r[2] for r in rows], pa.int32()),
        pa.array(fids, pa.int32()),
        pa.DictionaryArray.from_arrays(
            pa.array([function_of[f] for f in fids], pa.int32()), pa.array(functions, pa.string())
        ),
        pa.DictionaryArray.from_arrays(
            pa.array([file_of[f] for f in fids], pa.int32()), pa.array(files, pa.string())
        ),
        pa.array([r[3] for r in rows], pa.int32()),
        pa.array([r[4] for r in rows], pa.int64()),
        pa.array(
            [[{"name": n, **_value(v)} for n, v in (r[5] or {}).items()] for r in rows],
            changed_type,
        ),
        pa.array([list(r[6] or ()) for r in rows], strings),
        pa.array([None if r[7] is None else _value(r[7]) for r in rows], value_type),
        pa.array(
            [None if r[8] is None else {"from": r[8][0], "to": r[8][1]} for r in rows], arc_type
        ),
    ]
    meta = header(trace)
    del meta["kind"]
    schema = pa.schema(
        [
            pa.field("index", pa.int64(), nullable=False),
            pa.field("event", pa.dictionary(pa.int8(), pa.string()), nullable=False),
            pa.field("depth", pa.int32(), nullable=False),
            pa.field("frame", pa.int32(), nullable=False),
            pa.field("function", names, nullable=False),
            pa.field("file", names, nullable=False),
            pa.field("line", pa.int32(), nullable=False),
            pa.field("hits", pa.int64(), nullable=False),
            pa.field("changed", changed_type, nullable=False),
            pa.field("deleted", strings, nullable=False),
            pa.field("value", value_type),
            pa.field("arc", arc_type),
        ],
        metadata={METADATA_KEY: json.dumps(meta, ensure_ascii=True, separators=(",", ":"))},
    )
    return pa.Table.from_arrays(columns, schema=schema)


def to_parquet(trace: Trace, path: str | os.PathLike[str]) -> int:
    """Write one row per step to a Parquet file; returns the rows written."""
    import pyarrow.parquet as pq

    table = steps_table(trace)
    pq.write_table(table, path)
    return int(table.num_rows)


def _value(v: Value) -> dict[str, Any]:
    return {"repr": v.repr, "type": v.type, "id": v.id, "cut": v.cut}


def _dictionary(per_frame: list[str]) -> tuple[list[str], list[int]]:
    """Distinct names in order of first appearance, and each frame's index among them."""
    index: dict[str, int] = {}
    of_frame = [index.setdefault(name, len(index)) for name in per_frame]
    return list(index), of_frame
