"""Exact counts of executed bytecode instructions and basic-block entries in user code
(``count_instructions=True``).

An instruction is what the interpreter reports to tracers: a ``sys.monitoring``
INSTRUCTION event (3.12+) or a settrace ``opcode`` event (3.11). Neither reports a frame's
prologue (``MAKE_CELL``, ``COPY_FREE_VARS``, ``RETURN_GENERATOR``) nor ``RESUME``; 3.11
reports an ``EXTENDED_ARG`` and the instruction it prefixes as one event, 3.12+ as two.

A block is entered when its first instruction runs (``tracebox.trace.cfg`` leaders), and a
fresh frame enters its entry block when it starts (its first instruction, ``RESUME`` or the
prologue, is never reported). A resumed generator goes on in the block it yielded from.

On 3.12+ the counter is a ``sys.monitoring`` tool of its own, whichever backend records:
PY_START finds user code, whose INSTRUCTION events are then switched on locally. On 3.11
it wraps the settrace backend's tracers and sets ``f_trace_opcodes`` on user frames.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from tracebox.trace._codeinfo import USER, CodeTable
from tracebox.trace._collector import Counter
from tracebox.trace.cfg import build_cfg

__all__ = ["MonitoringCounter", "settrace_counter"]

Tracer = Any
_ident = threading.get_ident


def _leaders(code: types.CodeType) -> frozenset[int]:
    """Offsets whose execution enters a block; the entry block's is counted at the start."""
    return build_cfg(code).leaders - {0}


class MonitoringCounter:
    """3.12+: a ``sys.monitoring`` tool that counts instructions and block entries."""

    def __init__(self, sink: Counter, codes: CodeTable, tid: int) -> None:
        self.sink = sink
        self.codes = codes
        self.tid = tid
        self._tool = -1
        self._enabled: list[types.CodeType] = []
        self._finish: Callable[[], None] | None = None

    def start(self, restart: bool) -> None:
        """``restart``: forget earlier recordings' DISABLEs (the monitoring backend has
        already done it for every tool)."""
        if sys.version_info < (3, 12):  # pragma: no cover - 3.11 counts with settrace
            raise RuntimeError("sys.monitoring needs Python 3.12 or later")
        from tracebox.trace._monitoring import _claim_tool

        m = sys.monitoring
        self._tool = tool = _claim_tool()
        if restart:
            m.restart_events()
        by_id, codes, tid = self.codes.by_id, self.codes, self.tid
        leaders: dict[int, frozenset[int]] = {}  # by id(code); the CodeTable holds the codes
        enabled = self._enabled
        local = m.events.INSTRUCTION
        disable = m.DISABLE
        instructions = blocks = 0

        def start(code: types.CodeType, offset: int) -> Any:
            nonlocal blocks
            if _ident() != tid:
                return None
            if id(code) not in leaders:
                info = by_id.get(id(code)) or codes.get(code)
                if info.kind != USER:
                    return disable
                leaders[id(code)] = _leaders(code)
                m.set_local_events(tool, code, local)
                enabled.append(code)
            blocks += 1
            return None

        def instruction(code: types.CodeType, offset: int) -> None:
            nonlocal instructions, blocks
            if _ident() == tid:
                instructions += 1
                if offset in leaders[id(code)]:
                    blocks += 1

        def finish() -> None:
            self.sink.bytecodes, self.sink.blocks = instructions, blocks

        self._finish = finish
        m.register_callback(tool, m.events.PY_START, start)
        m.register_callback(tool, m.events.INSTRUCTION, instruction)
        m.set_events(tool, m.events.PY_START)

    def stop(self) -> None:
        if self._tool < 0 or sys.version_info < (3, 12):
            return
        m = sys.monitoring
        tool, self._tool = self._tool, -1
        m.set_events(tool, 0)
        for code in self._enabled:
            m.set_local_events(tool, code, 0)
        m.register_callback(tool, m.events.PY_START, None)
        m.register_callback(tool, m.events.INSTRUCTION, None)
        m.free_tool_id(tool)
        if self._finish is not None:
            self._finish()


def settrace_counter(
    outer: Tracer, sink: Counter, codes: CodeTable
) -> tuple[Tracer, Callable[[], None]]:
    """3.11: a global tracer that calls ``outer`` and counts the opcode events of the user
    frames it traces; and a function that hands the counts to the sink."""
    leaders: dict[int, frozenset[int]] = {}
    instructions = blocks = 0

    def global_tracer(frame: types.FrameType, event: str, arg: Any) -> Tracer:
        nonlocal blocks
        inner = outer(frame, event, arg)
        if inner is None:
            return None
        code = frame.f_code
        info = codes.by_id.get(id(code))
        if info is None or info.kind != USER:
            return inner  # a library frame's return-only tracer
        lead = leaders.get(id(code))
        if lead is None:
            lead = leaders[id(code)] = _leaders(code)
        if info.is_fresh(frame.f_lasti):
            blocks += 1
        frame.f_trace_opcodes = True

        def local(frame: types.FrameType, event: str, arg: Any) -> Tracer:
            nonlocal inner, instructions, blocks
            if event == "opcode":
                instructions += 1
                if frame.f_lasti in lead:
                    blocks += 1
                return local
            inner = inner(frame, event, arg)
            return None if inner is None else local

        return local

    def finish() -> None:
        sink.bytecodes, sink.blocks = instructions, blocks

    return global_tracer, finish
