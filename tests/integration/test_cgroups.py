"""Real cgroups, real processes: limits hold, accounting moves, teardown leaves nothing.

On the tracebox test machines memory and pids confinement must work: a missing controller
is a failure with the reason, never a skip.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest

from tracebox.errors import SandboxError
from tracebox.sandbox.cgroups import CgroupSupport, SessionCgroup, probe

MiB = 2**20
_counter = itertools.count()

# Every child waits for one byte on stdin before doing its work, so the host can add() it first.
_PRELUDE = "import os, sys, time\nsys.stdin.buffer.read(1)\n"


def _require(support: CgroupSupport, *controllers: str) -> None:
    reasons = support.reasons()
    missing = {c: reasons[c] for c in controllers if reasons[c] is not None}
    if missing:
        pytest.fail(f"cgroup controllers unavailable on this machine: {missing}", pytrace=False)


@pytest.fixture(scope="module")
def support() -> CgroupSupport:
    s = probe()
    _require(s, "memory", "pids")
    return s


@pytest.fixture
def make_cgroup(support: CgroupSupport) -> Iterator[Callable[..., SessionCgroup]]:
    made: list[SessionCgroup] = []

    def make(memory_bytes: int | None = None, pids_max: int | None = None) -> SessionCgroup:
        name = f"test-{os.getpid()}-{next(_counter)}"
        cg = SessionCgroup.create(name, memory_bytes=memory_bytes, pids_max=pids_max)
        made.append(cg)
        return cg

    yield make
    for cg in made:
        cg.close()


@pytest.fixture
def spawn() -> Iterator[Callable[[SessionCgroup, str], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    groups: list[SessionCgroup] = []

    def run(cg: SessionCgroup, code: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, "-c", _PRELUDE + textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(p)
        groups.append(cg)
        cg.add(p.pid)
        assert p.pid in cg.pids()
        assert p.stdin is not None
        p.stdin.write(b"g")
        p.stdin.flush()
        return p

    yield run
    for cg in groups:  # grandchildren may hold the pipes open
        cg.kill_all()
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=5)
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                f.close()


def _gone_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_probe_reports_memory_pids_cpu_freezer(support: CgroupSupport) -> None:
    _require(support, "memory", "pids", "cpu", "freezer")
    assert support.active() == ["memory", "pids", "cpu", "freezer"]
    assert "memory: ok" in support.summary()


def test_freeze_stops_cpu_use_and_close_kills_frozen_processes(
    make_cgroup: Callable[..., SessionCgroup],
    spawn: Callable[[SessionCgroup, str], subprocess.Popen[bytes]],
) -> None:
    cg = make_cgroup()
    assert cg.can_freeze
    p = spawn(cg, "print('spinning', flush=True)\nwhile True:\n    pass")
    assert p.stdout is not None
    assert p.stdout.readline() == b"spinning\n"
    cg.freeze()
    deadline, frozen_at = time.monotonic() + 2, -1.0
    while frozen_at != cg.cpu_seconds() and time.monotonic() < deadline:  # freezing is async
        frozen_at = cg.cpu_seconds() or 0.0
        time.sleep(0.05)
    time.sleep(0.3)
    assert cg.cpu_seconds() == frozen_at
    cg.thaw()
    time.sleep(0.2)
    assert (cg.cpu_seconds() or 0) > (frozen_at or 0)
    cg.freeze()
    cg.close()  # a frozen process only dies once thawed: close() must do that itself
    assert p.wait(timeout=5) == -signal.SIGKILL
    assert cg.pids() == []


def test_memory_limit_oom_kills(
    make_cgroup: Callable[..., SessionCgroup],
    spawn: Callable[[SessionCgroup, str], subprocess.Popen[bytes]],
) -> None:
    cg = make_cgroup(memory_bytes=64 * MiB, pids_max=16)
    assert cg.support.memory is None, cg.support.summary()
    assert cg.oom_kills() == 0
    p = spawn(cg, 'x = b"x" * (200 * 2**20)\nprint("survived", len(x))\n')
    out, _ = p.communicate(timeout=10)
    assert b"survived" not in out
    assert p.returncode == -signal.SIGKILL
    assert cg.oom_kills() >= 1
    peak = cg.peak_memory_bytes()
    assert peak is not None
    assert peak <= 64 * MiB + 4096


def test_pids_limit_stops_fork(
    make_cgroup: Callable[..., SessionCgroup],
    spawn: Callable[[SessionCgroup, str], subprocess.Popen[bytes]],
) -> None:
    cg = make_cgroup(memory_bytes=256 * MiB, pids_max=16)
    code = """
        r, w = os.pipe()
        n, err = 0, "none"
        for _ in range(40):
            try:
                pid = os.fork()
            except OSError as e:
                err = type(e).__name__
                break
            if pid == 0:
                os.close(w)
                os.read(r, 1)  # EOF when the parent exits
                os._exit(0)
            n += 1
        print(n, err, flush=True)
    """
    p = spawn(cg, code)
    out, errout = p.communicate(timeout=10)
    assert p.returncode == 0, errout.decode()
    count, err = out.decode().split()
    assert err == "BlockingIOError"
    assert 10 <= int(count) <= 15  # 16 tasks including the forking process itself


def test_cpu_seconds_grows(
    support: CgroupSupport,
    make_cgroup: Callable[..., SessionCgroup],
    spawn: Callable[[SessionCgroup, str], subprocess.Popen[bytes]],
) -> None:
    _require(support, "cpu")
    cg = make_cgroup()
    before = cg.cpu_seconds()
    assert before is not None
    p = spawn(cg, "t = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n")
    p.communicate(timeout=10)
    after = cg.cpu_seconds()
    assert after is not None
    assert after - before >= 0.25


def test_peak_memory_and_reset(
    make_cgroup: Callable[..., SessionCgroup],
    spawn: Callable[[SessionCgroup, str], subprocess.Popen[bytes]],
) -> None:
    cg = make_cgroup(memory_bytes=256 * MiB)
    code = """
        x = b"x" * (30 * 2**20)
        print("allocated", flush=True)
        sys.stdin.buffer.read(1)
        del x
        print("freed", flush=True)
        sys.stdin.buffer.read(1)
    """
    p = spawn(cg, code)
    assert p.stdin is not None
    assert p.stdout is not None
    assert p.stdout.readline() == b"allocated\n"
    usage, peak = cg.memory_bytes(), cg.peak_memory_bytes()
    assert usage is not None
    assert usage >= 30 * MiB
    assert peak is not None
    assert peak >= 30 * MiB
    p.stdin.write(b"g")
    p.stdin.flush()
    assert p.stdout.readline() == b"freed\n"
    cg.reset_peak()
    after = cg.peak_memory_bytes()
    assert after is not None
    assert after < 30 * MiB
    assert after < peak
    p.stdin.write(b"g")
    p.stdin.flush()
    p.communicate(timeout=5)
    assert p.returncode == 0


def test_kill_all_and_close_leave_nothing(
    make_cgroup: Callable[..., SessionCgroup],
    spawn: Callable[[SessionCgroup, str], subprocess.Popen[bytes]],
) -> None:
    cg = make_cgroup(memory_bytes=128 * MiB, pids_max=16)
    code = """
        for _ in range(3):
            if os.fork() == 0:
                os.setsid()  # leave the worker's session and process group
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                time.sleep(60)
                os._exit(0)
        print("forked", flush=True)
        time.sleep(60)
    """
    p = spawn(cg, code)
    assert p.stdout is not None
    assert p.stdout.readline() == b"forked\n"
    deadline = time.monotonic() + 5
    while len(inside := cg.pids()) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(inside) == 7
    cg.kill_all()
    assert cg.pids() == []
    p.communicate(timeout=5)
    assert p.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 2
    while not all(_gone_or_zombie(pid) for pid in inside) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(_gone_or_zombie(pid) for pid in inside)

    paths = list(cg.paths.values())
    assert paths
    assert all(os.path.isdir(d) for d in paths)
    cg.close()
    assert not any(os.path.exists(d) for d in paths)
    cg.close()  # idempotent
    assert cg.pids() == []
    assert cg.memory_bytes() is None
    assert cg.oom_kills() == 0


def test_close_kills_what_is_left(
    make_cgroup: Callable[..., SessionCgroup],
    spawn: Callable[[SessionCgroup, str], subprocess.Popen[bytes]],
) -> None:
    cg = make_cgroup(pids_max=16)
    p = spawn(cg, 'print("up", flush=True)\ntime.sleep(60)\n')
    assert p.stdout is not None
    assert p.stdout.readline() == b"up\n"
    paths = list(cg.paths.values())
    cg.close()
    assert not any(os.path.exists(d) for d in paths)
    p.communicate(timeout=5)
    assert p.returncode == -signal.SIGKILL


def test_existing_name_is_not_adopted(make_cgroup: Callable[..., SessionCgroup]) -> None:
    cg = make_cgroup(pids_max=8)
    with pytest.raises(SandboxError, match="already exists"):
        SessionCgroup.create(cg.name, memory_bytes=None, pids_max=8)
    assert all(os.path.isdir(d) for d in cg.paths.values())


def test_unappliable_limit_raises_and_removes_dirs(support: CgroupSupport) -> None:
    name = f"test-{os.getpid()}-{next(_counter)}"
    with pytest.raises(SandboxError, match="pids limit"):
        SessionCgroup.create(name, memory_bytes=64 * MiB, pids_max=2**70)
    roots = [d for d in support.where.split() if ":" in d]
    assert roots
    for entry in roots:
        mount = entry.split(":", 1)[1]
        assert not os.path.exists(os.path.join(mount, "tracebox", name))


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "../x", "a..b", "x" * 200, "a b", "é", "a\n"]
)
def test_invalid_names_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid cgroup name"):
        SessionCgroup.create(name, memory_bytes=None, pids_max=None)


@pytest.mark.parametrize(("memory", "pids"), [(0, None), (None, 0), (-1, 5), (True, None)])
def test_invalid_limits_rejected(memory: int | None, pids: int | None) -> None:
    with pytest.raises(ValueError, match="positive int"):
        SessionCgroup.create("fine", memory_bytes=memory, pids_max=pids)
