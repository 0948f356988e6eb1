"""Escape attempts: each one is contained and reported with a clear status.

Every test ends with ``guard.check()``: a sibling session created *before* the attempt still
holds its state, every attacking session still alive has no process left but its worker (the
host's cgroup agrees), a dead one left nothing behind, and a fresh session runs ``1 + 1``.

A test that fails here is a containment bug in the runtime, not in the test.
"""

from __future__ import annotations

import ast
import errno
import inspect
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tracebox
from tracebox import (
    Limits,
    RunResult,
    Runtime,
    Session,
    SessionDead,
    SessionState,
    UnpicklableValue,
    ValueTooLarge,
)
from tracebox.sandbox.rootfs import python_paths

pytestmark = [pytest.mark.containment, pytest.mark.timeout(60)]

LIMITS = Limits(
    cpu_seconds=1, wall_seconds=3, memory_mb=256, disk_mb=16, max_processes=32,
    max_open_files=64, max_output_bytes=65536, grace_seconds=0.5, checkpoint_memory_mb=0,
)  # fmt: skip
X86_64 = platform.machine() == "x86_64"
only_x86_64 = pytest.mark.skipif(not X86_64, reason="raw syscall numbers are x86_64's")
# A run that ignores its interrupt is over by then: the hard deadline, plus room for a loaded
# host to reap the worker (this checks the kill happens at all, not how fast).
KILLED_BY = LIMITS.wall_seconds + LIMITS.grace_seconds + 5
PROC_PIDS = "sorted(p for p in __import__('os').listdir('/proc') if p.isdigit())"
ALONE = ["1", "2"]  # what a session's /proc shows between runs: its init and its worker


# A Python installed under /tmp on the host (a venv, a checkout) is shown read-only in every
# worker's /tmp; these are the names it adds there.
PYTHON_IN_TMP = sorted({p.split("/")[2] for p in python_paths() if p.startswith("/tmp/")})


@pytest.fixture(scope="module")
def runtime_limits() -> Limits:
    return LIMITS


def cell(source: str, **values: object) -> str:
    """Dedent ``source`` and replace each ``__NAME__`` by ``repr(values[NAME])``."""
    code = textwrap.dedent(source).strip("\n") + "\n"
    for name, value in values.items():
        code = code.replace(f"__{name}__", repr(value))
    assert not re.search(r"__[A-Z][A-Z0-9_]*__", code), f"unreplaced placeholder in {code!r}"
    return code


def literal(result: RunResult) -> Any:
    assert result.status == "ok", result
    assert result.value is not None, result
    return ast.literal_eval(result.value)


def assert_error(result: RunResult, types: str | tuple[str, ...], message: str = "") -> None:
    """The run failed with one of ``types`` and a message matching the regex ``message``."""
    types = (types,) if isinstance(types, str) else types
    assert result.status == "error", result
    assert result.error is not None, result
    assert result.error.type in types, result.error
    assert re.search(message, result.error.message), result.error
    assert result.session_alive, result


def assert_dead(session: Session, result: RunResult) -> None:
    assert not result.session_alive, result
    assert session.state is SessionState.DEAD
    with pytest.raises(SessionDead, match="is dead"):
        session.run("1 + 1")


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Guard:
    """Checks that an escape attempt disturbed nothing outside the attacking session."""

    def __init__(self, runtime: Runtime, sibling: Session, token: str) -> None:
        self.runtime = runtime
        self.sibling = sibling
        self.token = token
        self.sessions: list[Session] = []

    def attacker(self, **overrides: Any) -> Session:
        """A session of the module runtime with ``LIMITS`` changed by ``overrides``."""
        return self.track(self.runtime.session(limits=LIMITS.model_copy(update=overrides)))

    def track(self, session: Session) -> Session:
        self.sessions.append(session)
        return session

    def check(self, runtime: Runtime | None = None) -> None:
        """The containment check; ``runtime``: a dedicated runtime the test also used."""
        for s in self.sessions:
            _assert_nothing_left(s)
        r = self.sibling.run(f"canary, {PROC_PIDS}")
        assert literal(r) == (self.token, ALONE), r
        assert self.sibling.state is SessionState.READY
        runtimes = [self.runtime] + ([runtime] if runtime not in (None, self.runtime) else [])
        for rt in runtimes:
            fresh = rt.session()
            try:
                r = fresh.run("1 + 1")
                assert (r.status, r.value) == ("ok", "2"), r
            finally:
                fresh.close()

    def close(self) -> None:
        for s in self.sessions:
            s.close()
        self.sibling.close()


def _assert_nothing_left(s: Session) -> None:
    """A live session has only its init and worker left; a dead one has no process at all."""
    cg = s._worker.cgroup
    if s.state is SessionState.READY:
        assert literal(s.run(PROC_PIDS)) == ALONE, "a process outlived its run"
        if cg is not None:
            assert sorted(cg.pids()) == sorted([s._worker.init, s._worker.pid])
    elif s.state is SessionState.DEAD and cg is not None:
        assert wait_until(lambda: cg.pids() == []), f"left behind: {cg.pids()}"


@pytest.fixture
def guard(runtime: Runtime) -> Iterator[Guard]:
    sibling = runtime.session()
    token = secrets.token_hex(8)
    assert sibling.run(f"canary = {token!r}").status == "ok"
    g = Guard(runtime, sibling, token)
    try:
        yield g
    finally:
        g.close()


def test_every_attempt_checks_containment() -> None:
    """Each test taking ``guard`` calls ``guard.check()`` (kept here, not in the fixture's
    teardown, so a failing attempt is reported once)."""
    tests = [f for name, f in globals().items() if name.startswith("test_") and callable(f)]
    guarded = [f for f in tests if "guard" in inspect.signature(f).parameters]
    assert len(guarded) > 30
    for f in guarded:
        assert "guard.check(" in inspect.getsource(f), f"{f.__name__} never calls guard.check()"


# -- processes, threads, memory, time ---------------------------------------------------------


