"""Record a trace of user code: ``Recorder`` (a context manager) and ``record``.

::

    with Recorder(TraceConfig(mode="full")) as rec:
        exec(compile(source, "<cell-1>", "exec"), namespace)
    trace = rec.trace()

The backend is ``sys.monitoring`` on 3.12+ and ``sys.settrace`` on 3.11; both give the same
steps. Only the thread that enters the recorder is recorded, and one recorder runs at a
time. Tracing is fully off again when the ``with`` block ends (or the budget stops it).

Determinism: the garbage collector's existing objects are frozen while recording, so
finalizers of earlier garbage do not run inside the trace and collections come at the same
points on every run. Finalizers that do run during user code (weakref callbacks, ``__del__``
of objects the program dropped) are called by CPython from the user's frame: library ones
show as library calls, user ones as calls, as settrace shows them.
This module runs in the worker: it must not import pydantic (``TraceConfig`` is accepted
but duck-typed).
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import linecache
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tracebox.trace import coverage as _coverage
from tracebox.trace._codeinfo import CodeTable
from tracebox.trace._collector import Collector, Counter
from tracebox.trace._units import count_units
from tracebox.trace.model import Counts, Row, Trace, Value
from tracebox.trace.render import Renderer, type_name
from tracebox.trace.settings import Settings

if TYPE_CHECKING:
    from tracebox.trace.config import TraceConfig

__all__ = ["Recorder", "RecorderState", "record"]

Backend = Literal["auto", "monitoring", "settrace"]
_ACTIVE: list[Recorder] = []  # at most one: settrace and the tool id are process-wide


class _Backend(Protocol):
    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


class RecorderState(enum.Enum):
    NEW = "new"
    RECORDING = "recording"
    DONE = "done"


def _settings(config: TraceConfig | Settings | Mapping[str, Any] | None) -> Settings:
    if config is None:
        return Settings()
    if isinstance(config, Settings):
        return config
    if isinstance(config, Mapping):
        return Settings.from_wire(config)
    return Settings.from_wire(config.to_wire())  # a TraceConfig


class Recorder:
    """Records what user code does while the ``with`` block runs; see the module docstring."""

    def __init__(
        self,
        config: TraceConfig | Settings | Mapping[str, Any] | None = None,
        *,
        backend: Backend = "auto",
    ) -> None:
        self.settings = _settings(config)
        if backend == "auto":
            backend = "monitoring" if sys.version_info >= (3, 12) else "settrace"
        if backend == "monitoring" and sys.version_info < (3, 12):
            raise RuntimeError("the sys.monitoring backend needs Python 3.12 or later")
        self.backend: Literal["monitoring", "settrace"] = backend
        self.state = RecorderState.NEW
        self.error: Value | None = None
        mode = self.settings.mode
        self._codes = CodeTable(self.settings)
        self._renderer = Renderer(
            self.settings.max_repr_chars, self.settings.max_repr_depth, self.settings.max_items
        )
        self._sink: Counter = (
            Collector(self.settings, self._renderer) if mode == "full" else Counter(self.settings)
        )
        self._cov = _coverage.CoverageSink() if mode == "coverage" else None
        self._backend: _Backend | None = None
        self._trace: Trace | None = None
        self._froze = False
        self._thresholds = gc.get_threshold()
        self._raised = False

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self.stop()
        if exc is not None:  # the block's exception goes on; the trace keeps it as data
            s = self.settings
            text, cut = Renderer(s.max_repr_chars, 1, s.max_items).text(exc)
            self.error = Value(text, type_name(type(exc)), None, cut)

    def start(self) -> None:
        if self.state is not RecorderState.NEW:
            raise RuntimeError(f"a Recorder records once (state: {self.state.value})")
        if _ACTIVE:
            raise RuntimeError("another Recorder is recording; recordings cannot nest")
        if self.backend == "monitoring":
            from tracebox.trace._monitoring import MonitoringBackend

            self._backend = MonitoringBackend(self.settings, self._sink, self._codes, self._cov)
        else:
            from tracebox.trace._settrace import SettraceBackend

            self._backend = SettraceBackend(self.settings, self._sink, self._codes, self._cov)
        _ACTIVE.append(self)
        self.state = RecorderState.RECORDING
        # Earlier garbage must not run finalizers (weakref callbacks, __del__) inside the
        # trace, and collections must come at the same points on every run: freeze what
        # exists (gc.freeze also restarts the allocation count), unfreeze afterwards.
        self._froze = gc.isenabled() and gc.get_freeze_count() == 0
        if self._froze:
            gc.freeze()
        # A full trace grows by container rows the collector never untracks (``Value`` is a
        # named tuple, and only exact tuples are untracked), so each full collection would
        # walk the whole trace: about 1.2 us of every step's cost. Full collections are made
        # a hundred times rarer while recording (deterministically: young ones are unchanged).
        self._thresholds = gc.get_threshold()
        self._raised = self.settings.mode == "full"
        if self._raised:
            t0, t1, t2 = self._thresholds
            gc.set_threshold(t0, t1, t2 * 100)
        try:
            self._backend.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Turn tracing off (idempotent); ``trace()`` then builds the trace."""
        if self.state is not RecorderState.RECORDING:
            return
        assert self._backend is not None
        self._backend.stop()
        if self._froze:
            gc.unfreeze()
        t0, t1, t2 = self._thresholds
        if self._raised and gc.get_threshold() == (t0, t1, t2 * 100):  # unless code changed it
            gc.set_threshold(t0, t1, t2)
        _ACTIVE.remove(self)
        self.state = RecorderState.DONE
        if isinstance(self._sink, Collector):
            self._sink.release_all()  # let the program's objects go now; rows are plain data
        self._sink.finish()

    def trace(self) -> Trace:
        """The recording (built on first call, once recording has stopped)."""
        if self.state is not RecorderState.DONE:
            raise RuntimeError("the trace is ready once recording has stopped")
        if self._trace is None:
            # Building makes an object or more per step and no cycles: a collection in the
            # middle would walk all of them (and everything else) for nothing.
            enabled = gc.isenabled()
            gc.disable()
            try:
                self._trace = self._build()
            finally:
                if enabled:
                    gc.enable()
        if self.error is not None and self._trace.error is None:
            self._trace = dataclasses.replace(self._trace, error=self.error)
        return self._trace

    def _build(self) -> Trace:
        sink, mode = self._sink, self.settings.mode
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        if isinstance(sink, Collector):
            rows = tuple(sink.rows)
            files = [f.file for f in sink.frames]
            library = {fid for fid, f in enumerate(sink.frames) if f.library}
            sources = _sources(f.file for f in sink.frames if not f.library)
            return Trace(
                mode, self.backend, python, tuple(sink.frames), rows,
                self._full_counts(sink, rows, sources), sink.truncation,
                _coverage.from_rows(rows, files, library), sources=sources,
            )  # fmt: skip
        if self._cov is not None:
            return Trace(mode, self.backend, python, coverage=self._cov.result())
        return Trace(mode, self.backend, python, counts=sink.counts(), truncation=sink.truncation)

    def _full_counts(
        self, sink: Collector, rows: tuple[Row, ...], sources: dict[str, str]
    ) -> Counts:
        """Full mode adds statements and blocks, from the steps (see ``Counts``); past a
        cut the collector counted them on. Exact block counts (count_instructions) stand."""
        counts = sink.counts()
        if sink.units is not None:
            statements, blocks = sink.units.totals()
        elif sink.truncation is not None:
            return counts  # the collector could not count on past the cut: unknown
        else:
            statements, blocks = count_units(rows, sink.frames, sink.codes, sources)
        if counts.blocks is not None:
            blocks = counts.blocks
        return dataclasses.replace(counts, statements=statements, blocks=blocks)


