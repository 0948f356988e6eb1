"""A warm pool: confined workers started ahead of demand, so a session is ready at once."""

from __future__ import annotations

import collections
import itertools
import logging
import threading

from tracebox.errors import TraceboxError
from tracebox.sandbox.confine import SpawnLimits
from tracebox.session.process import WorkerProcess
from tracebox.session.template import Template

log = logging.getLogger("tracebox")
_names = itertools.count()


class WarmPool:
    """Keeps ``size`` idle workers with the given spawn limits; refills in the background."""

    def __init__(self, template: Template, limits: SpawnLimits, size: int) -> None:
        self._template = template
        self._limits = limits
        self._size = size
        self._ready: collections.deque[WorkerProcess] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._filler: threading.Thread | None = None
        if size > 0:
            self._filler = threading.Thread(target=self._fill, name="tracebox-pool", daemon=True)
            self._filler.start()

    def spawn(self) -> WorkerProcess:
        return self._template.spawn(self._limits, f"w{next(_names)}")

    def acquire(self) -> WorkerProcess:
        """An idle worker from the pool, or a freshly started one if the pool is empty."""
        with self._cond:
            while self._ready:
                worker = self._ready.popleft()
                self._cond.notify_all()
                if not worker.wait_exited(0):
                    return worker
                worker.close()
        return self.spawn()

    def wait_full(self, timeout: float) -> bool:
        """Block until the pool holds ``size`` workers (for benchmarks and tests)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._closed or len(self._ready) >= self._size, timeout
            )

    def _fill(self) -> None:
        failures = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or len(self._ready) < self._size)
                if self._closed:
                    return
            try:
                worker = self.spawn()
            except TraceboxError:
                failures += 1
                log.exception("warm pool could not start a worker (attempt %d)", failures)
                with self._cond:  # back off; acquire() still spawns on demand and reports
                    self._cond.wait_for(lambda: self._closed, timeout=min(5.0, 0.1 * failures))
                continue
            failures = 0
            with self._cond:
                if self._closed:
                    worker.close()
                    return
                self._ready.append(worker)
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        for worker in idle:
            worker.close()
        if self._filler is not None:
            self._filler.join(timeout=10)