def test_fork_loop_hits_the_process_limit(guard: Guard) -> None:
    s = guard.attacker()
    r = s.run(
        cell("""
            import os, time
            children = 0
            try:
                while True:
                    if os.fork() == 0:
                        time.sleep(60)
                        os._exit(0)
                    children += 1
            except OSError as exc:
                err = exc
            (children, type(err).__name__, err.errno)
        """)
    )
    children, kind, code = literal(r)
    assert (kind, code) == ("BlockingIOError", errno.EAGAIN)
    assert 0 < children < LIMITS.max_processes
    assert literal(s.run(PROC_PIDS)) == ALONE
    guard.check()


def test_exponential_fork_bomb_times_out(guard: Guard) -> None:
    s = guard.attacker()
    r = s.run(
        cell("""
            import os
            while True:
                try:
                    os.fork()
                except OSError:
                    pass
        """)
    )
    assert r.status == "timeout", r
    assert r.error is not None and r.error.type == "TimeLimitExceeded"
    assert r.wall_seconds < KILLED_BY
    # the interrupt may land in a fork hook that swallows it: then the worker is killed
    if not r.session_alive:
        assert_dead(s, r)
    guard.check()


def test_thread_bomb_hits_a_limit(guard: Guard) -> None:
    s = guard.attacker()
    r = s.run(
        cell("""
            import threading
            never = threading.Event()
            threads = []
            try:
                while True:
                    t = threading.Thread(target=never.wait, daemon=True)
                    t.start()
                    threads.append(t)
            except RuntimeError as exc:
                err = exc
            (len(threads), str(err))
        """)
    )
    count, message = literal(r)
    assert message == "can't start new thread"
    assert 0 < count < LIMITS.max_processes
    guard.check()


@pytest.mark.parametrize(
    ("code", "types"),
    [
        pytest.param("big = bytearray(10**10)", ("MemoryError",), id="one-huge-block"),
        pytest.param(
            "grow = []\nwhile True:\n    grow.append(b'x' * 10**6)",
            ("MemoryError", "OutOfMemory"),
            id="gradual-growth",
        ),
    ],
)
def test_memory_bomb(guard: Guard, code: str, types: tuple[str, ...]) -> None:
    s = guard.attacker(cpu_seconds=2)
    assert s.run("kept = 41").status == "ok"
    r = s.run(code)
    assert r.status == "memory", r
    assert r.error is not None and r.error.type in types
    if r.session_alive:
        assert s.run("kept + 1").value == "42"
    else:
        assert_dead(s, r)
    guard.check()


def test_memory_bomb_in_children_is_oom_killed(guard: Guard) -> None:
    """Three children of 150 MB each overflow the session's cgroup: the OOM killer takes one
    (the first child to end), the worker lives on."""
    s = guard.attacker()
    if s._worker.cgroup is None:
        pytest.skip("no memory cgroup: per-process RLIMIT_AS only")
    r = s.run(
        cell("""
            import os, signal, time
            pids = []
            for _ in range(3):
                pid = os.fork()
                if pid == 0:
                    data = b"x" * (150 * 2**20)
                    time.sleep(5)
                    os._exit(0)
                pids.append(pid)
            status = os.wait()[1]
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status)
        """)
    )
    assert literal(r) == signal.SIGKILL
    assert r.session_alive
    guard.check()


@pytest.mark.parametrize(
    ("code", "overrides", "which"),
    [
        pytest.param("while True:\n    pass", {}, "CPU time limit of 1 s", id="cpu-spin"),
        pytest.param(
            "import time\ntime.sleep(60)",
            {"wall_seconds": 1.0},
            "wall-clock limit of 1 s",
            id="wall-sleep",
        ),
    ],
)
def test_infinite_loop_times_out_and_keeps_state(
    guard: Guard, code: str, overrides: dict[str, float], which: str
) -> None:
    s = guard.attacker(**overrides)
    assert s.run("kept = 41").status == "ok"
    r = s.run(code)
    assert r.status == "timeout", r
    assert r.error is not None and r.error.type == "TimeLimitExceeded"
    assert which in r.error.message and "intact" in r.error.message
    assert r.session_alive and s.state is SessionState.READY
    assert s.run("kept + 1").value == "42"
    guard.check()


IGNORE_SIGNALS = """
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPROF):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        pass
"""
SWALLOW_SIGNALS = """
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPROF):
        signal.signal(sig, lambda *args: None)
    while True:
        pass
"""
CATCH_AND_RETRY = """
    def spin():
        while True:
            pass

    while True:
        try:
            spin()
        except BaseException:
            pass
"""


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(IGNORE_SIGNALS, id="sig-ign"),
        pytest.param(SWALLOW_SIGNALS, id="no-op-handlers"),
        pytest.param(CATCH_AND_RETRY, id="except-baseexception-retry"),
    ],
)
def test_loop_ignoring_the_interrupt_is_killed(guard: Guard, code: str) -> None:
    s = guard.attacker()
    r = s.run(cell(code))
    assert r.status == "timeout", r
    assert r.error is not None and r.error.type == "TimeLimitExceeded"
    assert "ignored the interrupt" in r.error.message, r.error
    assert r.wall_seconds < KILLED_BY
    assert_dead(s, r)
    guard.check()


def test_double_fork_daemon_is_gone_after_the_run(guard: Guard) -> None:
    s = guard.attacker()
    r = s.run(
        cell("""
            import os, time
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    while True:
                        with open("/tmp/beat", "a") as f:
                            f.write("x")
                        time.sleep(0.1)
                os._exit(0)
            time.sleep(0.35)
            os.path.getsize("/tmp/beat")
        """)
    )
    assert literal(r) >= 2
    pids, before, after = literal(
        s.run(
            cell("""
                import os, time
                before = os.path.getsize("/tmp/beat")
                time.sleep(0.3)
                (sorted(p for p in os.listdir("/proc") if p.isdigit()), before,
                 os.path.getsize("/tmp/beat"))
            """)
        )
    )
    assert pids == ALONE
    assert before == after, "the daemon still writes"
    guard.check()