def _sources(files: Iterable[str]) -> dict[str, str]:
    """Source text of each file, from linecache (cells register theirs there)."""
    out: dict[str, str] = {}
    for file in sorted(set(files)):
        lines = linecache.getlines(file)
        if lines:
            out[file] = "".join(lines)
    return out


def record(
    target: str | types.CodeType | Callable[[], object],
    config: TraceConfig | Settings | Mapping[str, Any] | None = None,
    *,
    namespace: dict[str, Any] | None = None,
    filename: str = "<cell-0>",
    backend: Backend = "auto",
) -> Trace:
    """Run ``target`` (source, a code object, or a callable) under a recorder.

    An exception from the program (``TraceBudgetExceeded`` included) ends the run and is
    kept as ``Trace.error``; KeyboardInterrupt propagates. ``Trace.sources`` (and the counts
    that need the source) come from ``linecache``: source text is registered there under
    ``filename``; for a code object or a callable, register its source there first.
    """
    if isinstance(target, str):
        linecache.cache[filename] = (len(target), None, target.splitlines(True), filename)
        target = compile(target, filename, "exec")
    ns = namespace if namespace is not None else {"__name__": "__main__"}
    rec = Recorder(config, backend=backend)
    try:
        with rec:
            if isinstance(target, types.CodeType):
                exec(target, ns)
            else:
                target()
    except KeyboardInterrupt:
        raise
    except BaseException:  # the program's failure is data: Recorder.__exit__ kept it
        pass
    return rec.trace()
