"""Capture of a run's stdout or stderr on the host: decoded, capped, truncation marked."""

from __future__ import annotations

import codecs
import logging
from collections.abc import Callable

log = logging.getLogger("tracebox")

OutputCallback = Callable[[str, str], None]
"""``on_output(stream, text)``: called with "stdout" or "stderr" and newly decoded text."""


class Capture:
    def __init__(self, stream: str, limit: int, on_output: OutputCallback | None) -> None:
        self.stream = stream
        self._limit = limit
        self._kept = 0
        self.dropped = 0
        self._parts: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._on_output = on_output

    def feed(self, data: bytes, final: bool = False) -> None:
        room = self._limit - self._kept
        keep, extra = data[:room], data[room:]
        self._kept += len(keep)
        self.dropped += len(extra)
        if keep or final:
            text = self._decoder.decode(keep, final)
            if text:
                self._parts.append(text)
                if self._on_output is not None:
                    try:
                        self._on_output(self.stream, text)
                    except Exception:  # a failing hook is disabled, never fatal to the run
                        log.exception("on_output callback failed; streaming disabled for this run")
                        self._on_output = None

    def text(self) -> str:
        self.feed(b"", final=True)
        out = "".join(self._parts)
        if self.dropped:
            out += (
                f"\n[tracebox: {self.stream} truncated: {self.dropped} more bytes not shown"
                f" (limit {self._limit} bytes)]\n"
            )
        return out