SPINNING_THREAD = """
    import threading

    def spin():
        while True:
            pass

    threading.Thread(target=spin, daemon=True).start()
"""
WRITER_THREAD = """
    import threading, time

    def beat():
        while True:
            with open("/tmp/beat", "a") as f:
                f.write("x")
            time.sleep(0.05)

    threading.Thread(target=beat, daemon=True).start()
    while not __import__("os").path.exists("/tmp/beat"):
        time.sleep(0.01)
"""


@pytest.mark.parametrize(
    ("code", "check"),
    [
        pytest.param(SPINNING_THREAD, "cpu", id="spinning-thread"),
        pytest.param(WRITER_THREAD, "file", id="writer-thread"),
    ],
)
def test_background_thread_does_not_outlive_the_run(guard: Guard, code: str, check: str) -> None:
    """Like the double-fork daemon, code started by a run must not keep running after it.

    Processes are killed after each request; threads cannot be, so a session that still has
    threads is frozen between requests: they neither use CPU nor act while it is idle.
    """
    s = guard.attacker()
    assert s.run(cell(code)).status == "ok"
    if check == "cpu":
        before = s._worker.cpu_seconds()
        time.sleep(0.5)
        used = s._worker.cpu_seconds() - before
        assert used < 0.1, f"a thread used {used:.2f} s of CPU while the session was idle"
    else:  # threads run while a request runs; look from the host while the session is idle
        beat = f"/proc/{s._worker.pid}/root/tmp/beat"
        first = os.path.getsize(beat)
        time.sleep(0.5)
        second = os.path.getsize(beat)
        assert first == second, (
            f"a thread kept writing while the session was idle ({first} -> {second})"
        )
        assert literal(s.run("__import__('os').path.getsize('/tmp/beat')")) >= second
    guard.check()


# -- files, descriptors, output ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "path"),
    [
        pytest.param(
            "with open('/workspace/big', 'wb') as f:\n    while True:\n"
            "        f.write(b'x' * 2**20)",
            "/workspace/big",
            id="one-big-file",
        ),
        pytest.param(
            "i = 0\nwhile True:\n    with open(f'/tmp/f{i}', 'wb') as f:\n"
            "        f.write(b'x' * 2**20)\n    i += 1",
            "/tmp",
            id="many-files-in-tmp",
        ),
    ],
)
def test_disk_fill_stops_at_the_quota(guard: Guard, code: str, path: str) -> None:
    s = guard.attacker()
    r = s.run(code)
    assert_error(r, "OSError", r"\[Errno (28|27)\] (No space left on device|File too large)")
    cleanup = cell(
        """
        import os
        target = __PATH__
        if os.path.isdir(target):
            for name in os.listdir(target):
                if os.path.isfile(os.path.join(target, name)):
                    os.remove(os.path.join(target, name))
        else:
            os.remove(target)
        with open("/workspace/after", "wb") as f:
            f.write(b"y" * 2**20)
        os.path.getsize("/workspace/after")
        """,
        PATH=path,
    )
    assert literal(s.run(cleanup)) == 2**20
    guard.check()


def test_fd_exhaustion_is_emfile_and_the_session_lives(guard: Guard) -> None:
    s = guard.attacker()
    r = s.run("files = []\nwhile True:\n    files.append(open('/dev/null'))")
    assert_error(r, "OSError", r"\[Errno 24\] Too many open files")
    assert 0 < literal(s.run("len(files)")) <= LIMITS.max_open_files
    r = s.run("for f in files:\n    f.close()\nopen('/dev/null').close()\n'ok'")
    assert r.value == "'ok'"
    guard.check()


@pytest.mark.parametrize(
    ("code", "stream"),
    [
        pytest.param(
            "import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * 2**20)",
            "stdout",
            id="sys.stdout.write",
        ),
        pytest.param(
            "import os\nfor _ in range(1024):\n    os.write(1, b'x' * 2**20)",
            "stdout",
            id="os.write-1",
        ),
        pytest.param(
            "import os\nfor _ in range(1024):\n    os.write(2, b'x' * 2**20)",
            "stderr",
            id="os.write-2",
        ),
    ],
)
def test_a_gigabyte_of_output_is_capped(guard: Guard, code: str, stream: str) -> None:
    s = guard.attacker(cpu_seconds=10, wall_seconds=20)
    r = s.run(code)
    assert r.status == "ok", r.model_copy(update={"stdout": r.stdout[:100]})
    text = getattr(r, stream)
    cap = LIMITS.max_output_bytes
    dropped = 2**30 - cap
    marker = f"[tracebox: {stream} truncated: {dropped} more bytes not shown (limit {cap} bytes)]"
    assert text == "x" * cap + "\n" + marker + "\n"
    guard.check()


VENV_FILE = os.path.join(sys.prefix, "tracebox-pwned")
PACKAGE_INIT = tracebox.__file__


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("open('/usr/pwned', 'w')", id="new-file-in-usr"),
        pytest.param("open('/etc/pwned', 'w')", id="new-file-in-etc"),
        pytest.param("open('/pwned', 'w')", id="new-file-in-root"),
        pytest.param(f"open({VENV_FILE!r}, 'w')", id="new-file-in-venv"),
        pytest.param(f"open({PACKAGE_INIT!r}, 'a')", id="append-to-tracebox-source"),
        pytest.param("open('/etc/passwd', 'w')", id="overwrite-etc-passwd"),
        pytest.param("open('/dev/pwned', 'w')", id="new-file-in-dev"),
        pytest.param("import os\nos.unlink('/usr/bin/env')", id="unlink-usr-bin-env"),
        pytest.param("import os\nos.chmod('/usr/bin/env', 0o4777)", id="chmod-usr-bin-env"),
        pytest.param("import os\nos.mkdir('/etc/pwned.d')", id="mkdir-in-etc"),
        pytest.param("import os\nos.symlink('/workspace', '/usr/lib/pwned')", id="symlink-in-usr"),
        pytest.param("open('/proc/sys/kernel/hostname', 'w').write('x')", id="proc-sys-kernel"),
        pytest.param("open('/proc/sys/vm/drop_caches', 'w').write('3')", id="proc-sys-vm"),
        pytest.param("open('/proc/sys/net/ipv4/ip_forward', 'w').write('1')", id="proc-sys-net"),
        pytest.param("open('/proc/self/uid_map', 'w').write('0 0 1')", id="proc-self-uid-map"),
    ],
)
def test_writes_outside_the_workspace_fail(guard: Guard, code: str) -> None:
    s = guard.attacker()
    r = s.run(code)
    assert_error(
        r,
        ("PermissionError", "OSError", "FileNotFoundError"),
        # read-only, denied, or not even there (a venv under /tmp is hidden by the private /tmp)
        r"^\[Errno (30|13|1|2)\] (Read-only file system|Permission denied|Operation not "
        r"permitted|No such file or directory)",
    )
    for host_path in ("/usr/pwned", "/etc/pwned", "/pwned", VENV_FILE, "/etc/pwned.d"):
        assert not os.path.exists(host_path)
    guard.check()


