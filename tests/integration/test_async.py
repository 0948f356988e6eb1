"""AsyncRuntime: the same sessions from asyncio, concurrently."""

from __future__ import annotations

import asyncio

import pytest

from tracebox import AsyncRuntime, Limits, RuntimeClosed, SessionState


async def test_async_sessions_run_concurrently_and_keep_state() -> None:
    async with AsyncRuntime(limits=Limits(wall_seconds=5), pool_size=2) as rt:
        sessions = [await rt.session() for _ in range(4)]
        await asyncio.gather(*(s.run(f"n = {i}") for i, s in enumerate(sessions)))
        # the event loop keeps serving other tasks while the runs are in flight
        ticks = 0
        runs = asyncio.gather(*(s.run("import time\ntime.sleep(0.3)\nn * 10") for s in sessions))
        while not runs.done():
            ticks += 1
            await asyncio.sleep(0.01)
        assert [r.value for r in await runs] == ["0", "10", "20", "30"]
        assert ticks > 1
        await sessions[0].put("payload", [1, 2, 3])
        assert await sessions[0].get("payload") == [1, 2, 3]
        seen: list[str] = []
        r = await sessions[1].run("print('hi')", on_output=lambda _s, text: seen.append(text))
        assert r.stdout == "hi\n"
        assert "".join(seen) == "hi\n"
        t = await sessions[3].trial(["n = -1\nn * 2"], cpu_seconds=2)
        assert t.ok and t.runs[0].value == "-2"
        assert (await sessions[3].run("n")).value == "3"  # the trial ran in a copy
        async with sessions[2] as s:
            assert s.state is SessionState.READY
        assert sessions[2].state is SessionState.CLOSED


async def test_async_runtime_must_be_started() -> None:
    rt = AsyncRuntime(pool_size=0)
    with pytest.raises(RuntimeClosed, match="not started"):
        await rt.session()
    await rt.start()
    s = await rt.session(stateful=False)
    assert (await s.run("1 + 1")).value == "2"
    await rt.close()
    with pytest.raises(RuntimeClosed):
        await rt.session()
