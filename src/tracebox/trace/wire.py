"""The wire schema of a trace, and strict validation of traces from untrusted workers.

Host side only (imports pydantic). ``Trace.to_wire()`` (model.py, pydantic-free) writes the
shape described here::

    {"format": "tracebox.trace/1", "mode": "full", "backend": "monitoring", "python": "3.13",
     "frames": [[function, file, library], ...],
     "steps": [[event, frame, depth, line, hits, changed|null, deleted|null, value|null,
                arc|null], ...],
     "counts": {"line_events": n|null, ...}, "truncation": {...}|null,
     "coverage": {"lines": {file: [line, ...]}, "arcs": {file: [[from, to], ...]}}|null,
     "error": value|null, "sources": {file: text}}

    value   = [repr, type, id|null, cut]
    changed = {name: value}         (locals bound or changed since the frame's previous step)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from tracebox.errors import ProtocolError
from tracebox.trace.model import (
    WIRE_FORMAT,
    Counts,
    Coverage,
    FrameInfo,
    Row,
    Trace,
    Truncation,
    TruncationReason,
    Value,
)

__all__ = ["load", "load_json"]

Nat = Annotated[int, Strict(), Field(ge=0)]
Line = Annotated[int, Strict(), Field(ge=0, le=10_000_000)]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
ValueWire = tuple[Str, Str, Annotated[int, Strict(), Field(ge=1)] | None, Bool]
StepWire = tuple[
    Literal["call", "line", "return", "exception"],
    Nat,
    Nat,
    Line,
    Nat,
    dict[Str, ValueWire] | None,
    list[Str] | None,
    ValueWire | None,
    tuple[Line, Line] | None,
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _CountsWire(_Strict):
    line_events: Nat | None = None
    calls: Nat | None = None
    returns: Nat | None = None
    exceptions: Nat | None = None
    statements: Nat | None = None
    blocks: Nat | None = None
    bytecodes: Nat | None = None


class _TruncationWire(_Strict):
    step: Nat
    reason: TruncationReason
    limit: Nat
    dropped: Str
    dropped_steps: Nat | None = None
    stopped: Bool = False


class _CoverageWire(_Strict):
    lines: dict[Str, list[Line]]
    arcs: dict[Str, list[tuple[Line, Line]]]


class _TraceWire(_Strict):
    format: Literal["tracebox.trace/1"]
    mode: Literal["steps", "coverage", "full"]
    backend: Literal["monitoring", "settrace"]
    python: Annotated[str, Strict(), Field(pattern=r"^3\.\d{1,2}$")]
    frames: list[tuple[Str, Str, Bool]]
    steps: list[StepWire]
    counts: _CountsWire
    truncation: _TruncationWire | None
    coverage: _CoverageWire | None
    error: ValueWire | None
    sources: dict[Str, Str] = {}


def _value(v: tuple[str, str, int | None, bool]) -> Value:
    return Value(v[0], v[1], v[2], v[3])


def _convert(w: _TraceWire) -> Trace:
    assert w.format == WIRE_FORMAT
    frames = tuple(FrameInfo(f, file, lib) for f, file, lib in w.frames)
    rows: list[Row] = []
    for k, (ev, fid, depth, line, hits, changed, deleted, value, arc) in enumerate(w.steps):
        if fid >= len(frames):
            raise ProtocolError(f"trace step {k} names frame {fid} of {len(frames)}")
        rows.append(
            (
                ev, fid, depth, line, hits,
                None if changed is None else {n: _value(v) for n, v in changed.items()},
                None if deleted is None else tuple(deleted),
                None if value is None else _value(value),
                arc,
            )
        )  # fmt: skip
    truncation = None
    if w.truncation is not None:
        truncation = Truncation(**w.truncation.model_dump())
        if w.mode == "full" and truncation.step != len(rows):  # other modes keep no steps
            raise ProtocolError("trace truncation marker does not match its steps")
    coverage = None
    if w.coverage is not None:
        coverage = Coverage(
            lines={f: tuple(v) for f, v in w.coverage.lines.items()},
            arcs={f: tuple(v) for f, v in w.coverage.arcs.items()},
        )
    return Trace(
        mode=w.mode,
        backend=w.backend,
        python=w.python,
        frames=frames,
        rows=tuple(rows),
        counts=Counts(**w.counts.model_dump()),
        truncation=truncation,
        coverage=coverage,
        error=None if w.error is None else _value(w.error),
        sources=dict(w.sources),
    )


def load(data: Any) -> Trace:
    """A ``Trace`` from ``to_wire()`` output (parsed JSON); anything else is a ProtocolError."""
    try:
        wire = _TraceWire.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(f"malformed trace: {_summary(exc)}") from None
    return _convert(wire)


def load_json(raw: bytes | str) -> Trace:
    """Parse and validate in one pass (pydantic's JSON parser)."""
    try:
        wire = _TraceWire.model_validate_json(raw)
    except ValidationError as exc:
        raise ProtocolError(f"malformed trace: {_summary(exc)}") from None
    return _convert(wire)


def _summary(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    where = ".".join(str(p) for p in first["loc"])
    return f"{len(errors)} error(s), first at {where or '<root>'}: {first['msg']}"