# -- secrets ------------------------------------------------------------------------------------

GATHER = """
    import os
    found = {}
    for path in __PATHS__:
        try:
            with open(path, "rb") as f:
                found[path] = f.read()
        except OSError as exc:
            found[path] = type(exc).__name__
    found["os.environ"] = dict(os.environ)
    for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self", "thread-self"]:
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    found[f"/proc/{pid}/{name}"] = f.read()
            except OSError as exc:
                found[f"/proc/{pid}/{name}"] = type(exc).__name__
    for d in __DIRS__:
        try:
            found[d] = sorted(os.listdir(d))
        except OSError as exc:
            found[d] = type(exc).__name__
    len(found)
"""


@pytest.fixture
def root_secret() -> Iterator[tuple[Path, str]]:
    """A world-readable host file in /root holding a random token."""
    token = secrets.token_hex(16)
    path = Path("/root") / f".tracebox-test-secret-{secrets.token_hex(4)}"
    path.write_text(token)
    path.chmod(0o644)
    try:
        yield path, token
    finally:
        path.unlink()


def test_host_secrets_are_invisible(
    guard: Guard,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    root_secret: tuple[Path, str],
) -> None:
    env_token, file_token = secrets.token_hex(16), secrets.token_hex(16)
    monkeypatch.setenv("TRACEBOX_TEST_SECRET", env_token)  # before the runtime starts
    tmp_secret = tmp_path / "secret.txt"
    tmp_secret.write_text(file_token)
    tmp_secret.chmod(0o644)
    tmp_path.chmod(0o755)
    root_path, root_token = root_secret
    paths = [str(tmp_secret), str(root_path), "/etc/shadow", "/root/.bash_history"]
    with Runtime(limits=LIMITS, pool_size=1) as rt:
        s = guard.track(rt.session())
        dirs = ["/root", "/tmp", str(tmp_path.parent), "/home", "/"]
        assert s.run(cell(GATHER, PATHS=paths, DIRS=dirs)).status == "ok"
        found = s.get("found")
        blob = repr(found)
        for token in (env_token, file_token, root_token):
            assert token not in blob
        assert "TRACEBOX_TEST_SECRET" not in blob
        for path in paths:
            assert found[path] in ("FileNotFoundError", "PermissionError"), (path, found[path])
        assert root_path.name not in found["/root"]
        assert found[str(tmp_path.parent)] == "FileNotFoundError"
        guard.check(rt)


@pytest.fixture
def host_app_dir() -> Iterator[Path]:
    """A host program's directory outside /tmp (which the sandbox covers with its own)."""
    path = Path("/root") / f".tracebox-test-app-{secrets.token_hex(4)}"
    path.mkdir(mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_files_beside_the_host_program_are_invisible(
    guard: Guard, host_app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host program's directory is on its ``sys.path`` (``python /srv/app/main.py``; pytest's
    rootdir; ``python -m`` run in a project). What lies beside it (``.env``, the journal, test
    oracles) is host data, not a package the sandbox needs."""
    env_file = host_app_dir / ".env"
    token = secrets.token_hex(16)
    env_file.write_text(f"OPENAI_API_KEY={token}\n")
    env_file.chmod(0o644)
    monkeypatch.syspath_prepend(str(host_app_dir))  # what `python /srv/app/main.py` does
    with Runtime(limits=LIMITS, pool_size=1) as rt:
        s = guard.track(rt.session())
        r = s.run(cell("open(__P__).read()", P=str(env_file)))
        assert token not in (r.value or ""), f"the sandbox read the host's {env_file}"
        assert_error(r, "FileNotFoundError")
        guard.check(rt)


# -- network ------------------------------------------------------------------------------------


class HostListeners:
    """A TCP server on host 127.0.0.1 and an abstract unix socket, recording connections."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.abstract_name = b"\0tracebox-test-" + secrets.token_hex(6).encode()
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.abstract_name)
        self.unix.listen()
        self.accepted: list[object] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._accept, args=(srv,), daemon=True)
            for srv in (self.tcp, self.unix)
        ]
        for t in self._threads:
            t.start()

    def _accept(self, server: socket.socket) -> None:
        server.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, addr = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(addr)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.tcp.close()
        self.unix.close()


@pytest.fixture
def listeners() -> Iterator[HostListeners]:
    ls = HostListeners()
    try:
        yield ls
    finally:
        ls.close()


UNREACHABLE = r"\[Errno (101|111|99)\] (Network is unreachable|Connection refused|Cannot assign)"


