"""Sessions end to end: real confined workers, persistent state, limits, transfer, lifecycle."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from tracebox import (
    Limits,
    NameNotFound,
    Runtime,
    RuntimeClosed,
    SessionBusy,
    SessionClosed,
    SessionDead,
    SessionState,
    TransferError,
    UnpicklableValue,
    ValueTooLarge,
)

FAST = Limits(cpu_seconds=1, wall_seconds=3, grace_seconds=0.3)


@pytest.fixture(scope="module")
def rt() -> Iterator[Runtime]:
    with Runtime(limits=FAST, pool_size=2) as runtime:
        yield runtime


def test_the_issue_example(rt: Runtime) -> None:
    with rt.session(limits=Limits(cpu_seconds=5, wall_seconds=10, memory_mb=512)) as s:
        r = s.run("import math\nx = math.sqrt(16)\nprint(x)\nx * 2")
        assert (r.status, r.stdout, r.stderr, r.value, r.error) == ("ok", "4.0\n", "", "8.0", None)
        assert r.cpu_seconds >= 0 and r.wall_seconds > 0 and r.session_alive
        s.put("data", {"a": [1, 2]})
        assert s.run("data['a'].append(x); data").value == "{'a': [1, 2, 4.0]}"
        assert s.get("x") == 4.0
        assert s.get("data") == {"a": [1, 2, 4.0]}


def test_state_persists_only_when_stateful(rt: Runtime) -> None:
    with rt.session() as s:
        s.run("def f(n):\n    return n + counter\ncounter = 10")
        assert s.run("f(5)").value == "15"
    with rt.session(stateful=False) as s:
        assert s.run("y = 1").status == "ok"
        r = s.run("y")
        assert r.status == "error"
        assert r.error is not None and r.error.type == "NameError"


def test_user_exceptions_are_data_with_user_tracebacks(rt: Runtime) -> None:
    with rt.session() as s:
        r = s.run("def g():\n    raise ValueError('bad input')\ng()")
        assert r.status == "error" and r.error is not None
        assert (r.error.type, r.error.message) == ("ValueError", "bad input")
        assert "tracebox" not in r.error.traceback
        assert "line 2, in g" in r.error.traceback
        assert s.run("raise SystemExit(2)").error.type == "SystemExit"  # type: ignore[union-attr]
        assert s.run("1").value == "1"


def test_stderr_and_mixed_output(rt: Runtime) -> None:
    with rt.session() as s:
        r = s.run(
            "import sys, os\nprint('out')\nprint('err', file=sys.stderr)\nos.write(1, b'fd\\n')"
        )
        assert r.stdout == "out\nfd\n"
        assert r.stderr == "err\n"


def test_output_is_capped_with_marker() -> None:
    with Runtime(limits=Limits(max_output_bytes=100), pool_size=0) as rt, rt.session() as s:
        r = s.run("print('a' * 1000)")
        assert r.stdout.startswith("a" * 100 + "\n[tracebox: stdout truncated: 901 more bytes")


def test_on_output_streams_while_running(rt: Runtime) -> None:
    seen: list[tuple[float, str, str]] = []
    with rt.session() as s:
        code = "import time, sys\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.2)\nprint('e', file=sys.stderr)"  # noqa: E501
        start = time.monotonic()
        r = s.run(
            code, on_output=lambda stream, text: seen.append((time.monotonic(), stream, text))
        )
    assert r.stdout == "0\n1\n2\n"
    assert "".join(t for _, st, t in seen if st == "stdout") == "0\n1\n2\n"
    assert ("stderr", "e\n") in [(st, t) for _, st, t in seen]
    assert seen[0][0] - start < r.wall_seconds - 0.3  # the first chunk arrived before the end


def test_cpu_timeout_interrupts_and_keeps_state(rt: Runtime) -> None:
    with rt.session() as s:
        s.run("kept = 'yes'")
        r = s.run("n = 0\nwhile True:\n    n += 1")
        assert r.status == "timeout" and r.session_alive
        assert r.error is not None and "CPU time limit of 1 s" in r.error.message
        # measured by the host's cgroup, not the worker's timer: under a loaded machine's
        # steal the two drift apart a little, so only check it is the right order
        assert r.cpu_seconds >= 0.5
        assert s.run("kept, n > 0").value == "('yes', True)"
        assert s.state is SessionState.READY


def test_wall_timeout_interrupts_sleep(rt: Runtime) -> None:
    with rt.session() as s:
        r = s.run("import time\ntime.sleep(30)")
        assert r.status == "timeout" and r.session_alive
        assert r.error is not None and "wall-clock limit of 3 s" in r.error.message
        assert 2.9 < r.wall_seconds < 10
        assert s.run("1 + 1").value == "2"


def test_ignoring_the_interrupt_kills_the_session_only(rt: Runtime) -> None:
    sibling = rt.session()
    sibling.run("v = 7")
    with rt.session() as s:
        code = "import signal\nfor sig in (signal.SIGINT, signal.SIGPROF):\n    signal.signal(sig, signal.SIG_IGN)\nwhile True: pass"  # noqa: E501
        r = s.run(code)
        assert r.status == "timeout" and not r.session_alive
        assert r.error is not None and "ignored the interrupt" in r.error.message
        assert s.state is SessionState.DEAD
        with pytest.raises(SessionDead):
            s.run("1")
        with pytest.raises(SessionDead):
            s.get("v")
    assert sibling.run("v").value == "7"
    sibling.close()


def test_worker_exit_is_reported_as_killed(rt: Runtime) -> None:
    with rt.session() as s:
        r = s.run("print('bye', flush=True)\nimport os\nos._exit(3)")
        assert r.status == "killed" and not r.session_alive
        assert r.stdout == "bye\n"
        assert r.error is not None and "exited with status 3" in r.error.message
        assert r.exit_signal is None
    with rt.session() as s:
        r = s.run("import ctypes\nctypes.string_at(0)")
        assert r.status == "killed"
        assert r.error is not None and "SIGSEGV" in r.error.message
        assert r.exit_signal == "SIGSEGV"


def test_a_worker_killed_from_outside_says_so(rt: Runtime) -> None:
    with rt.session() as s:
        killer = threading.Timer(0.3, lambda: os.kill(s._worker.pid, signal.SIGKILL))
        killer.start()
        r = s.run("import time\ntime.sleep(5)")
        killer.join()
        assert (r.status, r.exit_signal) == ("killed", "SIGKILL")
        assert r.error is not None and r.error.type == "WorkerDied"


def test_memory_error_keeps_the_session(rt: Runtime) -> None:
    with rt.session() as s:
        s.run("small = [1]")
        r = s.run("big = bytearray(4 * 1024**3)")
        assert r.status == "memory" and r.session_alive
        assert r.error is not None and r.error.type == "MemoryError"
        assert s.run("small").value == "[1]"


def test_peak_memory_is_measured(rt: Runtime) -> None:
    with rt.session() as s:
        r = s.run("b = bytearray(64 * 1024**2)\nb[::4096] = b'x' * (len(b) // 4096)")
        assert r.peak_memory_mb is not None and r.peak_memory_mb >= 60
        s.run("del b")  # the peak of that run still includes b: it is reset at the start
        r = s.run("1")
        assert r.peak_memory_mb is not None and r.peak_memory_mb < 60


def test_transfer_errors_are_typed(rt: Runtime) -> None:
    with rt.session() as s:
        with pytest.raises(UnpicklableValue, match="cannot pickle"):
            s.put("f", lambda: 1)
        with pytest.raises(TransferError, match="not a valid Python name"):
            s.put("not a name", 1)
        with pytest.raises(NameNotFound):
            s.get("missing")
        s.run("import threading\nlock = threading.Lock()\nclass Point:\n    x = 1\np = Point()")
        with pytest.raises(UnpicklableValue, match="cannot be pickled in the session"):
            s.get("lock")
        with pytest.raises(UnpicklableValue, match=r"refusing to rebuild __main__\.Point"):
            s.get("p")
        assert s.run("1 + 1").value == "2"  # none of that hurt the session


def test_large_values_respect_the_transfer_limit() -> None:
    limits = Limits(max_transfer_bytes=2 << 20)
    with Runtime(limits=limits, pool_size=0) as rt, rt.session() as s:
        s.run("ok = b'x' * (1 << 20)\ntoo_big = b'x' * (3 << 20)")
        assert s.get("ok") == b"x" * (1 << 20)
        with pytest.raises(ValueTooLarge, match=r"Limits\.max_transfer_bytes"):
            s.get("too_big")
        with pytest.raises(ValueTooLarge):
            s.put("also_big", b"y" * (3 << 20))
        s.put("fits", b"y" * (1 << 20))
        assert s.run("len(fits)").value == str(1 << 20)


def test_put_of_a_value_the_sandbox_cannot_rebuild(rt: Runtime) -> None:
    with rt.session() as s:
        s.put("ok", 1)
        s.put("cls", threading.Event)  # pickled by reference: the sandbox can import it
        with pytest.raises(UnpicklableValue, match="could not unpickle"):
            s.put("c", _HostOnly())
        assert s.run("ok").value == "1"


class _HostOnly:
    """Pickled by reference to this test module, which the sandbox cannot import."""


def test_one_request_at_a_time(rt: Runtime) -> None:
    with rt.session() as s:
        t = threading.Thread(target=s.run, args=("import time\ntime.sleep(0.5)",))
        t.start()
        while s.state is not SessionState.RUNNING:
            time.sleep(0.01)
        with pytest.raises(SessionBusy):
            s.run("1")
        t.join()
        assert s.run("2").value == "2"


def test_lifecycle(rt: Runtime) -> None:
    s = rt.session()
    assert s in rt.sessions()
    s.close()
    s.close()  # idempotent
    assert s.state is SessionState.CLOSED and s not in rt.sessions()
    with pytest.raises(SessionClosed):
        s.run("1")
    with pytest.raises(TypeError):
        rt.session().run(b"1")  # type: ignore[arg-type]


def test_closing_the_runtime_closes_its_sessions() -> None:
    rt = Runtime(pool_size=1)
    s = rt.session()
    rt.close()
    assert s.state is SessionState.CLOSED
    with pytest.raises(RuntimeClosed):
        rt.session()
    rt.close()


def test_sessions_with_other_limits_start_on_demand(rt: Runtime) -> None:
    with rt.session(limits=Limits(memory_mb=128, disk_mb=2)) as s:
        r = s.run("import resource\nresource.getrlimit(resource.RLIMIT_AS)[0] >> 20")
        assert r.value == "128"
        r = s.run("open('f', 'wb').write(b'x' * (3 << 20))")
        assert r.status == "error" and r.error is not None
        assert r.error.type == "OSError"


def test_a_forged_reply_kills_the_session_instead_of_desynchronising_it(rt: Runtime) -> None:
    with rt.session() as s:
        forge = (
            "import os\nfrom tracebox.worker import protocol\n"
            "os.write(3, b''.join(protocol.encode({'op': 'reply', 'seq': 999, 'status': 'ok'})))"
        )
        r = s.run(forge)
        assert r.status == "killed"
        assert r.error is not None and "broke the protocol" in r.error.message
        assert s.state is SessionState.DEAD


def test_interrupt_stops_the_running_code_like_ctrl_c(rt: Runtime) -> None:
    with rt.session() as s:
        s.interrupt()  # idle: nothing to interrupt, nothing happens
        s.run("kept = 1")
        code = "import time\nwhile True:\n    time.sleep(0.01)"
        done = threading.Event()

        def press_ctrl_c() -> None:  # until the run is seen running, however loaded the host
            while not done.is_set():
                s.interrupt()
                time.sleep(0.05)

        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        r = s.run(code)
        done.set()
        presser.join()
        assert r.status == "error" and r.error is not None
        assert r.error.type == "KeyboardInterrupt"
        assert 'File "<cell-2>", line 3' in r.error.traceback
        assert s.run("kept").value == "1"


def test_a_timeout_shows_where_the_code_was(rt: Runtime) -> None:
    with rt.session() as s:
        r = s.run("def spin():\n    while True:\n        pass\nspin()")
        assert r.status == "timeout" and r.error is not None
        assert "in spin" in r.error.traceback


def test_lone_surrogates_in_code_and_output_are_not_fatal(rt: Runtime) -> None:
    with rt.session() as s:
        r = s.run("x = '\ud800'")  # Python itself cannot compile a lone surrogate
        assert r.status == "error" and r.error is not None
        assert r.error.type == "UnicodeEncodeError"
        assert r.error.traceback.startswith("UnicodeEncodeError")  # no frames: it never ran
        r = s.run("x = '\\ud800'\nprint(x)\nraise ValueError(x)")
        assert r.status == "error"
        assert r.stdout == "\\ud800\n"
        assert r.error is not None and r.error.message == "\ud800"
        assert s.run("x").value == "'\\ud800'"
