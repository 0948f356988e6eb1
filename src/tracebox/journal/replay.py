"""Replay: re-execute a journaled session in a fresh sandbox and compare every step.

``replay(journal, session_id)`` creates one new session with the recorded limits and
replays the session's events in order: ``put`` from the stored pickle (unpickled inside the
sandbox, never on the host), ``run`` with the same code and trace settings, ``call`` with
the stored arguments, ``get``, ``checkpoint``/``restore``/``release``. A session forked from
another (``created`` with a ``parent``) is rebuilt by replaying its ancestors' events up to
the fork first; those steps are reported too, under their own session ids.

Each run and call is compared on ``status``, ``stdout``, ``stderr``, ``value``, the error's
type, and the trace's digest when the run was traced (not on times or memory). A step that
differs gets ``suspects``: likely sources of nondeterminism found in the code (its own, then
the earlier code that bound the names it reads, which may have computed what it shows) and
in how the outputs differ (``tracebox.journal.nondeterminism``). A ``get`` is compared by
the digest of the value's pickle.

What replay cannot reproduce: host tools called during a run (their answers are not in the
journal: the replay's tools raise, and the step is flagged ``tools``), and anything outside
the sandbox the code read.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tracebox.errors import (
    NameNotFound,
    SessionDead,
    TraceboxError,
    TransferError,
    UnpicklableValue,
    ValueTooLarge,
)
from tracebox.journal.errors import JournalError
from tracebox.journal.model import Event
from tracebox.journal.nondeterminism import (
    Source,
    Suspect,
    find_suspects,
    merge,
    output_suspects,
    used_names,
)
from tracebox.journal.store import Journal
from tracebox.session import transfer
from tracebox.session.checkpoint import Checkpoint
from tracebox.session.journaling import digest
from tracebox.session.runtime import Runtime
from tracebox.session.session import Session
from tracebox.trace.config import TraceConfig
from tracebox.types import Limits, RunResult

__all__ = ["FieldDiff", "Outcome", "ReplayReport", "ReplayStep", "replay"]

Outcome = Literal["match", "mismatch", "skipped", "failed"]
"""``match``: reproduced (for steps without output, such as a checkpoint: done again).
``mismatch``: done again, with a different result. ``skipped``: not comparable (say why).
``failed``: replay could not do the step (the sandbox failed, a checkpoint was missing)."""

_COMPARED = ("status", "stdout", "stderr", "value", "error")
_STRONG: frozenset[Source] = frozenset({"time", "random", "uuid", "urandom", "identity"})
_SHOWN = 300  # characters of a differing field kept in the report


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldDiff(_Frozen):
    """One field of a step's result that differs (texts cut to a few hundred characters)."""

    field: str
    recorded: str | None
    replayed: str | None


class ReplayStep(_Frozen):
    """One journal event, done again."""

    seq: int
    session: str
    """The session the event belongs to (an ancestor's, for the steps that rebuild a fork)."""
    kind: str
    what: str
    """A short description: the first line of the code, the name put or got ..."""
    outcome: Outcome
    diffs: list[FieldDiff] = []
    suspects: list[Suspect] = []
    """Likely sources of nondeterminism: why it differs, or (for a match) what could have
    made it differ."""
    note: str | None = None


class ReplayReport(_Frozen):
    journal: str
    session: str
    steps: list[ReplayStep]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for s in self.steps if s.outcome == outcome)

    @property
    def ok(self) -> bool:
        """Every step reproduced or was skipped for a stated reason."""
        return not any(s.outcome in ("mismatch", "failed") for s in self.steps)