@pytest.mark.parametrize(
    ("code", "types", "message"),
    [
        pytest.param(
            "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)",
            ("OSError", "ConnectionRefusedError"),
            UNREACHABLE,
            id="tcp-internet",
        ),
        pytest.param(
            "import socket\nsocket.create_connection(('127.0.0.1', __PORT__), timeout=2)",
            ("OSError", "ConnectionRefusedError"),
            UNREACHABLE,
            id="tcp-host-loopback",
        ),
        pytest.param(
            "import socket\ns = socket.socket(socket.AF_INET6)\ns.settimeout(2)\n"
            "s.connect(('2606:4700:4700::1111', 80))",
            ("OSError", "ConnectionRefusedError"),
            UNREACHABLE,
            id="tcp-internet-ipv6",
        ),
        pytest.param(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.sendto(b'x', ('1.1.1.1', 53))",
            ("OSError",),
            UNREACHABLE,
            id="udp-internet",
        ),
        pytest.param(
            "import socket\nsocket.getaddrinfo('example.com', 80)",
            ("gaierror",),
            "",
            id="dns",
        ),
        pytest.param(
            "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect(__ABSTRACT__)",
            ("ConnectionRefusedError",),
            r"\[Errno 111\]",
            id="host-abstract-unix-socket",
        ),
        pytest.param(
            "import fcntl, socket, struct\ns = socket.socket()\n"
            "fcntl.ioctl(s, 0x8914, struct.pack('16sH', b'lo', 0x1 | 0x8))",
            ("PermissionError",),
            r"\[Errno 1\]",
            id="bring-up-loopback",
        ),
    ],
)
def test_network_is_unreachable(
    guard: Guard, listeners: HostListeners, code: str, types: tuple[str, ...], message: str
) -> None:
    s = guard.attacker()
    r = s.run(cell(code, PORT=listeners.port, ABSTRACT=listeners.abstract_name))
    assert_error(r, types, message)
    time.sleep(0.1)
    assert listeners.accepted == []
    guard.check()


# -- other processes ----------------------------------------------------------------------------


def test_cannot_see_or_signal_other_processes(guard: Guard, runtime: Runtime) -> None:
    s = guard.attacker()
    targets = {
        "sibling": guard.sibling._worker.pid,
        "host": os.getpid(),
        "template": runtime._template._proc.pid,
    }
    r = s.run(
        cell(
            """
            import ctypes, errno, os, signal
            libc = ctypes.CDLL(None, use_errno=True)
            seen = []
            for pid in range(1, 401):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    continue
                except PermissionError:  # there, but not ours to signal: the init
                    pass
                seen.append(pid)
            out = {"ppid": os.getppid(), "seen": seen}
            for name, pid in __TARGETS__.items():
                try:
                    os.kill(pid, signal.SIGKILL)
                    out[name] = "killed"
                except OSError as exc:
                    out[name] = type(exc).__name__
                try:
                    os.close(os.pidfd_open(pid))
                    out[name + "-pidfd"] = "opened"
                except OSError as exc:
                    out[name + "-pidfd"] = type(exc).__name__
                ctypes.set_errno(0)
                ret = libc.ptrace(ctypes.c_long(16), ctypes.c_int(pid), None, None)  # ATTACH
                out[name + "-ptrace"] = (ret, errno.errorcode.get(ctypes.get_errno()))
            out
            """,
            TARGETS=targets,
        )
    )
    out = literal(r)
    assert out["ppid"] == 1  # the sandbox's init
    assert out["seen"] == [1, 2]  # init and the worker
    for name in targets:
        assert out[name] == "ProcessLookupError"
        assert out[name + "-pidfd"] == "ProcessLookupError"
        assert out[name + "-ptrace"] == (-1, "EPERM")
    guard.check()


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(
            "import os, signal, time\nif os.fork() == 0:\n"
            "    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP, signal.SIGSEGV):\n"
            "        os.kill(1, sig)\n    os._exit(0)\nos.wait()\ntime.sleep(0.1)\n'survived'",
            id="child-signals-pid1",
        ),
        pytest.param(
            "import signal\nsignal.raise_signal(signal.SIGSTOP)\n'survived'", id="stop-self"
        ),
        pytest.param(
            "import os, signal\nos.kill(-1, signal.SIGKILL)\n'survived'", id="kill-minus-one"
        ),
    ],
)
def test_worker_survives_signals_from_inside(guard: Guard, code: str) -> None:
    s = guard.attacker()
    assert s.run("kept = 41").status == "ok"
    r = s.run(code)
    if r.status == "error":  # kill(-1) finds nobody else to signal
        assert_error(r, "ProcessLookupError")
    else:
        assert (r.status, r.value) == ("ok", "'survived'"), r
    assert s.run("kept + 1").value == "42"
    guard.check()


SYSCALL = """
    import ctypes, errno
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    ret = libc.syscall(*[ctypes.c_long(a) if isinstance(a, int) else a for a in __ARGS__])
    (ret, errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()))
"""
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x00020000, 0x40000000


@only_x86_64
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param((101, 16, 1, 0, 0), "EPERM", id="ptrace-attach-pid1"),
        pytest.param((101, 0, 0, 0, 0), "EPERM", id="ptrace-traceme"),
        pytest.param((310, 1, 0, 0, 0, 0, 0), "EPERM", id="process_vm_readv"),
        pytest.param((272, CLONE_NEWUSER), "EPERM", id="unshare-user"),
        pytest.param((272, CLONE_NEWNS), "EPERM", id="unshare-mount"),
        pytest.param((272, CLONE_NEWNET), "EPERM", id="unshare-net"),
        pytest.param((308, 0, 0), "EPERM", id="setns"),
        pytest.param((56, CLONE_NEWUSER | 17, 0, 0, 0, 0), "EPERM", id="clone-newuser"),
        pytest.param((435, 0, 0), "ENOSYS", id="clone3"),
        pytest.param((165, b"none", b"/workspace", b"tmpfs", 0, 0), "EPERM", id="mount-tmpfs"),
        pytest.param((165, b"none", b"/workspace", b"cgroup2", 0, 0), "EPERM", id="mount-cgroup"),
        pytest.param((166, b"/proc", 2), "EPERM", id="umount-proc"),
        pytest.param((161, b"/workspace"), "EPERM", id="chroot"),
        pytest.param((430, b"tmpfs", 0), "EPERM", id="fsopen"),
        pytest.param((428, -100, b"/", 0), "EPERM", id="open_tree"),
        pytest.param((250, 0, -3, 0), "EPERM", id="keyctl"),
        pytest.param((248, b"user", b"k", b"v", 1, -4), "EPERM", id="add_key"),
        pytest.param((425, 8, 0), "EPERM", id="io_uring_setup"),
        pytest.param((321, 0, 0, 0), "EPERM", id="bpf"),
        pytest.param((298, 0, 0, -1, -1, 0), "EPERM", id="perf_event_open"),
        pytest.param((323, 0), "EPERM", id="userfaultfd"),
        pytest.param((304, 0, 0, 0), "EPERM", id="open_by_handle_at"),
        pytest.param((175, 0, 0, b""), "EPERM", id="init_module"),
        pytest.param((246, 0, 0, 0, 0), "EPERM", id="kexec_load"),
        pytest.param((167, b"/workspace/swap", 0), "EPERM", id="swapon"),
        pytest.param((103, 3, 0, 0), "EPERM", id="syslog-read"),
        pytest.param((170, b"pwned", 5), "EPERM", id="sethostname"),
        pytest.param((135, 0x0040000), "EPERM", id="personality-no-aslr"),
        pytest.param((438, 0, 0, 0), "EPERM", id="pidfd_getfd"),
        pytest.param((16, 0, 0x5412, 0), "EPERM", id="ioctl-tiocsti"),
    ],
)
def test_dangerous_syscalls_are_denied(guard: Guard, args: tuple[Any, ...], expected: str) -> None:
    s = guard.attacker()
    assert literal(s.run(cell(SYSCALL, ARGS=args))) == (-1, expected)
    guard.check()


