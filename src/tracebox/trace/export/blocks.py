"""LDB's view of a trace: per function call, the basic blocks it ran, each with the values of
its variables at the block's end.

LDB (Zhong et al. 2024, "Debug like a Human", github.com/FloridSleeves/LLMDebugger) shows
a model the execution of a failing function block by block, with intermediate values,
and asks it which block is wrong. Its tracer splits the function into basic blocks
(a statement-level CFG), runs it under ``python -m trace``, and prints ``vars()`` after
each executed block; when the function ran more than ``max_num_blocks`` blocks (10 at
block level) it keeps the first ``max_num_blocks // 2`` and the last ``max_num_blocks // 2``
and drops the middle without a word. It traces one call of the entry function (with
the lines of what it calls mixed in) and cuts the line of values to 100 characters.
``to_ldb_blocks`` gives the same view from a trace, per call and with the trace's bounded
``repr`` of each value:

- one entry per call of a user function (``def`` functions and methods; not module or
  class bodies, lambdas or comprehensions), in order of the calls; a generator's
  activations make one entry;
- blocks are the bytecode basic blocks of ``tracebox.trace.cfg``, as the call's line steps
  enter them (``CFG.advance``, each step on its own): a line step starts a new view block
  when a block was entered since the call's previous line step, otherwise its line joins
  the current view block. A line that spans several blocks (``a if c else b``, ``x and
  y``, a ``for`` header with its ``FOR_ITER`` block) belongs to the view block its line
  step starts or joins; blocks entered and left inside one line, without a line step of
  their own, get no view block. A loop body is a view block apart from its header;
- a view block's ``state`` is the call's locals as the first step after the block shows
  them (the next block's first line step, the return, or the last step recorded): names
  to bounded ``repr`` strings;
- elision as LDB's, with a marker: past ``max_blocks`` view blocks, the first
  ``max_blocks // 2`` and the last ``max_blocks - max_blocks // 2`` are kept and the
  middle is replaced by ``{"elided": n}``. Each kept block keeps its ``index`` in the full
  sequence.

Each entry::

    {"function": "f", "file": "<cell-1>", "frame": 3, "step": 12, "depth": 1,
     "arguments": {"n": "3"},            # the locals at the call
     "blocks": [{"index": 0, "block": 0, "lines": [2, 3], "source": ["    x = 1", ...],
                 "state": {"n": "3", "x": "1"}, "step": 15}, {"elided": 7}, ...],
     "total_blocks": 17, "return": "6" | None, "exception": "ValueError('x')" | None,
     "finished": True}

Calls of code whose source the trace lacks (``trace.sources``) are left out. ``return``
is the repr of the value the call returned (or a generator last yielded),
``exception`` that of the exception that ended it, ``finished`` whether its last step is
such an end (not so when the trace stops inside the call). The trace must come from this
Python ``major.minor`` (see ``tracebox.trace.cfg.frame_codes``).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from tracebox.trace.cfg import CFG, build_cfg, frame_codes

if TYPE_CHECKING:
    from tracebox.trace.model import Trace

__all__ = ["to_ldb_blocks"]


def to_ldb_blocks(trace: Trace, *, max_blocks: int = 10) -> list[dict[str, Any]]:
    """LDB's block-level view of each user function call; see the module docstring."""
    if max_blocks < 1:
        raise ValueError(f"max_blocks must be at least 1, not {max_blocks}")
    codes = frame_codes(trace)
    cfgs: dict[int, CFG] = {}
    calls: dict[int, _Call] = {}  # by frame id, in order of the calls
    for k, row in enumerate(trace.rows):
        event, fid = row[0], row[1]
        call = calls.get(fid)
        if call is None:
            code = codes[fid]
            if event != "call" or code is None or not _is_function(code):
                continue
            cfg = cfgs.get(id(code))
            if cfg is None:
                cfg = cfgs[id(code)] = build_cfg(code)
            call = calls[fid] = _Call(trace, fid, k, cfg)
        call.step(k, row)
    return [call.result(max_blocks) for call in calls.values()]


def _is_function(code: Any) -> bool:
    name: str = code.co_name
    return bool(code.co_flags & inspect.CO_OPTIMIZED) and not name.startswith("<")


class _Call:
    """One call being followed through the rows."""

    def __init__(self, trace: Trace, fid: int, k: int, cfg: CFG) -> None:
        self.trace = trace
        self.fid = fid
        self.first = k
        self.cfg = cfg
        self.file = trace.frames[fid].file
        self.locals: dict[str, str] = {}
        self.arguments: dict[str, str] | None = None
        self.blocks: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the view block that has no end state yet
        self.at = 0  # offset where the last line step landed
        self.exception: str | None = None  # type name of an exception event since then
        self.returned: str | None = None
        self.raised: str | None = None
        self.finished = False
        self.last = k  # the call's last step so far

    def step(self, k: int, row: Any) -> None:
        event, _, _, line, _, changed, deleted, value, _ = row
        self.last = k
        for name in deleted or ():
            self.locals.pop(name, None)
        if changed:
            self.locals.update((name, v.repr) for name, v in changed.items())
        if self.arguments is None:
            self.arguments = dict(self.locals)
        if event == "line":
            self.at, entered = self.cfg.advance(self.at, line, self.exception)
            self.exception = None
            if entered or self.open is None:
                self._close(k)
                self.open = {
                    "index": len(self.blocks),
                    "block": self.cfg.block_at(self.at).index,
                    "lines": [line],
                    "source": [self.trace.source_line(self.file, line)],
                }
                self.blocks.append(self.open)
            elif self.open["lines"][-1] != line:
                self.open["lines"].append(line)
                self.open["source"].append(self.trace.source_line(self.file, line))
        elif event == "exception":
            self.exception = value.type if value is not None else "BaseException"
            self.raised = None if value is None else value.repr
        elif event == "return":
            self._close(k)
            self.finished = True
            self.returned = None if value is None else value.repr
            if value is not None:
                self.raised = None  # handled: it did not end the call
        elif event == "call":
            self.finished = False  # a generator resumed

    def _close(self, k: int) -> None:
        if self.open is not None:
            self.open["state"] = dict(self.locals)
            self.open["step"] = k
            self.open = None

    def result(self, max_blocks: int) -> dict[str, Any]:
        self._close(self.last)  # the call's end is not in the trace
        frame = self.trace.frames[self.fid]
        shown: list[dict[str, Any]] = self.blocks
        if len(shown) > max_blocks:
            head = max_blocks // 2
            tail = max_blocks - head
            shown = [*shown[:head], {"elided": len(shown) - max_blocks}, *shown[-tail:]]
        return {
            "function": frame.function,
            "file": frame.file,
            "frame": self.fid,
            "step": self.first,
            "depth": self.trace.rows[self.first][2],
            "arguments": self.arguments or {},
            "blocks": shown,
            "total_blocks": len(self.blocks),
            "return": self.returned if self.finished and self.raised is None else None,
            "exception": self.raised if self.finished else None,
            "finished": self.finished,
        }
