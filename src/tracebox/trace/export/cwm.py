"""Meta's Code World Model (CWM) trace format: ``to_cwm`` (frames) and ``to_cwm_text``.

The published format (github.com/facebookresearch/cwm: ``PROMPTING_GUIDE.md``, section
"Trace Prediction", and its reference reader ``demos/cwmdbg.py``) is a sequence of frames,
each an observation (the locals) and an action (the source line about to run)::

    <|trace_context_start|>$CONTEXT<|frame_sep|>
    <|call_sep|>$LOCALS<|action_sep|>$SOURCE<|frame_sep|>
    <|line_sep|>$LOCALS<|action_sep|>$SOURCE<|frame_sep|>
    <|return_sep|><|action_sep|>$SOURCE<|arg_sep|>$VALUE<|frame_sep|>
    <|exception_sep|><|action_sep|>$SOURCE<|arg_sep|>$VALUE<|frame_sep|>
    ...<|end_of_text|>

``$LOCALS`` is ``json.dumps`` of ``{name: value string}``, ``$VALUE`` ``json.dumps`` of a
value string; a local whose value is unchanged since the previous frame reads ``".."``. The
entry line of ``$CONTEXT`` ends with ``  # << START_OF_TRACE``; ``<|end_of_text|>`` follows
the frame that leaves the entry scope.

``to_cwm`` gives one dict per frame: ``event``, ``locals`` (None for return and exception
frames), ``action``, ``value`` (None for call and line frames): exactly what the text holds;
plus ``step``, ``frame``, ``function`` and ``line`` to find the step it came from.

Where the published material is silent or ambiguous, we chose:

- Value strings are tracebox's bounded reprs (``Value.repr``): ``"'abc'"``, ``"[1, 2]"``,
  the repr CWM's own outputs use. A value cut by the recorder's bounds keeps its
  ``<cut: ...>`` marker inside the string, so a reader can tell it is incomplete.
- "Previous frame" for ``".."``: cwmdbg.py resolves a ``".."`` by walking back through the
  frames before it and gives up at a call or return frame. So ``".."`` is used only when
  the previous call or line frame emitted belongs to the same activation and no call or
  return frame came in between: every call frame, and the first frame of a caller after a
  nested call returns, shows all values in full. Exception frames carry no locals and do
  not break the chain. Values are compared by their repr text.
- Locals are all the frame's locals as the step sees them, in order of first binding (a call
  frame: the arguments; a resumed generator's call frame: everything it holds); deleted
  names are left out. Locals set by a frame's last line are not shown: return frames have
  none in the format.
- Return frames carry the returned or yielded value's repr. A frame unwound by an exception
  returns ``"None"``, as settrace reports it, right after its own exception frame. Exception
  frames carry the exception's repr (``"ZeroDivisionError('division by zero')"``), one per
  frame the exception passes through, as settrace reports it.
- Generators: each resumption is a call frame whose action is the line it resumes at, each
  ``yield`` a return frame with the yielded value (settrace's events).
- Actions are physical source lines with their indentation and a trailing newline (cwmdbg.py
  strips one). A call frame's action is the line settrace gives a call: the ``def`` line (the
  first decorator's, when decorated); a module's call frame, for which settrace gives line
  0, shows line 1. A line whose source was not recorded is ``""``.
- Library calls the recorder collapsed (a call and a return, no source) are left out, so
  their caller's frames read as one stretch; a user function a library calls back
  (``sorted(key=f)``) appears with its own call and return frames.
- The entry point is the first recorded frame (usually the cell's ``<module>``); ``$CONTEXT``
  is the source of its file only. ``<|begin_of_text|>`` is left to the tokenizer.
- A truncated trace (``Trace.truncation``) ends after its last recorded frame with no
  ``<|end_of_text|>``: the program went on past it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tracebox.trace.export import source_lines
from tracebox.trace.model import Trace

__all__ = [
    "ACTION_SEP",
    "ARG_SEP",
    "CONTEXT_START",
    "END_OF_TEXT",
    "EVENT_SEP",
    "FRAME_SEP",
    "START_MARKER",
    "UNCHANGED",
    "render_frame",
    "to_cwm",
    "to_cwm_text",
]

FRAME_SEP = "<|frame_sep|>"
ACTION_SEP = "<|action_sep|>"
ARG_SEP = "<|arg_sep|>"
CONTEXT_START = "<|trace_context_start|>"
END_OF_TEXT = "<|end_of_text|>"
EVENT_SEP = {
    "call": "<|call_sep|>",
    "line": "<|line_sep|>",
    "return": "<|return_sep|>",
    "exception": "<|exception_sep|>",
}
START_MARKER = "  # << START_OF_TRACE"
UNCHANGED = ".."

_LINE_END = re.compile(r"(\r\n|\r|\n)")


def to_cwm(trace: Trace) -> list[dict[str, Any]]:
    """The trace as CWM frames (see the module docstring for the format and our choices)."""
    lines = {file: source_lines(text) for file, text in trace.sources.items()}
    held: dict[int, dict[str, str]] = {}  # frame id -> its locals' reprs, deltas replayed
    # The previous call/line frame a ".." may refer to: (frame id, locals it showed).
    prev: tuple[int, dict[str, str]] | None = None
    out: list[dict[str, Any]] = []
    for k, (event, fid, _depth, line, _hits, changed, deleted, value, _arc) in enumerate(
        trace.rows
    ):
        info = trace.frames[fid]
        if info.library:
            continue
        now = held.setdefault(fid, {})
        for name in deleted or ():
            now.pop(name, None)
        for name, v in (changed or {}).items():
            now[name] = v.repr
        shown: dict[str, str] | None = None
        text: str | None = None
        if event in ("call", "line"):
            if event == "line" and prev is not None and prev[0] == fid:
                before = prev[1]
                shown = {n: UNCHANGED if before.get(n) == r else r for n, r in now.items()}
            else:
                shown = dict(now)
            prev = (fid, dict(now))
        else:
            text = "None" if value is None else value.repr
            if event == "return":
                prev = None
        at = 1 if event == "call" and line == 0 else line  # a module's call: its first line
        out.append(
            {
                "event": event,
                "locals": shown,
                "action": _action(lines.get(info.file), at),
                "value": text,
                "step": k,
                "frame": fid,
                "function": info.function,
                "line": line,
            }
        )
    return out


def render_frame(frame: dict[str, Any]) -> str:
    """One frame as CWM text, without the ``<|frame_sep|>`` that ends it."""
    sep = EVENT_SEP[frame["event"]]
    if frame["locals"] is not None:
        return f"{sep}{json.dumps(frame['locals'])}{ACTION_SEP}{frame['action']}"
    return f"{sep}{ACTION_SEP}{frame['action']}{ARG_SEP}{json.dumps(frame['value'])}"


def to_cwm_text(trace: Trace, *, context: bool = True) -> str:
    """The trace as CWM's token-delimited text ("" for a trace without steps).

    ``context``: start with ``<|trace_context_start|>``, the entry file's source with the
    ``START_OF_TRACE`` marker, and the ``<|frame_sep|>`` sentinel (a trace-prediction prompt
    followed by its answer); without it, only the frames. ``<|end_of_text|>`` ends a trace
    that was not truncated.
    """
    frames = to_cwm(trace)
    if not frames:
        return ""
    parts: list[str] = []
    if context:
        first = frames[0]
        source = trace.sources.get(trace.frames[first["frame"]].file, "")
        parts += [CONTEXT_START, _mark_entry(source, first["line"] or 1), FRAME_SEP]
    for frame in frames:
        parts += [render_frame(frame), FRAME_SEP]
    if trace.truncation is None:
        parts.append(END_OF_TEXT)
    return "".join(parts)


def _action(lines: list[str] | None, line: int) -> str:
    if lines is None or not 0 < line <= len(lines):
        return ""
    return lines[line - 1] + "\n"


def _mark_entry(source: str, line: int) -> str:
    """``source`` with the entry marker at the end of ``line`` (line ends kept as they are)."""
    parts = _LINE_END.split(source)  # text, line end, text, line end, ..., text
    at = 2 * (line - 1)
    if 0 <= at < len(parts):
        parts[at] += START_MARKER
    return "".join(parts)