def test_os_unshare_is_denied(guard: Guard) -> None:
    """Python's own os.unshare (3.12+); on 3.11 the same call goes through ctypes."""
    s = guard.attacker()
    code = (
        "import ctypes, os\n"
        "if hasattr(os, 'unshare'):\n"
        "    os.unshare(os.CLONE_NEWUSER)\n"
        "elif ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:\n"
        "    e = ctypes.get_errno()\n"
        "    raise PermissionError(e, os.strerror(e))"
    )
    r = s.run(code)
    assert_error(r, "PermissionError", r"\[Errno 1\] Operation not permitted")
    guard.check()


@pytest.mark.parametrize(
    ("code", "types", "message"),
    [
        pytest.param("import os\nos.setuid(0)", ("OSError", "PermissionError"), "", id="setuid-0"),
        pytest.param(
            "import resource\nresource.setrlimit(resource.RLIMIT_NPROC, (10**6, 10**6))",
            ("ValueError",),
            "not allowed to raise maximum limit",
            id="raise-nproc",
        ),
        pytest.param(
            "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
            ("ValueError",),
            "not allowed to raise maximum limit",
            id="raise-address-space",
        ),
        pytest.param(
            "import os, stat\nos.mknod('/workspace/mem', stat.S_IFCHR | 0o666, os.makedev(1, 1))",
            ("PermissionError",),
            r"\[Errno 1\]",
            id="mknod-dev-mem",
        ),
        pytest.param(
            "import socket\nsocket.sethostname('pwned')",
            ("PermissionError",),
            r"\[Errno 1\]",
            id="sethostname",
        ),
        pytest.param(
            "import ctypes\nf = ctypes.c_int(5)\n"
            "with open('/proc/self/mem', 'r+b') as m:\n"
            "    m.seek(ctypes.addressof(f))\n    m.write((7).to_bytes(4, 'little'))",
            ("PermissionError",),
            r"\[Errno 13\]",
            id="write-proc-self-mem",
        ),
    ],
)
def test_privilege_changes_fail(
    guard: Guard, code: str, types: tuple[str, ...], message: str
) -> None:
    s = guard.attacker()
    assert_error(s.run(code), types, message)
    assert literal(s.run("__import__('os').getuid(), __import__('socket').gethostname()")) == (
        1000,
        "sandbox",
    )
    guard.check()


# -- escaping Python ----------------------------------------------------------------------------


def _python_homes_under_root() -> set[str]:
    """Entries of /root the sandbox must show for Python to work (e.g. ``.pyenv``)."""
    from tracebox.sandbox import rootfs

    return {p.split("/")[2] for p in rootfs.python_paths() if p.startswith("/root/")}


def test_libc_system_runs_confined(guard: Guard) -> None:
    s = guard.attacker()
    r = s.run(
        cell("""
            import ctypes
            libc = ctypes.CDLL(None)
            status = libc.system(
                b"id > /workspace/id.txt; cat /etc/shadow >> /workspace/id.txt 2>&1;"
                b" ls -A /root > /workspace/root.txt 2>&1"
            )
            (status, open("/workspace/id.txt").read(), open("/workspace/root.txt").read())
        """)
    )
    status, ident, root = literal(r)
    assert status == 0
    assert ident.startswith("uid=1000(sandbox) gid=1000(sandbox) groups=1000(sandbox)\n")
    assert "No such file or directory" in ident  # no /etc/shadow at all
    assert set(root.split()) <= _python_homes_under_root()
    guard.check()


def test_subclasses_escape_stays_confined(guard: Guard) -> None:
    s = guard.attacker()
    r = s.run(
        cell("""
            import os
            classes = {c.__name__: c for c in ().__class__.__base__.__subclasses__()}
            wrap_close = classes["_wrap_close"]
            popen = wrap_close.__init__.__globals__["popen"]
            via_popen = popen("id; cat /proc/1/environ 2>&1; ls -A /").read()
            Popen = next(
                c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "Popen"
            )
            p = Popen(["id", "-u"], stdout=-1)
            via_subprocess = p.communicate()[0].decode()
            (via_popen, via_subprocess, sorted(os.listdir("/")))
        """)
    )
    via_popen, via_subprocess, root = literal(r)
    lines = via_popen.splitlines()
    assert lines[0].startswith("uid=1000(sandbox)")
    assert "Permission denied" in lines[1]
    assert sorted(lines[2:]) == root
    assert via_subprocess == "1000\n"
    guard.check()


