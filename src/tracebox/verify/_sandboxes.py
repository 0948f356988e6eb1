"""Where a verifier's sandboxes come from.

- Candidate sandboxes: a clean one per candidate. ``fresh="spawn"`` takes a new sandbox from
  the runtime's warm pool and closes it afterwards. ``fresh="restore"`` keeps, per thread, a
  pristine sandbox and a checkpoint of it taken before any candidate ran, and restores that
  checkpoint for each candidate (the interpreter, its files and its processes as they were);
  if the runtime has no checkpoints, or a candidate destroyed the checkpoint, it falls back
  to spawning. With ``restore``, the pristine sandbox also runs trials (``pristine``):
  ``Session.trial`` runs a candidate in a throwaway fork and leaves the sandbox as it was, so
  no restore is needed after it.
- Test sandboxes: one per thread, reused across problems (only dataset code runs there, in a
  fresh namespace each run); remade if it dies.

State is kept per thread (by thread ident), so threads never share a sandbox; the sandboxes
of threads that have ended are closed by ``reap``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any

from tracebox.errors import TraceboxError
from tracebox.session.runtime import Runtime
from tracebox.session.session import Session
from tracebox.types import Limits, SessionState
from tracebox.verify.results import VerifyConfig


@dataclasses.dataclass
class _Base:
    """A pristine candidate sandbox and its checkpoint (``fresh="restore"``)."""

    session: Session
    checkpoint: Any
    dirty: bool = False


@dataclasses.dataclass
class _Thread:
    test: Session | None = None
    bases: dict[tuple[Limits, bool], _Base] = dataclasses.field(default_factory=dict)

    def sessions(self) -> list[Session]:
        return [b.session for b in self.bases.values()] + ([self.test] if self.test else [])


class Sandboxes:
    def __init__(self, runtime: Runtime, config: VerifyConfig, prelude: str = "") -> None:
        self.runtime = runtime
        self.config = config
        self.prelude = prelude
        """Code a pristine candidate sandbox runs before its checkpoint is taken."""
        self._threads: dict[int, _Thread] = {}
        self._lock = threading.Lock()
        self.spawned = 0
        """Candidate sandboxes started (fresh ones, and the pristine ones kept to restore)."""
        self.restored = 0
        """Candidate sandboxes made clean by restoring a checkpoint."""
        self.trials = 0
        """Pristine sandboxes handed out to run a trial in."""

    def _mine(self) -> _Thread:
        key = threading.get_ident()
        with self._lock:
            state = self._threads.get(key)
            if state is None:
                state = self._threads[key] = _Thread()
        return state

    # -- limits ------------------------------------------------------------------------------

    def candidate_limits(self, oversubscription: float) -> Limits:
        """Limits of a candidate's sandbox; the wall guard grows with oversubscription."""
        cfg = self.config
        wall = cfg.wall_seconds or (4 * cfg.cpu_seconds + 2) * max(1.0, oversubscription)
        return Limits(
            cpu_seconds=cfg.cpu_seconds,
            wall_seconds=wall,
            grace_seconds=0.5,
            memory_mb=cfg.memory_mb,
            max_transfer_bytes=cfg.max_transfer_bytes,
        )

    def sample_wall_seconds(self, oversubscription: float) -> float:
        """The wall-clock guard behind ``sample_cpu_seconds``."""
        return (4 * self.config.sample_cpu_seconds + 2) * max(1.0, oversubscription)

    def test_limits(self, oversubscription: float) -> Limits:
        cfg = self.config
        wall = (
            self.sample_wall_seconds(oversubscription)
            + self.candidate_limits(oversubscription).wall_seconds
            + (4 * cfg.test_cpu_seconds + 2) * max(1.0, oversubscription)
        )
        return Limits(
            cpu_seconds=cfg.test_cpu_seconds,
            wall_seconds=wall,
            grace_seconds=0.5,
            memory_mb=cfg.memory_mb,
            max_transfer_bytes=cfg.max_transfer_bytes,
            max_value_chars=4_000_000,
        )

    # -- candidate sandboxes -----------------------------------------------------------------

    def fresh(self, limits: Limits, *, stateful: bool) -> Session:
        if self.config.fresh == "restore":
            s = self._restored(limits, stateful)
            if s is not None:
                return s
        self._count("spawned")
        return self.runtime.session(limits=limits, stateful=stateful)

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def _restored(self, limits: Limits, stateful: bool) -> Session | None:
        base = self._base(limits, stateful)
        if base is None:
            return None
        base.dirty = True
        return base.session

    def pristine(self, limits: Limits) -> Session | None:
        """This thread's pristine candidate sandbox, to run trials in (``Session.trial``
        leaves it as it was); None unless ``fresh="restore"`` and the runtime has
        checkpoints."""
        if self.config.fresh != "restore":
            return None
        base = self._base(limits, stateful=True)
        if base is None:
            return None
        self._count("trials")
        return base.session

    def _base(self, limits: Limits, stateful: bool) -> _Base | None:
        """This thread's pristine sandbox for ``limits`` (made, or restored if a candidate
        used it or it died since); None if that cannot be."""
        state = self._mine()
        key = (limits, stateful)
        base = state.bases.get(key)
        try:
            if base is None:
                self._count("spawned")
                s = self.runtime.session(limits=limits, stateful=stateful)
                take = getattr(s, "checkpoint", None)
                if take is None:  # a runtime without checkpoints
                    s.close()
                    return None
                base = state.bases[key] = _Base(s, None)
                if self.prelude and s.run(self.prelude).status != "ok":
                    raise TraceboxError("the pristine sandbox's prelude failed")
                base.checkpoint = take()
            elif base.dirty or base.session.state is SessionState.DEAD:
                base.session.restore(base.checkpoint)
                self._count("restored")
        except TraceboxError:  # the checkpoint is gone (the candidate can kill it): start over
            if base is not None:
                state.bases.pop(key, None)
                base.session.close()
            return None
        base.dirty = False
        return base

    def release(self, session: Session) -> None:
        """A candidate is done with ``session``: closed, or kept to be restored."""
        state = self._mine()
        if any(b.session is session for b in state.bases.values()):
            return
        session.close()

    # -- test sandboxes ----------------------------------------------------------------------

    def test(self, oversubscription: float) -> Session:
        """This thread's test sandbox (made, or remade after it died, on demand)."""
        want = self.test_limits(oversubscription)
        state = self._mine()
        s = state.test
        if s is not None and (s.state is not SessionState.READY or s.limits != want):
            self.drop_test()
            s = None
        if s is None:
            s = state.test = self.runtime.session(limits=want, stateful=False)
        return s

    def drop_test(self) -> None:
        state = self._mine()
        s, state.test = state.test, None
        if s is not None:
            s.close()

    # -- clean-up ----------------------------------------------------------------------------

    def reap(self) -> None:
        """Close the sandboxes of threads that have ended (a finished batch's)."""
        alive = {t.ident for t in threading.enumerate()}
        with self._lock:
            gone = [self._threads.pop(k) for k in list(self._threads) if k not in alive]
        for state in gone:
            for s in state.sessions():
                with contextlib.suppress(TraceboxError):
                    s.close()

    def close(self) -> None:
        with self._lock:
            states = list(self._threads.values())
            self._threads.clear()
        for state in states:
            for s in state.sessions():
                with contextlib.suppress(TraceboxError):
                    s.close()
