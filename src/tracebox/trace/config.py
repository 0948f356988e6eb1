"""What a recording records and how much of it: ``TraceConfig`` (host side, validated).

The worker never imports pydantic: it receives ``TraceConfig.to_wire()`` and turns it into
the plain :class:`~tracebox.trace.settings.Settings` the recorder runs on.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tracebox.trace.settings import _COVERAGE_COUNTS, Mode, OnBudget, Settings

__all__ = ["TraceConfig"]


class TraceConfig(BaseModel):
    """A recording's mode, budgets, value bounds and which code counts as the user's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = "full"
    """``steps``: count events only (line events, calls, returns, exceptions), cheapest.
    ``coverage``: which lines ran and which branch arcs were taken, per file.
    ``full``: every step, with changed locals, return values and exceptions."""
    max_steps: int = Field(1_000_000, ge=1, strict=True)
    """Steps recorded (full mode) or counted (steps mode) before the budget ends recording."""
    max_bytes: int = Field(64 << 20, ge=1, strict=True)
    """UTF-8 bytes of rendered values (locals, return values, exceptions) a full trace may
    hold before the budget ends recording."""
    on_budget: OnBudget = "continue"
    """When a budget runs out: ``continue`` records a truncation marker, keeps counting, and
    lets the program run on; ``stop`` also raises ``TraceBudgetExceeded`` in the user's code."""
    max_repr_chars: int = Field(200, ge=16, strict=True)
    """Longest rendered value; longer reprs are cut with a marker saying how much was cut."""
    max_repr_depth: int = Field(3, ge=1, strict=True)
    """Container nesting rendered before inner containers are cut with a marker."""
    max_items: int = Field(20, ge=1, strict=True)
    """Items of a list, tuple, set, dict or deque rendered before the rest is cut."""
    include: tuple[str, ...] = ("<cell-*",)
    """``fnmatch`` patterns of the file names of user code (cells are ``<cell-N>``)."""
    files: tuple[str, ...] = ()
    """Exact file names that are user code as well (no pattern matching)."""
    trace_libraries: bool = Field(False, strict=True)
    """Record inside library code too. By default a call from user code into a library is
    one ``call`` step and one ``return`` step, with nothing recorded inside it."""
    count_instructions: bool = Field(False, strict=True)
    """Count executed bytecode instructions and basic-block entries of user code exactly
    (``Counts.bytecodes``, ``Counts.blocks``), in steps and full modes. It costs a Python
    callback per instruction (``sys.monitoring`` INSTRUCTION events on 3.12+, settrace
    opcode events on 3.11): expect user code to run several times slower than without."""

    @model_validator(mode="after")
    def _counts_need_counting_mode(self) -> TraceConfig:
        if self.count_instructions and self.mode == "coverage":
            raise ValueError(_COVERAGE_COUNTS)
        return self

    def to_wire(self) -> dict[str, Any]:
        """A JSON-able dict; ``Settings.from_wire`` rebuilds it without pydantic."""
        return self.model_dump(mode="json")

    def settings(self) -> Settings:
        return Settings.from_wire(self.to_wire())
