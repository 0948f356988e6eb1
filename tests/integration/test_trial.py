"""``Session.trial``: cells and calls in a throwaway copy of the session's worker.

Every test checks what the trial returned and that the session itself was left as it was:
its namespace, its files (under /tmp and the working directory), its processes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tracebox import Limits, Session
from tracebox.errors import CheckpointRefused, NameNotFound, SessionDead
from tracebox.types import Trial


@pytest.fixture(scope="module")
def runtime_limits() -> Limits:
    return Limits(cpu_seconds=1, wall_seconds=10)


SETUP = """\
import os

counter = 10

def add(a, b=0):
    print("adding")
    return a + b

def append_to(xs, x):
    xs.append(x)
    return xs

def boom(x):
    raise ValueError(f"bad {x}")

def make_lambda():
    return lambda: 1

class Point:
    pass

def make_point():
    return Point()

def spin():
    while True:
        pass

def nap():
    import time
    time.sleep(100)

def bump():
    global counter
    counter += 1
    return counter

def files_state():
    '''Every file and directory under /tmp and the working directory (not what is mounted
    there, as the host's Python may be): mode, contents.'''
    found = {}
    for root in ("/tmp", os.getcwd()):
        dev = os.stat(root).st_dev
        for here, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if os.lstat(os.path.join(here, d)).st_dev == dev]
            for name in dirs:
                path = os.path.join(here, name)
                found[path] = (os.lstat(path).st_mode, None)
            for name in names:
                path = os.path.join(here, name)
                with open(path, "rb") as f:
                    found[path] = (os.lstat(path).st_mode, f.read())
    return found

def other_processes():
    '''Live processes of the session's pid namespace, but for this one.'''
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if state not in (b"Z", b"X"):
            found.append(int(name))
    return sorted(found)

