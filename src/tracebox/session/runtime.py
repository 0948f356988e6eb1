"""The Runtime owns the template, the warm pool and every session it created."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tracebox.errors import RuntimeClosed
from tracebox.sandbox.confine import SpawnLimits
from tracebox.session.journaling import JournalSink
from tracebox.session.output import OutputCallback
from tracebox.session.pool import WarmPool
from tracebox.session.session import Session
from tracebox.session.template import Template
from tracebox.session.trial import Call
from tracebox.trace.config import TraceConfig
from tracebox.trace.settings import Mode
from tracebox.types import CallResult, Limits, RunResult, SessionState, Trial


def _spawn_limits(limits: Limits) -> SpawnLimits:
    return SpawnLimits(*limits.spawn_key())


def _open_journal(
    journal: str | os.PathLike[str] | JournalSink | None,
) -> JournalSink | None:
    if journal is None or not isinstance(journal, str | os.PathLike):
        return journal
    from tracebox.journal import Journal

    return Journal(journal)


class Runtime:
    """Entry point: ``with Runtime() as rt: s = rt.session(); s.run("1 + 1")``.

    ``limits`` are the defaults for new sessions; sessions with these spawn limits come from a
    warm pool of ``pool_size`` pre-started workers, others are started on demand. Sessions run
    on the host's own interpreter (``sys.executable``) and see its installed packages.

    ``journal``: a path (SQLite, created if needed) or a journal object; every operation of
    every session is appended to it before it is acknowledged.

    ``hide``: host paths the sandboxes would see (under the Python installation or its
    site-packages) that they must not: a dataset with its answers, say. Each is covered
    with an empty directory or file.

    ``huge_pages``: sessions allocate Python objects with malloc (``PYTHONMALLOC=malloc``)
    and malloc uses transparent huge pages (``glibc.malloc.hugetlb=1``). A checkpoint,
    restore or fork copies page tables, so with 2 MB pages they get several times faster
    for large sessions (see bench/README.md); allocation-heavy code runs slower (pymalloc
    is faster for small objects) and small sessions use a little more memory.
    """

    def __init__(
        self,
        *,
        limits: Limits | None = None,
        pool_size: int = 2,
        journal: str | os.PathLike[str] | JournalSink | None = None,
        huge_pages: bool = False,
        hide: tuple[str, ...] = (),
    ) -> None:
        self.limits = limits or Limits()
        self._owns_journal = isinstance(journal, str | os.PathLike)
        self.journal = _open_journal(journal)
        self._template = Template(huge_pages=huge_pages, hide=hide)
        self._pool = WarmPool(self._template, _spawn_limits(self.limits), pool_size)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def python_version(self) -> str:
        return self._template.python_version

    def session(self, *, limits: Limits | None = None, stateful: bool = True) -> Session:
        """A new confined session, ready to run code."""
        if self._closed:
            raise RuntimeClosed("the runtime is closed")
        limits = limits or self.limits
        if limits.spawn_key() == self.limits.spawn_key():
            worker = self._pool.acquire()
        else:
            worker = self._template.spawn(_spawn_limits(limits), f"s{secrets.token_hex(4)}")
        session = Session(
            worker,
            id=secrets.token_hex(6),
            limits=limits,
            stateful=stateful,
            on_close=self._forget,
            journal=self.journal,
        )
        session._family.on_fork = self._adopt
        if self.journal is not None:
            created = {"limits": limits.model_dump(), "stateful": stateful}
            self.journal.append(
                session.id, "created", {**created, "parent": None, "checkpoint": None}
            )
        with self._lock:
            if self._closed:
                session.close()
                raise RuntimeClosed("the runtime is closed")
            self._sessions[session.id] = session
        return session

    def sessions(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def wait_warm(self, timeout: float = 30.0) -> bool:
        """Block until the warm pool is full."""
        return self._pool.wait_full(timeout)

    def _adopt(self, sessions: list[Session]) -> None:
        """Sessions made by ``Session.fork``: closed with the runtime, like the others."""
        with self._lock:
            for s in sessions:
                self._sessions[s.id] = s

    def _forget(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)

    def close(self) -> None:
        """Close every session, the pool and the template. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions = list(self._sessions.values())
        for s in sessions:
            s.close()
        self._pool.close()
        self._template.close()
        if self.journal is not None and self._owns_journal:
            self.journal.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSession:
    """``Session`` with async methods; each call runs in a worker thread of the event loop."""

    def __init__(self, session: Session) -> None:
        self.sync = session

    @property
    def id(self) -> str:
        return self.sync.id

    @property
    def state(self) -> SessionState:
        return self.sync.state

    async def run(
        self,
        code: str,
        *,
        on_output: OutputCallback | None = None,
        trace: TraceConfig | Mode | None = None,
        tools: Mapping[str, Callable[..., Any]] | None = None,
    ) -> RunResult:
        """See ``Session.run``; callbacks and tools run in a worker thread."""
        return await asyncio.to_thread(
            self.sync.run, code, on_output=on_output, trace=trace, tools=tools
        )

    async def call(
        self,
        name: str,
        /,
        *args: object,
        trace__: TraceConfig | Mode | None = None,
        **kwargs: object,
    ) -> CallResult:
        """See ``Session.call``."""
        call = functools.partial(self.sync.call, name, *args, trace__=trace__, **kwargs)
        return await asyncio.to_thread(call)

    async def trial(
        self,
        cells: Sequence[str] = (),
        calls: Sequence[Call] = (),
        **options: Any,
    ) -> Trial:
        """See ``Session.trial`` (same keyword options)."""
        return await asyncio.to_thread(functools.partial(self.sync.trial, cells, calls, **options))

    def interrupt(self) -> None:
        """See ``Session.interrupt``; not a coroutine, so it works from anywhere."""
        self.sync.interrupt()

    async def put(self, name: str, value: object) -> None:
        await asyncio.to_thread(self.sync.put, name, value)

    async def get(self, name: str) -> Any:
        return await asyncio.to_thread(self.sync.get, name)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncRuntime:
    """``Runtime`` for asyncio: ``async with AsyncRuntime() as rt: s = await rt.session()``."""

    def __init__(self, *, limits: Limits | None = None, pool_size: int = 2) -> None:
        self._args: dict[str, Any] = {"limits": limits, "pool_size": pool_size}
        self._rt: Runtime | None = None

    @property
    def sync(self) -> Runtime:
        if self._rt is None:
            raise RuntimeClosed("the runtime is not started: use 'async with' or await start()")
        return self._rt

    async def start(self) -> AsyncRuntime:
        if self._rt is None:
            self._rt = await asyncio.to_thread(lambda: Runtime(**self._args))
        return self

    async def session(self, *, limits: Limits | None = None, stateful: bool = True) -> AsyncSession:
        rt = self.sync
        return AsyncSession(await asyncio.to_thread(rt.session, limits=limits, stateful=stateful))

    async def close(self) -> None:
        if self._rt is not None:
            await asyncio.to_thread(self._rt.close)

    async def __aenter__(self) -> AsyncRuntime:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
