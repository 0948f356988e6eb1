"""Coverage collection: lines run and branch arcs taken, per file of user code."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from tracebox.trace.model import Coverage, Row

__all__ = ["CoverageSink", "from_rows"]


class CoverageSink:
    """Sets of lines and arcs per file, filled by a backend in coverage mode."""

    def __init__(self) -> None:
        self._lines: dict[str, set[int]] = {}
        self._arcs: dict[str, set[tuple[int, int]]] = {}

    def sets(self, file: str) -> tuple[set[int], set[tuple[int, int]]]:
        lines = self._lines.get(file)
        if lines is None:
            lines = self._lines[file] = set()
            self._arcs[file] = set()
        return lines, self._arcs[file]

    def result(self) -> Coverage:
        return Coverage(
            lines={f: tuple(sorted(v)) for f, v in sorted(self._lines.items())},
            arcs={f: tuple(sorted(self._arcs[f])) for f in sorted(self._lines)},
        )


def from_rows(rows: Iterable[Row], files: list[str], library: Collection[int] = ()) -> Coverage:
    """The coverage a full trace implies: its line steps and their arcs (``files``: each
    frame's file; frames in ``library`` are not the user's code)."""
    sink = CoverageSink()
    by_frame: dict[int, tuple[set[int], set[tuple[int, int]]]] = {}
    for ev, fid, _, line, _, _, _, _, arc in rows:
        if ev == "line" and fid not in library:
            sets = by_frame.get(fid)
            if sets is None:
                sets = by_frame[fid] = sink.sets(files[fid])
            sets[0].add(line)
            if arc is not None:
                sets[1].add(arc)
    return sink.result()