def replay(
    journal: str | os.PathLike[str] | Journal,
    session_id: str,
    *,
    runtime: Runtime | None = None,
    trust_pickles: bool = False,
) -> ReplayReport:
    """Replay ``session_id`` from ``journal`` in a new session and compare step by step.

    ``runtime`` is used if given (else one is started and closed). A ``call``'s arguments
    are unpickled on the host, with the safe allow-list of ``session.transfer`` unless
    ``trust_pickles`` (only for a journal you trust: a pickle can run anything).
    ``JournalError`` if the session is not in the journal.
    """
    j = journal if isinstance(journal, Journal) else Journal(journal, readonly=True)
    events = _lineage(j, session_id)
    created = events[0].data
    limits = _limits(created.get("limits") or {})
    with ExitStack() as stack:
        if runtime is None:
            runtime = stack.enter_context(Runtime(limits=limits, pool_size=0))
        session = runtime.session(limits=limits, stateful=bool(created.get("stateful", True)))
        stack.callback(session.close)
        player = _Player(session, trust_pickles)
        steps = [player.step(e) for e in events]
    return ReplayReport(journal=j.path, session=session_id, steps=steps)


# -- which events ---------------------------------------------------------------------------


def _lineage(j: Journal, session_id: str) -> list[Event]:
    """The events that rebuild ``session_id``: its ancestors' up to each fork, then its own."""
    own = list(j.events(session_id))
    if not own:
        raise JournalError(f"no session {session_id!r} in {j.path}")
    if own[0].kind != "created":
        raise JournalError(f"session {session_id!r} does not start with a 'created' event")
    parent = own[0].data.get("parent")
    if not isinstance(parent, str):
        return own
    ancestors = _lineage(j, parent)
    cut = _fork_point(ancestors, parent, session_id, own[0].data.get("checkpoint"))
    return [*ancestors[:cut], *own[1:]]


def _fork_point(events: list[Event], parent: str, child: str, checkpoint: object) -> int:
    """Index of the parent's event the child starts from: it has the state before it."""
    for i, e in enumerate(events):
        if e.session != parent:
            continue
        if checkpoint is not None and e.kind == "checkpoint":
            if e.data.get("checkpoint") == checkpoint:
                return i + 1
        elif e.kind == "fork" and child in (e.data.get("children") or ()):
            return i
    raise JournalError(f"session {child!r} names {parent!r} as parent, which never forked it")


def _limits(data: Mapping[str, Any]) -> Limits:
    """The recorded limits (fields this version does not know are dropped)."""
    return Limits.model_validate({k: v for k, v in data.items() if k in Limits.model_fields})


# -- doing them again -----------------------------------------------------------------------