def test_setuid_binaries_do_not_elevate(guard: Guard) -> None:
    if not (os.path.exists("/usr/bin/mount") and os.stat("/usr/bin/mount").st_mode & 0o4000):
        pytest.skip("/usr/bin/mount is not setuid on this host")
    s = guard.attacker()
    r = s.run(
        cell("""
            import os, subprocess
            st = os.stat("/usr/bin/mount")
            p = subprocess.run(
                ["/usr/bin/mount", "-t", "tmpfs", "none", "/workspace"],
                capture_output=True, text=True, stdin=subprocess.DEVNULL,
            )
            status = dict(
                line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
            )
            (bool(st.st_mode & 0o4000), p.returncode, p.stderr, status["NoNewPrivs"])
        """)
    )
    setuid_bit, code, stderr, no_new_privs = literal(r)
    assert setuid_bit  # the bit is there, and ignored
    assert code != 0
    assert "must be superuser" in stderr
    assert no_new_privs == "1"
    guard.check()


ALLOWED_DEV = {"null", "zero", "full", "random", "urandom"} | {
    "fd", "stdin", "stdout", "stderr", "shm",
}  # fmt: skip


def test_no_device_nodes_but_the_harmless_ones(guard: Guard) -> None:
    s = guard.attacker()
    devices = ["/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/sda", "/dev/vda",
               "/dev/nvme0n1", "/dev/tty", "/dev/console", "/dev/kvm", "/dev/net/tun",
               "/dev/fuse", "/dev/ptmx", "/dev/loop0", "/dev/loop-control"]  # fmt: skip
    r = s.run(
        cell(
            """
            import os
            out = {}
            for d in __DEVICES__:
                try:
                    open(d, "rb").close()
                    out[d] = "opened"
                except OSError as exc:
                    out[d] = type(exc).__name__
            (out, sorted(os.listdir("/dev")), os.path.exists("/sys"))
            """,
            DEVICES=devices,
        )
    )
    opened, listing, has_sys = literal(r)
    assert set(opened.values()) == {"FileNotFoundError"}, opened
    assert set(listing) <= ALLOWED_DEV
    assert not has_sys
    guard.check()


WRITABLE_MOUNTS = {"/.session", "/workspace", "/tmp", "/var/tmp", "/proc"} | {
    f"/dev/{d}" for d in ("null", "zero", "full", "random", "urandom")
}


def test_mount_table_has_nothing_writable_from_the_host(guard: Guard) -> None:
    """/proc/self/mountinfo: every read-write mount is the session's own tmpfs, its procfs or a
    harmless device; everything shown from the host is read-only, nosuid and nodev."""
    s = guard.attacker()
    r = s.run(
        cell("""
            mounts = []
            for line in open("/proc/self/mountinfo"):
                pre, _, post = line.partition(" - ")
                f, t = pre.split(), post.split()
                mounts.append((f[4], f[5], t[0], t[1]))
            mounts
        """)
    )
    mounts = literal(r)
    assert mounts
    for point, options, fstype, _source in mounts:
        opts = set(options.split(","))
        if "rw" in opts:
            # under /tmp: host mounts (a venv there) covered by the session's own /tmp
            assert point in WRITABLE_MOUNTS or point.startswith("/tmp/"), (point, fstype)
        elif fstype not in ("proc", "tmpfs"):
            assert {"ro", "nosuid", "nodev"} <= opts, (point, options)
    guard.check()


def test_sessions_do_not_share_files_ipc_or_sockets(guard: Guard) -> None:
    s = guard.attacker()
    key, name = 0x7B0C5, b"\0tracebox-sibling-" + secrets.token_hex(4).encode()
    r = s.run(
        cell(
            """
            import ctypes, socket
            open("/workspace/planted", "w").write("x")
            open("/tmp/planted", "w").write("x")
            libc = ctypes.CDLL(None, use_errno=True)
            shm = libc.shmget(__KEY__, 4096, 0o1666)
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(__NAME__)
            listener.listen()
            shm
            """,
            KEY=key,
            NAME=name,
        )
    )
    assert literal(r) >= 0
    probe = cell(
        """
        import ctypes, errno, os, socket
        libc = ctypes.CDLL(None, use_errno=True)
        shm = libc.shmget(__KEY__, 0, 0)
        shm_errno = errno.errorcode.get(ctypes.get_errno())
        try:
            socket.socket(socket.AF_UNIX).connect(__NAME__)
            sock = "connected"
        except OSError as exc:
            sock = type(exc).__name__
        tmp = [n for n in os.listdir("/tmp") if n not in __PYTHON_IN_TMP__]
        (os.listdir("/workspace"), tmp, shm, shm_errno, sock)
        """,
        KEY=key,
        NAME=name,
        PYTHON_IN_TMP=PYTHON_IN_TMP,
    )
    assert literal(guard.sibling.run(probe)) == ([], [], -1, "ENOENT", "ConnectionRefusedError")
    guard.check()


# -- the run itself -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("def f(:\n    pass", id="invalid-syntax"),
        pytest.param("x = 1\x00", id="null-byte"),
        pytest.param("[" * 10**5 + "]" * 10**5, id="deep-nesting"),
    ],
)
def test_source_that_does_not_compile_is_an_error(guard: Guard, code: str) -> None:
    s = guard.attacker()
    assert s.run("kept = 41").status == "ok"
    assert_error(s.run(code), "SyntaxError")
    assert s.run("kept + 1").value == "42"
    guard.check()


def test_non_utf8_output_is_replaced(guard: Guard) -> None:
    s = guard.attacker()
    r = s.run(
        "import os, sys\nsys.stdout.buffer.write(b'a\\xff\\xfeb')\nsys.stdout.flush()\n"
        "os.write(2, b'c\\x80d')\nNone"
    )
    assert (r.status, r.stdout, r.stderr) == ("ok", "a\ufffd\ufffdb", "c\ufffdd")
    guard.check()


RECURSION_ERRORS = ("RecursionError", "MemoryError")


