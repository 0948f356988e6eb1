"""Shared fixtures for integration tests: real runtimes and sessions (needs root on Linux).

A test module changes the limits of its runtime by overriding ``runtime_limits``::

    @pytest.fixture(scope="module")
    def runtime_limits() -> Limits:
        return Limits(cpu_seconds=2, memory_mb=256)

Sessions created with those limits come from the runtime's warm pool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tracebox import Limits, Runtime, Session


@pytest.fixture(scope="module")
def runtime_limits() -> Limits | None:
    """Default limits of the module's ``runtime`` (None: ``Limits()``); override per module."""
    return None


@pytest.fixture(scope="module")
def runtime(runtime_limits: Limits | None) -> Iterator[Runtime]:
    """One ``Runtime(pool_size=2)`` per test module, closed when the module is done."""
    rt = Runtime(limits=runtime_limits, pool_size=2)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def new_session(runtime: Runtime) -> Iterator[Callable[..., Session]]:
    """Factory: ``new_session(limits=..., stateful=...)``; every session is closed afterwards."""
    made: list[Session] = []

    def make(*, limits: Limits | None = None, stateful: bool = True) -> Session:
        s = runtime.session(limits=limits, stateful=stateful)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def session(new_session: Callable[..., Session]) -> Session:
    """A fresh session with the runtime's default limits, closed after the test."""
    return new_session()
