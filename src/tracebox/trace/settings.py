"""The recorder's view of a ``TraceConfig``: a plain frozen dataclass, free of pydantic.

The recorder runs inside the sandboxed worker, which does not import pydantic; the host
validates a ``TraceConfig`` and sends ``to_wire()``, the worker rebuilds it here.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Mapping
from typing import Any, Literal, get_args

__all__ = ["Mode", "OnBudget", "Settings"]

Mode = Literal["steps", "coverage", "full"]
OnBudget = Literal["continue", "stop"]

_COVERAGE_COUNTS = "count_instructions needs mode 'steps' or 'full' (coverage has no counts)"
# tracebox's own code is never user code, even with trace_libraries=True.
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


@dataclasses.dataclass(frozen=True)
class Settings:
    """Same fields, meanings and defaults as ``TraceConfig`` (see its docstrings)."""

    mode: Mode = "full"
    max_steps: int = 1_000_000
    max_bytes: int = 64 << 20
    on_budget: OnBudget = "continue"
    max_repr_chars: int = 200
    max_repr_depth: int = 3
    max_items: int = 20
    include: tuple[str, ...] = ("<cell-*",)
    files: tuple[str, ...] = ()
    trace_libraries: bool = False
    count_instructions: bool = False

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Settings:
        """Rebuild from ``TraceConfig.to_wire()``; a malformed dict raises ``ValueError``."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown trace settings: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, raw in data.items():
            value = tuple(raw) if isinstance(raw, list | tuple) else raw
            default = known[name].default
            if type(value) is not type(default) or (
                isinstance(value, tuple) and not all(isinstance(s, str) for s in value)
            ):
                raise ValueError(f"trace setting {name}={raw!r} has the wrong type")
            values[name] = value
        settings = cls(**values)
        if settings.mode not in get_args(Mode) or settings.on_budget not in get_args(OnBudget):
            raise ValueError(f"bad trace mode or on_budget: {settings}")
        if min(settings.max_steps, settings.max_bytes, settings.max_items) < 1:
            raise ValueError("trace budgets and bounds must be positive")
        if settings.max_repr_chars < 16 or settings.max_repr_depth < 1:
            raise ValueError("max_repr_chars must be >= 16 and max_repr_depth >= 1")
        if settings.count_instructions and settings.mode == "coverage":
            raise ValueError(_COVERAGE_COUNTS)
        return settings

    def is_user_file(self, filename: str) -> bool:
        """Whether code from ``filename`` is recorded step by step."""
        if filename.startswith(_OWN_DIR):
            return False
        if self.trace_libraries or filename in self.files:
            return True
        return any(fnmatch.fnmatchcase(filename, pattern) for pattern in self.include)
