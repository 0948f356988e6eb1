"""Step-level execution tracing of user code: record, model, render.

``record(source, TraceConfig(mode="full"))`` or ``with Recorder(config) as rec: ...`` give a
``Trace``: its steps (call, line, return, exception, with changed locals), counts by unit,
coverage, and an explicit truncation marker when a budget ended recording.

Names are imported on first use: the worker imports the recorder, and must not pay for
pydantic (only ``TraceConfig`` and ``Trace.from_wire`` need it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracebox._lazy import lazy_names

if TYPE_CHECKING:
    from tracebox.trace.config import TraceConfig
    from tracebox.trace.cursor import Cursor
    from tracebox.trace.errors import TraceBudgetExceeded
    from tracebox.trace.model import (
        Counts,
        Coverage,
        FrameInfo,
        Step,
        Trace,
        Truncation,
        Value,
    )
    from tracebox.trace.recorder import Recorder, RecorderState, record
    from tracebox.trace.settings import Settings

_LAZY = {
    "Counts": "tracebox.trace.model",
    "Coverage": "tracebox.trace.model",
    "Cursor": "tracebox.trace.cursor",
    "FrameInfo": "tracebox.trace.model",
    "Recorder": "tracebox.trace.recorder",
    "RecorderState": "tracebox.trace.recorder",
    "Settings": "tracebox.trace.settings",
    "Step": "tracebox.trace.model",
    "Trace": "tracebox.trace.model",
    "TraceBudgetExceeded": "tracebox.trace.errors",
    "TraceConfig": "tracebox.trace.config",
    "Truncation": "tracebox.trace.model",
    "Value": "tracebox.trace.model",
    "record": "tracebox.trace.recorder",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)

__all__ = [
    "Counts",
    "Coverage",
    "Cursor",
    "FrameInfo",
    "Recorder",
    "RecorderState",
    "Settings",
    "Step",
    "Trace",
    "TraceBudgetExceeded",
    "TraceConfig",
    "Truncation",
    "Value",
    "record",
]