def running(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except OSError:
        return False

os.makedirs("/tmp/dir", exist_ok=True)
for path, text in [("/tmp/keep.txt", "tmp before"), ("/tmp/dir/inner.txt", "inner"),
                   ("/tmp/doomed.txt", "doomed"), ("keep.txt", "work before"),
                   ("doomed.txt", "work doomed")]:
    with open(path, "w") as f:
        f.write(text)
"""


@pytest.fixture
def s(session: Session) -> Session:
    r = session.run(SETUP)
    assert r.ok, r.error
    return session


def call(
    name: str, *args: object, **kwargs: object
) -> tuple[str, tuple[object, ...], dict[str, object]]:
    return (name, args, kwargs)


def state_of(s: Session) -> tuple[object, object, object]:
    """What must not change: a variable, the files, the other processes."""
    return s.get("counter"), s.call("files_state").returned, s.call("other_processes").returned


def assert_usable(s: Session, before: tuple[object, object, object]) -> None:
    assert s.run("1 + 1").value == "2"
    assert state_of(s) == before


# -- results -------------------------------------------------------------------------------


def test_cells_give_run_results(s: Session) -> None:
    t = s.trial(["a = 6", "a * 7", "print('x')", "None"])
    assert isinstance(t, Trial)
    assert (t.status, t.ok, t.error, t.session_alive) == ("ok", True, None, True)
    assert [(r.status, r.value) for r in t.runs] == [
        ("ok", None),
        ("ok", "42"),
        ("ok", None),
        ("ok", None),
    ]
    assert t.calls == ()
    with pytest.raises(NameNotFound):
        s.get("a")


@pytest.mark.parametrize(
    ("bad", "kind"),
    [("1 / 0", "ZeroDivisionError"), ("def broken(:\n    pass", "SyntaxError")],
)
def test_a_failing_cell_ends_the_trial_there(s: Session, bad: str, kind: str) -> None:
    t = s.trial(["first = 1", bad, "after = 1"], [call("add", 1, 2)])
    assert t.status == "ok" and t.error is None
    assert [r.status for r in t.runs] == ["ok", "error"]
    err = t.runs[1].error
    assert err is not None and err.type == kind
    assert t.calls == ()  # nothing after the failing cell ran
    assert t.stdout == ""  # add() would have printed


def test_calls_give_call_results(s: Session) -> None:
    xs = [1]
    t = s.trial(
        [],
        [
            call("add", [1], b=[2]),
            call("append_to", xs, 2),
            call("boom", 7),
            call("nothing_here"),
            call("make_lambda"),
            call("make_point"),
            call("add", 3, 4),  # errors are results: the calls go on
        ],
    )
    assert t.status == "ok" and t.error is None
    assert [c.status for c in t.calls] == ["ok", "ok", "error", "error", "error", "error", "ok"]
    assert [c.returned for c in t.calls] == [[1, 2], [1, 2], None, None, None, None, 7]
    assert t.calls[0].value == "[1, 2]"
    assert xs == [1]  # the copy worked on a copy of the argument
    errors = [c.error for c in t.calls[2:6]]
    assert all(e is not None for e in errors)
    assert [(e.type, e.message) for e in errors if e is not None][:2] == [
        ("ValueError", "bad 7"),
        ("NameError", "name 'nothing_here' is not defined"),
    ]
    assert [e.type for e in errors if e is not None][2:] == [
        "UntransferableValue",
        "UntransferableValue",
    ]
    assert t.runs == ()


def test_calls_see_what_the_cells_defined(s: Session) -> None:
    t = s.trial(
        ["def triple(x):\n    return 3 * x", "counter = 0"], [call("triple", 5), call("bump")]
    )
    assert [c.returned for c in t.calls] == [15, 1]
    with pytest.raises(NameNotFound):
        s.call("triple", 5)


def test_a_call_that_reaches_a_limit_ends_the_trial(s: Session) -> None:
    t = s.trial([], [call("add", 1), call("spin"), call("add", 2)], cpu_seconds=0.3)
    assert t.status == "ok"
    assert [c.status for c in t.calls] == ["ok", "timeout"]
    err = t.calls[1].error
    assert err is not None and err.type == "TimeLimitExceeded"


def test_bad_arguments_are_refused_before_anything_runs(s: Session) -> None:
    with pytest.raises(TypeError):
        s.trial([b"1"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        s.trial([], [("add", [1], {})])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        s.trial([], [(1, (), {})])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="for one, pass"):
        s.trial("counter = 0")
    with pytest.raises(TypeError, match="not 'add'"):
        s.trial([], ("add", (1,), {}))  # type: ignore[arg-type]
    assert s.run("counter").value == "10"


# -- the session is left as it was ---------------------------------------------------------


def test_the_namespace_is_unchanged(s: Session) -> None:
    before = state_of(s)
    t = s.trial(
        ["counter = 99", "import json\ndef only_in_trial():\n    return counter", "del add"],
        [call("only_in_trial"), call("bump")],
    )
    assert [c.returned for c in t.calls] == [99, 100]
    assert s.get("counter") == 10
    with pytest.raises(NameNotFound):
        s.call("only_in_trial")
    assert s.call("add", 1, 2).returned == 3
    assert s.run("'json' in dir()").value == "False"
    assert_usable(s, before)


CHANGE_FILES = """\
import os, shutil
with open("/tmp/keep.txt", "w") as f:
    f.write("tmp changed by the trial")
with open("keep.txt", "a") as f:
    f.write(" and more")
os.remove("/tmp/doomed.txt")
os.remove("doomed.txt")
shutil.rmtree("/tmp/dir")
os.makedirs("/tmp/newdir/sub")
for path in ("/tmp/new.txt", "new.txt", "/tmp/newdir/sub/deep.txt"):
    with open(path, "w") as f:
        f.write("new")
os.chmod("keep.txt", 0o600)
os.symlink("/tmp/new.txt", "link")
os.rename("new.txt", "renamed.txt")
# only the test's names: /tmp may also hold the host's Python (a checkout under /tmp)
ours = {"keep.txt", "doomed.txt", "dir", "newdir", "new.txt"}
sorted(ours.intersection(os.listdir("/tmp"))), sorted(os.listdir("."))
"""


def test_files_are_put_back(s: Session) -> None:
    before = state_of(s)
    t = s.trial([CHANGE_FILES], [call("files_state")])
    assert t.status == "ok", t
    assert t.runs[0].value == (
        "(['keep.txt', 'new.txt', 'newdir'], ['keep.txt', 'link', 'renamed.txt'])"
    )
    seen = t.calls[0].returned
    assert isinstance(seen, dict)
    assert seen["/tmp/keep.txt"][1] == b"tmp changed by the trial"
    assert "/tmp/doomed.txt" not in seen
    assert s.run("os.path.lexists('link'), os.path.exists('/tmp/new.txt')").value == (
        "(False, False)"
    )
    assert s.run("open('/tmp/keep.txt').read(), open('keep.txt').read()").value == (
        "('tmp before', 'work before')"
    )
    assert_usable(s, before)


def test_a_same_size_rewrite_right_after_a_write_is_undone(s: Session) -> None:
    """The worker puts files back only if it sees a change (``snapshot.changed``): a
    rewrite of the same size within one clock tick of the last write must still show."""
    for i in range(20):
        new, old = f"{i:04d}", f"{i + 1:04d}"
        assert s.run(f"open('/tmp/tick', 'w').write({new!r})").ok
        t = s.trial([f"open('/tmp/tick', 'w').write({old!r})\nopen('/tmp/tick').read()"])
        assert t.runs[0].value == repr(old)
        assert s.run("open('/tmp/tick').read()").value == repr(new), f"round {i}"


def test_open_descriptors_and_shared_mappings_are_as_they_were(s: Session) -> None:
    assert s.run(
        "import mmap\n"
        "raw = open('/tmp/raw', 'wb+', buffering=0)\n"
        "raw.write(b'0123456789')\n"
        "raw.seek(2)\n"
        "mf = open('/tmp/mapped', 'w+b')\n"
        "mf.write(b'a' * 4096)\n"
        "mf.flush()\n"
        "m = mmap.mmap(mf.fileno(), 4096)\n"
        "m[0:1] = b'x'"
    ).ok
    t = s.trial(["raw.read(3), raw.tell()", "m[0:2] = b'ZZ'\nm[0:3]"])
    assert [r.value for r in t.runs] == ["(b'234', 5)", "b'ZZa'"]
    # the copy shared the file offset and the mapping with the worker: both are put back
    assert s.run("raw.read(2), raw.tell()").value == "(b'23', 4)"
    assert s.run("m[0:3], open('/tmp/mapped', 'rb').read(3)").value == "(b'xaa', b'xaa')"


SPAWNERS = {
    "fork": (
        "import os, time\npid = os.fork()\nif pid == 0:\n    time.sleep(100)\n    os._exit(0)\npid"
    ),
    "popen": "import subprocess\nsubprocess.Popen(['sleep', '100']).pid",
    "daemon": (  # a grandchild, orphaned, in a session of its own
        "import os, time\n"
        "r, w = os.pipe()\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.write(w, str(os.getpid()).encode())\n"
        "        time.sleep(100)\n"
        "    os._exit(0)\n"
        "os.close(w)\n"
        "int(os.read(r, 32))"
    ),
}


@pytest.mark.parametrize("how", sorted(SPAWNERS))
def test_processes_started_in_a_trial_are_gone(s: Session, how: str) -> None:
    before = state_of(s)
    t = s.trial([SPAWNERS[how]], [call("other_processes")])
    assert t.status == "ok", t
    pid = int(t.runs[0].value or "0")
    others = t.calls[0].returned
    assert isinstance(others, list) and pid in others  # it ran while the copy did
    assert s.call("running", pid).returned is False
    assert_usable(s, before)


# -- independence ---------------------------------------------------------------------------


def test_trials_from_one_state_are_independent(s: Session) -> None:
    before = state_of(s)
    trials = [s.trial(["counter += 1\ncounter"], [call("bump"), call("bump")]) for _ in range(5)]
    assert {t.runs[0].value for t in trials} == {"11"}
    assert {tuple(c.returned for c in t.calls) for t in trials} == {(12, 13)}
    assert_usable(s, before)


# -- output ---------------------------------------------------------------------------------


def test_output_lands_in_the_trial_and_the_callback(s: Session) -> None:
    seen: list[tuple[str, str]] = []
    t = s.trial(
        ["print('from a cell')", "import sys\nprint('oops', file=sys.stderr)"],
        [call("add", 1)],
        on_output=lambda stream, text: seen.append((stream, text)),
    )
    assert t.status == "ok"
    assert t.stdout == "from a cell\nadding\n"
    assert t.stderr == "oops\n"
    assert "".join(text for stream, text in seen if stream == "stdout") == t.stdout
    assert "".join(text for stream, text in seen if stream == "stderr") == t.stderr
    assert all(r.stdout == r.stderr == "" for r in (*t.runs, *t.calls))
    assert s.run("print('session')").stdout == "session\n"  # nothing left over


# -- limits ---------------------------------------------------------------------------------


def test_an_endless_cell_times_out_and_the_session_lives(s: Session) -> None:
    before = state_of(s)
    t = s.trial(["counter = 0", "while True:\n    pass", "after = 1"])
    assert (t.status, t.session_alive) == ("ok", True)
    assert [r.status for r in t.runs] == ["ok", "timeout"]
    err = t.runs[-1].error
    assert err is not None and err.type == "TimeLimitExceeded"
    assert "CPU time limit of 1 s" in err.message
    assert_usable(s, before)


STUBBORN = """\
while True:
    try:
        while True:
            pass
    except KeyboardInterrupt:
        pass
"""


@pytest.mark.parametrize("limit", ["cpu", "wall"])
def test_a_copy_that_ignores_the_interrupt_is_killed_and_the_session_lives(
    s: Session, limit: str
) -> None:
    """The worker kills the copy half a grace period after passing on the interrupt, before
    the host would kill the worker: the trial times out, the session is as it was."""
    before = state_of(s)
    code = (
        STUBBORN
        if limit == "cpu"
        else STUBBORN.replace("pass\n    except", "time.sleep(1)\n    except")
    )
    cells = ["counter = 0", "import time\n" + code]
    t = s.trial(cells, cpu_seconds=0.5) if limit == "cpu" else s.trial(cells, wall_seconds=0.5)
    assert (t.status, t.session_alive) == ("timeout", True), t.error
    assert t.error is not None and t.error.type == "TimeLimitExceeded"
    assert f"the {limit} time limit" in t.error.message
    assert [r.status for r in t.runs] == ["ok"]
    assert_usable(s, before)


def test_the_trials_own_cpu_limit(s: Session) -> None:
    before = state_of(s)
    t = s.trial(["while True:\n    pass"], cpu_seconds=0.5)
    assert t.status == "ok"
    assert t.runs[-1].status == "timeout"
    err = t.runs[-1].error
    assert err is not None and "CPU time limit of 0.5 s" in err.message
    assert_usable(s, before)


def test_the_cpu_limit_is_the_whole_trials(s: Session) -> None:
    burn = "import time\nt0 = time.process_time()\nwhile time.process_time() - t0 < 0.4:\n    pass"
    t = s.trial([burn, burn], cpu_seconds=0.6)
    assert [r.status for r in t.runs] == ["ok", "timeout"]


@pytest.mark.parametrize(
    ("code", "status", "kind", "sig"),
    [
        ("bytearray(10**11)", "ok", None, None),  # the cell's own status is "memory"
        ("import os\nos._exit(3)", "killed", "WorkerDied", None),
        ("import os\nos.kill(os.getpid(), 9)", "killed", "WorkerDied", "SIGKILL"),
    ],
)
def test_a_copy_that_fails_leaves_the_session_alive(
    s: Session, code: str, status: str, kind: str | None, sig: str | None
) -> None:
    before = state_of(s)
    t = s.trial(["counter = -1", code, "after = 1"], [call("add", 1)])
    assert (t.status, t.exit_signal, t.session_alive) == (status, sig, True)
    assert t.runs[0].status == "ok"
    if kind is None:
        assert t.error is None
        assert [r.status for r in t.runs] == ["ok", "memory"]
    else:
        assert t.error is not None and t.error.type == kind
        assert len(t.runs) == 1  # the step the copy died in has no result
    assert t.calls == ()
    assert_usable(s, before)
    assert s.trial(["counter"]).runs[0].value == "10"  # trials go on, from the same state


def test_os_exit_reports_its_status(s: Session) -> None:
    t = s.trial(["import os\nos._exit(3)"])
    assert t.status == "killed" and t.runs == ()
    assert t.error is not None and "status 3" in t.error.message


def test_a_wall_clock_limit_stops_a_cell_as_a_timeout(s: Session) -> None:
    before = state_of(s)
    t = s.trial(["import time\ntime.sleep(100)"], wall_seconds=0.5)
    assert t.status == "ok" and t.session_alive
    last = t.runs[-1]
    assert last.error is not None
    assert (last.status, last.error.type) == ("timeout", "TimeLimitExceeded"), last.error
    assert_usable(s, before)


def test_a_wall_clock_limit_stops_a_call_as_a_timeout(s: Session) -> None:
    before = state_of(s)
    t = s.trial([], [call("add", 1), call("nap"), call("add", 2)], wall_seconds=0.5)
    assert t.status == "ok", t.error
    assert [c.status for c in t.calls] == ["ok", "timeout"]
    assert_usable(s, before)


def test_an_interrupt_reaches_the_copy(s: Session) -> None:
    before = state_of(s)
    timer = threading.Timer(0.3, s.interrupt)
    timer.start()
    t = s.trial(["import time\ntime.sleep(100)"])
    timer.join()
    assert t.status == "ok"
    err = t.runs[-1].error
    assert err is not None and (t.runs[-1].status, err.type) == ("error", "KeyboardInterrupt")
    assert_usable(s, before)


def test_an_interrupted_call_does_not_make_the_trial_killed(s: Session) -> None:
    before = state_of(s)
    timer = threading.Timer(0.3, s.interrupt)
    timer.start()
    t = s.trial([], [call("nap"), call("add", 1)])
    timer.join()
    # whether add() runs after the interrupted call or not, the copy was not killed
    assert t.status == "ok", t.error
    err = t.calls[0].error
    assert err is not None and err.type == "KeyboardInterrupt"
    assert_usable(s, before)


# -- a hostile copy -------------------------------------------------------------------------


def test_garbage_on_every_descriptor_leaves_the_session_alone(s: Session) -> None:
    before = state_of(s)
    t = s.trial(
        [
            "import os\n"
            "for fd in range(3, 21):\n"
            "    try:\n"
            "        os.write(fd, b'\\xff' * 64 + b'{not json' * 8)\n"
            "    except OSError:\n"
            "        pass\n"
            "'written'"
        ]
    )
    assert t.status in ("ok", "killed"), t
    if t.status == "killed":
        assert t.error is not None and t.error.type == "ProtocolViolation"
    assert t.session_alive
    assert_usable(s, before)


def test_a_forged_reply_is_a_protocol_violation_of_the_copy(s: Session) -> None:
    before = state_of(s)
    t = s.trial(
        [
            "import os, socket\n"
            "from tracebox.worker import protocol\n"
            "for fd in range(3, 64):\n"
            "    try:\n"
            "        if not os.readlink(f'/proc/self/fd/{fd}').startswith('socket:'):\n"
            "            continue\n"
            "    except OSError:\n"
            "        continue\n"
            "    sock = socket.socket(fileno=fd)\n"
            "    protocol.send(sock, {'op': 'step', 'status': ['not', 'a', 'status']})\n"
            "    sock.detach()\n"
            "'forged'"
        ],
        [call("add", 1)],
    )
    assert (t.status, t.session_alive) == ("killed", True)
    assert t.error is not None and t.error.type == "ProtocolViolation"
    assert_usable(s, before)


def test_tools_cannot_be_called_in_a_trial(s: Session) -> None:
    before = state_of(s)
    t = s.trial(
        [
            "from tracebox.worker import tools\n"
            "try:\n"
            "    tools.call('x')\n"
            "except RuntimeError as exc:\n"
            "    caught = str(exc)\n"
            "caught"
        ]
    )
    assert t.status == "ok"
    assert t.runs[0].value == repr("tools cannot be called in a trial")
    assert_usable(s, before)
    # the session's own tools still work
    r = s.run(
        "from tracebox.worker import tools\ntools.call('double', 21)",
        tools={"double": lambda x: 2 * x},
    )
    assert r.value == "42"


ATTACKS = {
    "SIGKILL to the worker": "os.kill(os.getppid(), signal.SIGKILL)",
    "SIGSTOP to the worker": "os.kill(os.getppid(), signal.SIGSTOP)",
    "SIGKILL to everyone": "os.kill(-1, signal.SIGKILL)",
    "SIGKILL to the group": "os.killpg(0, signal.SIGKILL)",
    "SIGKILL to pid 0": "os.kill(0, signal.SIGKILL)",
    "a pidfd of the worker": "os.pidfd_open(os.getppid())",
    "a /proc directory as a pidfd": (
        "signal.pidfd_send_signal(os.open(f'/proc/{os.getppid()}', os.O_RDONLY), signal.SIGKILL)"
    ),
    "the worker's CPU limit": "resource.prlimit(os.getppid(), resource.RLIMIT_CPU, (1, 1))",
    "a tgkill of the worker": "signal.pthread_kill and os.kill(os.getppid(), signal.SIGTERM)",
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_copy_cannot_touch_the_sessions_worker(s: Session, attack: str) -> None:
    """The copy runs with the worker's credentials in its pid namespace: a signal to its
    parent (or everyone) would end the session that the trial promises to leave as it was.
    Its own seccomp filter refuses them with EPERM."""
    before = state_of(s)
    code = (
        f"import os, resource, signal\nresult = 'allowed'\ntry:\n    {attack}\n"
        "except PermissionError:\n    result = 'refused'\nresult"
    )
    t = s.trial([code])
    assert t.status == "ok", t.error
    assert t.runs[0].value == "'refused'", t.runs[0]
    assert t.session_alive
    assert_usable(s, before)


def test_a_copy_cannot_kill_the_sessions_snapshots(s: Session) -> None:
    cp = s.checkpoint()
    pids = s.trial(["import os\nsorted(int(p) for p in os.listdir('/proc') if p.isdigit())"])
    assert pids.ok
    code = (
        "import os, signal\nrefused = []\n"
        f"for pid in {pids.runs[0].value}:\n"
        "    if pid not in (1, os.getpid()):\n"
        "        try:\n            os.kill(pid, signal.SIGKILL)\n"
        "        except PermissionError:\n            refused.append(pid)\n"
        "        except ProcessLookupError:\n            pass\n"
        "len(refused)"
    )
    t = s.trial([code])
    assert t.ok and t.runs[0].value is not None and int(t.runs[0].value) >= 2  # worker, snapshot
    s.run("counter = -1")
    s.restore(cp)  # the snapshot is alive
    assert s.run("counter").value == "10"


# -- transfer limits over the whole trial -----------------------------------------------------


def test_values_within_the_limit_one_by_one_do_not_kill_the_session(
    new_session: Callable[..., Session],
) -> None:
    """Each call's value is under ``max_transfer_bytes``; together they are over it."""
    s = new_session(limits=Limits(cpu_seconds=1, wall_seconds=10, max_transfer_bytes=1000))
    assert s.run("def big():\n    return 'x' * 800").ok
    assert s.call("big").returned == "x" * 800
    t = s.trial([], [call("big"), call("big")])
    assert t.session_alive, t.error
    assert t.calls[0].returned == "x" * 800
    assert s.run("1 + 1").value == "2"


def test_many_steps_with_long_values_do_not_kill_the_session(s: Session) -> None:
    t = s.trial(["'y' * 9000"] * 150)
    assert t.session_alive, t.error
    assert s.run("1 + 1").value == "2"


# -- tracing --------------------------------------------------------------------------------


def test_a_traced_trial_traces_every_step(s: Session) -> None:
    t = s.trial(["x = 1\ny = x + 1"], [call("add", 1), call("boom", 1)], trace="steps")
    assert t.status == "ok"
    assert t.runs[0].trace is not None and (t.runs[0].trace.counts.steps or 0) > 0
    traced = t.calls[0].trace
    assert traced is not None and (traced.counts.steps or 0) > 0
    direct = s.call("add", 1, trace__="steps")
    assert direct.trace is not None
    assert traced.counts.steps == direct.trace.counts.steps
    assert t.calls[1].trace is not None  # a call that raised is recorded too
    untraced = s.trial([], [call("add", 1)])
    assert untraced.calls[0].trace is None


# -- checkpoints, forks ------------------------------------------------------------------------


def test_trials_and_checkpoints(s: Session) -> None:
    cp = s.checkpoint()
    before = state_of(s)  # the snapshot is one of the other processes now
    t = s.trial([CHANGE_FILES, SPAWNERS["popen"], "counter = 0"], [call("bump")])
    assert t.status == "ok" and t.calls[0].returned == 1
    assert_usable(s, before)
    s.run("counter = 50\nopen('/tmp/keep.txt', 'w').write('after the checkpoint')")
    s.restore(cp)
    assert s.get("counter") == 10
    assert s.call("files_state").returned == before[1]
    t = s.trial(["counter += 5\ncounter", SPAWNERS["daemon"]], [call("bump")])
    assert t.status == "ok" and t.runs[0].value == "15" and t.calls[0].returned == 16
    assert state_of(s)[:2] == before[:2]
    s.restore(cp)  # once more, after a trial
    assert s.get("counter") == 10
    assert s.run("1 + 1").value == "2"


def test_a_trial_in_a_dead_session_is_refused_and_a_restore_revives_it(s: Session) -> None:
    cp = s.checkpoint()
    r = s.run("import os\nos._exit(1)")
    assert not r.session_alive
    with pytest.raises(SessionDead):
        s.trial(["1"])
    s.restore(cp)
    t = s.trial(["counter"])
    assert t.runs[0].value == "10"


def test_trials_in_a_fork_family(s: Session) -> None:
    a, b = s.fork(2)
    try:
        a.run("counter = 1")
        b.run("counter = 2\nopen('/tmp/keep.txt', 'w').write('b')")
        t = a.trial(["counter = 7", CHANGE_FILES])
        assert t.status == "ok" and t.runs[-1].ok
        assert [m.trial(["counter"]).runs[0].value for m in (s, a, b)] == ["10", "1", "2"]
        assert [m.get("counter") for m in (s, a, b)] == [10, 1, 2]
        texts = [m.run("open('/tmp/keep.txt').read()").value for m in (s, a, b)]
        assert texts == ["'tmp before'", "'tmp before'", "'b'"]
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("start", ["threading.Thread", "_thread.start_new_thread"])
def test_a_trial_is_refused_while_the_session_has_threads(s: Session, start: str) -> None:
    """A fork keeps only the calling thread: a copy of a threaded worker is not faithful.
    Threads the threading module does not know of count too."""
    launch = {
        "threading.Thread": "threading.Thread(target=stop.wait, daemon=True).start()",
        "_thread.start_new_thread": "import _thread\n_thread.start_new_thread(stop.wait, ())",
    }[start]
    assert s.run(f"import threading\nstop = threading.Event()\n{launch}").ok
    with pytest.raises(CheckpointRefused):
        s.trial(["counter"])
    assert s.run(
        "stop.set()\nimport os, time\n"
        "while len(os.listdir('/proc/self/task')) > 1:\n    time.sleep(0.01)"
    ).ok
    assert s.trial(["counter"]).runs[0].value == "10"


# -- stateless sessions ---------------------------------------------------------------------


def test_a_stateless_session(new_session: Callable[..., Session]) -> None:
    """Each cell of a stateless session starts from a fresh namespace, as each run does; calls
    see the namespace the last cell ran in (for a trial without cells, the session's: that of
    its last run), as ``Session.call`` sees the last run's."""
    s = new_session(stateful=False)
    assert s.run("x = 1\ndef f():\n    return 'session'").ok
    t = s.trial(
        ["y = 2", "y", "def g():\n    return 'earlier cell'", "def h():\n    return 'last cell'"],
        [call("g"), call("h"), call("f")],
    )
    assert t.status == "ok"
    # "y" is a NameError: the second cell does not see the first; the trial stops there
    assert [r.status for r in t.runs] == ["ok", "error"]
    err = t.runs[1].error
    assert err is not None and err.type == "NameError"
    assert t.calls == ()

    t = s.trial(
        ["y = 2", "def g():\n    return 'earlier cell'", "def h():\n    return 'last cell'"],
        [call("g"), call("h"), call("f")],
    )
    assert t.status == "ok"
    assert [(c.status, c.returned) for c in t.calls] == [
        ("error", None),
        ("ok", "last cell"),
        ("error", None),
    ]
    assert [c.error.type for c in t.calls if c.error is not None] == ["NameError", "NameError"]

    t = s.trial(["x"])
    err = t.runs[0].error
    assert err is not None and err.type == "NameError"  # the session's variables are not seen
    t = s.trial([], [call("f")])
    assert t.calls[0].returned == "session"
    assert s.call("f").returned == "session"  # the trial did not replace the namespace


def test_a_copy_draws_the_random_numbers_the_session_would(s: Session) -> None:
    """The copy is not reseeded: each trial sees what the session itself would draw next,
    so trials from one state are reproducible."""
    assert s.run("import random").ok
    first = s.trial(["random.random()"])
    second = s.trial(["random.random()"])
    assert first.runs[0].value == second.runs[0].value
    assert s.run("random.random()").value == first.runs[0].value