@pytest.mark.parametrize(
    ("code", "statuses", "types"),
    [
        pytest.param(
            "def f():\n    return f()\nf()", {"error"}, ("RecursionError",), id="default-limit"
        ),
        pytest.param(
            "import sys\nsys.setrecursionlimit(10**6)\nclass A:\n"
            "    def __repr__(self):\n        return repr(self)\nrepr(A())",
            {"error", "killed"},
            RECURSION_ERRORS,
            id="raised-limit-c-stack",
        ),
        pytest.param(
            "import sys\nsys.setrecursionlimit(10**6)\ndef f():\n    return f()\nf()",
            {"error", "memory", "timeout", "killed"},
            # 3.11 may end a recursion that ran out of memory with a SystemError
            (*RECURSION_ERRORS, "SystemError"),
            id="raised-limit-python-frames",
        ),
    ],
)
def test_deep_recursion(
    guard: Guard, code: str, statuses: set[str], types: tuple[str, ...]
) -> None:
    """A RecursionError; or, past the C stack, a crash reported with its signal; or, for
    Python frames on the heap, the memory or time limit."""
    s = guard.attacker(cpu_seconds=2)
    r = s.run(code)
    assert r.status in statuses, r
    assert r.error is not None
    if r.status == "error":
        assert r.error.type in types, r.error
    elif r.status == "killed":
        assert r.error.type == "WorkerDied"
        assert re.search(r"killed by SIG(SEGV|BUS|ABRT)", r.error.message), r.error
        assert_dead(s, r)
    elif r.status == "timeout":
        assert r.error.type == "TimeLimitExceeded"
    guard.check()


def test_huge_values(guard: Guard) -> None:
    big = {"memory_mb": 512, "cpu_seconds": 5, "wall_seconds": 10}  # room to pickle 100 MB
    s = guard.attacker(**big)
    r = s.run("'x' * 10**8")
    assert r.status == "ok" and r.value is not None
    cap = LIMITS.max_value_chars
    assert r.value.endswith(f"... [tracebox: repr truncated to {cap} of 100000000 chars]")
    assert len(r.value) < cap + 100
    assert s.run("blob = b'x' * 10**8").status == "ok"
    assert s.get("blob") == b"x" * 10**8
    small = guard.attacker(**big, max_transfer_bytes=50 * 2**20)
    assert small.run("blob = b'x' * 10**8").status == "ok"
    with pytest.raises(ValueTooLarge, match="max_transfer_bytes"):
        small.get("blob")
    assert small.run("len(blob)").value == "100000000"
    guard.check()


BOMB = """
    class Bomb:
        def __init__(self, f, args):
            self.f, self.args = f, args
        def __reduce__(self):
            return (self.f, self.args)
"""


@pytest.mark.parametrize(
    "make",
    [
        pytest.param("Bomb(bytes, (64 * 2**20,))", id="bytes-of-int"),
        pytest.param("Bomb(bytearray, (64 * 2**20,))", id="bytearray-of-int"),
        pytest.param("Bomb(list, (range(10**6),))", id="list-of-range"),
    ],
)
def test_get_cannot_make_the_host_allocate_past_the_limit(guard: Guard, make: str) -> None:
    """A few bytes of pickle must not build a value larger than ``max_transfer_bytes`` on the
    host: that memory is outside every limit of the sandbox."""
    s = guard.attacker(max_transfer_bytes=2**20)
    assert s.run(cell(BOMB) + f"bomb = {make}").status == "ok"
    with pytest.raises((ValueTooLarge, UnpicklableValue)):
        s.get("bomb")
    guard.check()


def test_get_refuses_to_call_host_functions(guard: Guard, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    s = guard.attacker()
    code = cell(BOMB) + cell("import os\nbomb = Bomb(os.system, (__CMD__,))", CMD=f"touch {marker}")
    assert s.run(code).status == "ok"
    with pytest.raises(UnpicklableValue, match="refusing to rebuild"):
        s.get("bomb")
    assert not marker.exists()
    guard.check()


# -- the channel to the host and the architecture -----------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        pytest.param("import os\nos.close(3)", "WorkerDied", id="close"),
        pytest.param("import os\nos.write(3, b'\\xff' * 100)", "ProtocolViolation", id="garbage"),
        pytest.param(
            "import os, struct\nos.write(3, struct.pack('<II', 2**31, 0))",
            "ProtocolViolation",
            id="huge-frame",
        ),
        pytest.param(
            "import os, struct\nos.write(3, struct.pack('<II', 5, 0) + b'hello')",
            "ProtocolViolation",
            id="not-json",
        ),
        pytest.param(
            "import os\nos.dup2(os.open('/dev/null', os.O_RDWR), 3)",
            "WorkerDied",
            id="dup2-over-channel",
        ),
        pytest.param(
            "import socket\nsocket.socket(fileno=3).shutdown(socket.SHUT_RDWR)",
            "WorkerDied",
            id="shutdown",
        ),
    ],
)
def test_tampering_with_the_channel_kills_only_the_session(
    guard: Guard, code: str, kind: str
) -> None:
    s = guard.attacker()
    r = s.run(code)
    assert r.status == "killed", r
    assert r.error is not None and r.error.type == kind
    assert "the session is dead" in r.error.message
    assert_dead(s, r)
    guard.check()


I386_GETPID = "0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3"  # mov eax, 20; int 0x80; ret


@only_x86_64
@pytest.mark.parametrize(
    "code",
    [
        pytest.param(
            "import ctypes, mmap\n"
            "m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            f"m.write(bytes([{I386_GETPID}]))\n"
            "ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))()",
            id="i386-int-0x80",
        ),
        pytest.param("import ctypes\nctypes.CDLL(None).syscall(0x40000000 + 39)", id="x32-getpid"),
    ],
)
def test_foreign_syscall_abis_kill_the_worker(guard: Guard, code: str) -> None:
    """A filter written for x86_64 would not see 32-bit or x32 calls: they kill the process."""
    s = guard.attacker()
    r = s.run(code)
    assert r.status == "killed", r
    assert r.error is not None and "killed by SIGSYS" in r.error.message
    assert_dead(s, r)
    guard.check()