class _Raw:
    """A pickle that unpickles, inside the sandbox, to what the stored pickle holds."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __reduce__(self) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
        return (pickle.loads, (self.blob,))


class _Player:
    def __init__(self, session: Session, trust_pickles: bool) -> None:
        self.s = session
        self.trust = trust_pickles
        self.checkpoints: dict[str, Checkpoint] = {}
        self.history: list[tuple[int, str]] = []  # (seq, code) of every run so far

    def step(self, e: Event) -> ReplayStep:
        handlers: dict[str, Callable[[Event], ReplayStep]] = {
            "created": self._created,
            "put": self._put,
            "run": self._run,
            "call": self._call,
            "get": self._get,
            "checkpoint": self._checkpoint,
            "restore": self._restore,
            "release": self._release,
            "fork": self._fork,
            "trial": self._trial,
            "close": self._close,
        }
        handler = handlers.get(e.kind)
        if handler is None:
            return _step(e, "skipped", note=f"replay does not know {e.kind!r} events")
        try:
            return handler(e)
        except SessionDead as exc:
            return _step(e, "failed", note=f"the replayed session is dead: {exc}")
        except TraceboxError as exc:
            return _step(e, "failed", note=f"{type(exc).__name__}: {exc}")
        except (TypeError, ValueError) as exc:  # an event whose data is not what it should be
            return _step(e, "failed", note=f"malformed event: {type(exc).__name__}: {exc}")

    # each handler returns the step's report

    def _created(self, e: Event) -> ReplayStep:
        return _step(e, "match", what=f"limits, stateful={e.data.get('stateful', True)}")

    def _close(self, e: Event) -> ReplayStep:
        return _step(e, "match")

    def _fork(self, e: Event) -> ReplayStep:
        kids = ", ".join(e.data.get("children") or ())
        return _step(e, "skipped", what=kids, note="replay a child by its own id")

    def _trial(self, e: Event) -> ReplayStep:
        return _step(e, "skipped", note="a trial leaves the session as it was")

    def _checkpoint(self, e: Event) -> ReplayStep:
        self.checkpoints[str(e.data.get("checkpoint"))] = self.s.checkpoint()
        return _step(e, "match", what=str(e.data.get("checkpoint")))

    def _restore(self, e: Event) -> ReplayStep:
        cid = str(e.data.get("checkpoint"))
        cp = self.checkpoints.get(cid)
        if cp is None:
            return _step(e, "failed", what=cid, note="the checkpoint was not taken in this replay")
        self.s.restore(cp)
        return _step(e, "match", what=cid)

    def _release(self, e: Event) -> ReplayStep:
        cid = str(e.data.get("checkpoint"))
        cp = self.checkpoints.pop(cid, None)
        if cp is not None:
            cp.release()
        return _step(e, "match", what=cid)

    def _put(self, e: Event) -> ReplayStep:
        name = str(e.data.get("name"))
        if e.blob is None:
            return _step(e, "skipped", what=name, note="the journal has no pickle for it")
        if digest(e.blob) != e.data.get("sha256"):
            return _step(e, "failed", what=name, note="the stored pickle does not match its digest")
        try:
            self.s.put(name, _Raw(e.blob))
        except UnpicklableValue as exc:
            return _step(e, "mismatch", what=name, note=str(exc))
        return _step(e, "match", what=name)

    def _get(self, e: Event) -> ReplayStep:
        name = str(e.data.get("name"))
        want = str(e.data.get("status", "ok"))
        try:
            value = self.s.get(name)
        except NameNotFound:
            got = "missing"
        except ValueTooLarge:
            got = "too_large"
        except UnpicklableValue as exc:
            if want == "ok":  # the worker sent it; the host will not rebuild it to hash it
                return _step(e, "skipped", what=name, note=f"not plain data: {exc}")
            got = "error"
        except TransferError as exc:  # interrupted by a limit
            got = "timeout" if "time limit" in str(exc) else "memory"
        else:
            got = "ok"
            if want == "ok":
                return self._compare_value(e, name, value)
        if got == want:
            return _step(e, "match", what=name)
        diff = FieldDiff(field="status", recorded=want, replayed=got)
        return self._mismatch(e, name, [diff], code=None)

    def _compare_value(self, e: Event, name: str, value: object) -> ReplayStep:
        data = pickle.dumps(value, protocol=5)
        if digest(data) == e.data.get("sha256"):
            return _step(e, "match", what=name)
        if _holds_a_set(value):
            return _step(
                e,
                "skipped",
                what=name,
                note="the value holds a set: its pickle follows the sandbox's hash order, "
                "which the host cannot re-create to compare digests",
            )
        diff = FieldDiff(
            field="value",
            recorded=f"sha256 {e.data.get('sha256')}, {e.data.get('size')} bytes",
            replayed=f"sha256 {digest(data)}, {len(data)} bytes",
        )
        return self._mismatch(e, name, [diff], code=None)

    def _run(self, e: Event) -> ReplayStep:
        code = str(e.data.get("code", ""))
        wire = e.data.get("trace")
        config = None if wire is None else TraceConfig.model_validate(wire)
        tools = list(e.data.get("tools") or ())
        result = self.s.run(code, trace=config, tools={t: _unavailable(t) for t in tools})
        step = self._compare(e, _first_line(code), result, code, tools)
        self.history.append((e.seq, code))
        return step

    def _call(self, e: Event) -> ReplayStep:
        name = str(e.data.get("name"))
        if e.blob is None:
            return _step(e, "skipped", what=name, note="the journal has no arguments for it")
        try:
            args, kwargs = transfer.loads_untrusted(e.blob)
        except UnpicklableValue as exc:
            if not self.trust:
                return _step(
                    e, "skipped", what=name, note=f"{exc} (replay with trust_pickles to use it)"
                )
            args, kwargs = pickle.loads(e.blob)
        result = self.s.call(name, *args, **kwargs)
        return self._compare(e, f"{name}(...)", result, None, [], reads=frozenset({name}))

    # comparing

    def _compare(
        self,
        e: Event,
        what: str,
        result: RunResult,
        code: str | None,
        tools: list[str],
        *,
        reads: frozenset[str] | None = None,
    ) -> ReplayStep:
        recorded = e.data.get("result") or {}
        diffs = [
            FieldDiff(field=f, recorded=_cut(a), replayed=_cut(b))
            for f, a, b in _fields(recorded, result)
            if a != b
        ]
        want_trace = recorded.get("trace_sha256")
        if want_trace is not None and result.trace is not None:
            got_trace = digest(result.trace.to_json())
            if got_trace != want_trace:
                diffs.append(FieldDiff(field="trace", recorded=want_trace, replayed=got_trace))
        if not diffs:
            risky = [s for s in find_suspects(code or "", seq=e.seq) if s.source in _STRONG]
            note = "run used tools: they raised in replay" if tools else None
            return _step(e, "match", what=what, suspects=risky, note=note)
        extra = [
            Suspect(source="tools", evidence=f"host tools {', '.join(tools)} (not journaled)")
            for _ in tools[:1]
        ]
        return self._mismatch(e, what, diffs, code, recorded=recorded, result=result, extra=extra)

    def _mismatch(
        self,
        e: Event,
        what: str,
        diffs: list[FieldDiff],
        code: str | None,
        *,
        recorded: Mapping[str, Any] | None = None,
        result: RunResult | None = None,
        extra: Iterable[Suspect] = (),
        reads: frozenset[str] | None = None,
    ) -> ReplayStep:
        suspects: list[Suspect] = list(extra)
        if recorded is not None and result is not None:
            for _field, a, b in _fields(recorded, result):
                suspects += output_suspects(a, b)
            limited = {"timeout", "memory", "killed"}
            if recorded.get("status") in limited or result.status in limited:
                suspects.append(
                    Suspect(
                        source="limits",
                        evidence=f"status {recorded.get('status')} then {result.status}: "
                        "limits depend on the machine's load",
                    )
                )
        own = find_suspects(code, seq=e.seq) if code else []
        suspects += own
        if not own:  # what it shows may have been computed earlier
            suspects += self._earlier(used_names(code) if code else reads)
        return _step(e, "mismatch", what=what, diffs=diffs, suspects=merge(suspects))

    def _earlier(self, names: frozenset[str] | None) -> list[Suspect]:
        """Suspects in earlier runs: those that bind a name this step reads, else all."""
        if names:
            feeding = [
                s
                for seq, code in reversed(self.history)
                for s in find_suspects(code, seq=seq, feeding=names)
            ]
            if feeding:
                return feeding
        return [s for seq, code in reversed(self.history) for s in find_suspects(code, seq=seq)]


def _fields(recorded: Mapping[str, Any], result: RunResult) -> Iterator[tuple[str, Any, Any]]:
    for f in _COMPARED:
        if f == "error":
            error = recorded.get("error")
            a = error.get("type") if isinstance(error, dict) else None
            yield "error type", a, result.error.type if result.error else None
        else:
            yield f, recorded.get(f), getattr(result, f)


def _unavailable(name: str) -> Callable[..., Any]:
    def tool(*args: object, **kwargs: object) -> Any:
        raise RuntimeError(
            f"tool {name!r} is not available in a replay (its answers are not journaled)"
        )

    return tool


def _holds_a_set(value: object, depth: int = 0) -> bool:
    if isinstance(value, set | frozenset):
        return True
    if depth > 50:
        return True  # too deep to tell: assume it might
    if isinstance(value, dict):
        items: Iterable[object] = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple):
        items = value
    else:
        return False
    return any(_holds_a_set(v, depth + 1) for v in items)


def _step(e: Event, outcome: Outcome, *, what: str = "", **more: Any) -> ReplayStep:
    return ReplayStep(seq=e.seq, session=e.session, kind=e.kind, what=what, outcome=outcome, **more)


def _first_line(code: str) -> str:
    lines = [line for line in code.strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    more = f" (+{len(lines) - 1} lines)" if len(lines) > 1 else ""
    return (first if len(first) <= 60 else first[:57] + "...") + more


def _cut(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + f"... [{len(text)} chars]"
