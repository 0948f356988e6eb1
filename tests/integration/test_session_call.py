"""``Session.call`` (host calls a session function) and tools (session code calls the host)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tracebox import Limits, Session
from tracebox.errors import NameNotFound

FUNCTIONS = """\
def add(a, b=0):
    print("adding")
    return a + b

class AlwaysEqual:
    def __eq__(self, other):
        return True

def liar():
    return AlwaysEqual()

class Sneaky(int):
    def __eq__(self, other):
        return True

def sneaky():
    return Sneaky(3)

def boom(x):
    raise ValueError(f"bad {x}")

def leave():
    raise SystemExit(0)

def spin():
    while True:
        pass

def gen():
    yield 1
"""


@pytest.fixture
def fns(session: Session) -> Session:
    assert session.run(FUNCTIONS).ok
    return session


def test_a_call_returns_a_copy_and_captures_output(fns: Session) -> None:
    r = fns.call("add", [1], b=[2])
    assert (r.status, r.returned, r.value, r.stdout) == ("ok", [1, 2], "[1, 2]", "adding\n")


@pytest.mark.parametrize("fn", ["liar", "sneaky", "gen"])
def test_objects_that_are_not_plain_data_never_reach_the_host(fns: Session, fn: str) -> None:
    r = fns.call(fn)
    assert r.status == "error"
    assert r.error is not None and r.error.type == "UntransferableValue"
    assert r.returned is None
    assert fns.call("add", 1, 2).returned == 3  # the session goes on


def test_exceptions_and_exits_are_the_calls_outcome(fns: Session) -> None:
    r = fns.call("boom", 7)
    assert r.status == "error"
    assert r.error is not None and (r.error.type, r.error.message) == ("ValueError", "bad 7")
    assert "line 20, in boom" in r.error.traceback
    r = fns.call("leave")
    assert r.error is not None and r.error.type == "SystemExit"
    assert r.session_alive


def test_a_call_that_spins_times_out_and_the_session_lives(
    new_session: Callable[..., Session],
) -> None:
    s = new_session(limits=Limits(cpu_seconds=0.3))
    s.run(FUNCTIONS)
    r = s.call("spin")
    assert r.status == "timeout"
    assert s.call("add", 1).returned == 1


def test_missing_names_and_bad_names(fns: Session) -> None:
    with pytest.raises(NameNotFound):
        fns.call("nothing_here")
    with pytest.raises(TypeError):
        fns.call(3)  # type: ignore[arg-type]


def test_a_value_over_the_transfer_limit_is_an_error(
    new_session: Callable[..., Session],
) -> None:
    s = new_session(limits=Limits(max_transfer_bytes=1000))
    s.run("def big():\n    return 'x' * 5000")
    r = s.call("big")
    assert r.status == "error"
    assert r.error is not None and "5" in r.error.message and "bytes" in r.error.message


TOOL_USER = """\
from tracebox.worker import tools
out = [tools.call("double", 21)]
try:
    tools.call("fails", "k")
except KeyError as exc:
    out.append(("KeyError", str(exc)))
try:
    tools.call("unknown")
except LookupError as exc:
    out.append(("LookupError", str(exc)))
try:
    tools.call("double", object())
except Exception as exc:
    out.append((type(exc).__name__, "refused"))
out
"""


def test_code_in_a_session_calls_host_tools(session: Session) -> None:
    seen: list[object] = []

    def double(x: int) -> int:
        seen.append(x)
        return x * 2

    def fails(key: str) -> None:
        raise KeyError(key)

    r = session.run(TOOL_USER, tools={"double": double, "fails": fails})
    assert r.ok, r.error
    assert r.value == (
        "[42, ('KeyError', \"'k'\"), ('LookupError', \"no tool named 'unknown' in this run\"), "
        "('ToolError', 'refused')]"
    )
    assert seen == [21]
    # tools belong to the run that was given them
    r = session.run("tools.call('double', 1)")
    assert r.error is not None and r.error.type == "LookupError"


def test_an_interrupted_tool_call_leaves_the_channel_in_step(session: Session) -> None:
    def slow() -> str:
        time.sleep(0.5)
        return "late"

    timer = threading.Timer(0.2, session.interrupt)
    timer.start()
    r = session.run("from tracebox.worker import tools\ntools.call('slow')", tools={"slow": slow})
    timer.join()
    assert r.error is not None and r.error.type == "KeyboardInterrupt"
    assert session.run("1 + 1").value == "2"  # the late answer was skipped, not taken as one


def test_a_malformed_tool_frame_kills_the_session(session: Session) -> None:
    r = session.run(
        "from tracebox.worker import protocol, tools\n"
        "protocol.send(tools._channel[0], {'op': 'tool', 'name': 1, 'seq': 'x'})\n"
        "import time; time.sleep(5)"
    )
    assert r.status == "killed"
    assert r.error is not None and r.error.type == "ProtocolViolation"
    assert not r.session_alive


def test_a_call_can_be_traced(fns: Session) -> None:
    r = fns.call("add", 2, trace__="full", b=5)
    assert (r.status, r.returned) == ("ok", 7)
    assert r.trace is not None
    assert [(st.event, st.function) for st in r.trace.steps] == [
        ("call", "add"),
        ("line", "add"),
        ("line", "add"),
        ("return", "add"),
    ]
    assert r.trace.steps[-1].value is not None and r.trace.steps[-1].value.repr == "7"
    steps = fns.call("add", 1, trace__="steps")
    assert steps.returned == 1
    assert steps.trace is not None and steps.trace.counts.steps == 4
