"""The ``tracebox`` console script, run for real in subprocesses against real sandboxes."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tracebox.sandbox.doctor import NAMESPACES, Report
from tracebox.types import RunResult

_SCRIPT = Path(sys.executable).with_name("tracebox")
TRACEBOX = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tracebox.cli"]
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
REQUIRED_LAYERS = {
    "host: root",
    "runtime",
    *(f"namespace: {name}" for name in NAMESPACES),
    "uid mapping",
    "capabilities",
    "no_new_privs",
    "seccomp",
    "rlimits",
    "cgroup: memory",
    "cgroup: pids",
    "cgroup: cpu",
    "network",
    "filesystem",
}


def tracebox(*args: str, stdin: str = "", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRACEBOX, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        check=False,
    )


def script(tmp_path: Path, code: str, name: str = "prog.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return str(path)


# -- run ------------------------------------------------------------------------------------


def test_version() -> None:
    proc = tracebox("--version")
    assert proc.returncode == 0
    assert re.fullmatch(r"tracebox \d+\.\d+\.\d+\n", proc.stdout)


def test_run_ok_passes_output_through(tmp_path: Path) -> None:
    path = script(tmp_path, "import sys\nprint('hello')\nprint('note', file=sys.stderr)\n")
    proc = tracebox("run", path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hello\n", "note\n")


def test_run_error_exits_1_with_traceback(tmp_path: Path) -> None:
    proc = tracebox("run", script(tmp_path, "print('before')\n1 / 0\n"))
    assert proc.returncode == 1
    assert proc.stdout == "before\n"
    assert "Traceback" in proc.stderr
    assert "ZeroDivisionError: division by zero" in proc.stderr


def test_run_timeout_exits_2(tmp_path: Path) -> None:
    proc = tracebox("run", script(tmp_path, "while True:\n    pass\n"), "--cpu-seconds", "0.5")
    assert proc.returncode == 2
    assert "timeout" in proc.stderr
    assert "CPU time limit of 0.5 s exceeded" in proc.stderr


def test_run_streams_output_while_running(tmp_path: Path) -> None:
    path = script(tmp_path, "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('x')")
    with subprocess.Popen(
        [*TRACEBOX, "run", path], stdout=subprocess.PIPE, text=True, env=ENV
    ) as p:
        assert p.stdout is not None
        assert p.stdout.readline() == "first\n"
        assert p.poll() is None, "'first' arrived only when the run had ended"
        assert p.stdout.read() == "x\n"
    assert p.returncode == 0


@pytest.mark.parametrize(
    ("code", "status", "exit_code"),
    [
        ("print('hi')\n6 * 7", "ok", 0),
        ("raise ValueError('bad')", "error", 1),
        ("while True:\n    pass", "timeout", 2),
        ("x = bytearray(2**30)", "memory", 2),
        ("import os\nos._exit(3)", "killed", 2),
    ],
)
def test_run_json(tmp_path: Path, code: str, status: str, exit_code: int) -> None:
    args = ("--cpu-seconds", "0.5", "--memory-mb", "128", "--json")
    proc = tracebox("run", script(tmp_path, code), *args)
    result = RunResult.model_validate_json(proc.stdout)  # the whole of stdout: no streaming
    assert (result.status, proc.returncode) == (status, exit_code), result
    if status == "ok":
        assert (result.stdout, result.value) == ("hi\n", "42")
    else:
        assert result.error is not None


def test_run_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    proc = tracebox("run", str(tmp_path / "nope.py"))
    assert proc.returncode == 2
    assert "Invalid value for 'FILE'" in proc.stderr


def test_run_non_utf8_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.py"
    path.write_bytes("print('caf\xe9')\n".encode("latin-1"))
    proc = tracebox("run", str(path))
    assert proc.returncode == 2
    assert "is not UTF-8" in proc.stderr


def test_run_rejects_invalid_limits(tmp_path: Path) -> None:
    proc = tracebox("run", script(tmp_path, "1"), "--cpu-seconds", "0")
    assert proc.returncode == 2
    assert "--cpu-seconds" in proc.stderr


# -- repl -----------------------------------------------------------------------------------


def test_repl_from_a_pipe() -> None:
    proc = tracebox("repl", stdin="x = 2\nx * 21\n")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "42\n", "")


def test_repl_blocks_errors_and_timeouts_keep_the_session() -> None:
    lines = """\
        def f(x):
            return x + 1

        f(41)
        1 / 0
        for i in range(2):
            print("loop", i)

        while True:
            pass

        f(x=2)
        None
        [f(1), 'tail'
        ]
        """
    proc = tracebox("repl", "--cpu-seconds", "0.5", stdin=textwrap.dedent(lines))
    assert proc.returncode == 0
    assert proc.stdout == "42\nloop 0\nloop 1\n3\n[2, 'tail']\n"
    assert "ZeroDivisionError: division by zero" in proc.stderr
    assert "CPU time limit of 0.5 s exceeded" in proc.stderr
    assert "new session" not in proc.stderr


def test_repl_replaces_a_dead_session_and_runs_a_pending_block_at_eof() -> None:
    proc = tracebox("repl", stdin="x = 1\nimport os\nos._exit(9)\nx\nif True:\n    print('end')")
    assert proc.returncode == 0
    assert "status 9" in proc.stderr
    assert "started a new session; earlier state is lost" in proc.stderr
    assert "NameError" in proc.stderr  # x went with the old session
    assert proc.stdout == "end\n"


class _Terminal:
    """``tracebox repl`` on a pseudo-terminal of its own, as a person at a shell would run it."""

    def __init__(self, *args: str) -> None:
        master, slave = pty.openpty()
        self.fd = master
        # setsid --ctty: a session of its own with the pty as controlling terminal, so that
        # Ctrl-C typed on it signals the foreground process group, as at a real terminal
        self.proc = subprocess.Popen(
            ["setsid", "--ctty", *TRACEBOX, "repl", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**ENV, "TERM": "dumb"},
        )
        os.close(slave)
        self.seen = ""

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def ctrl_c(self) -> None:
        # A person's Ctrl-C comes well after the last key. Sent within microseconds of one, it
        # can land before CPython's readline goes back to select() and waits for the next key.
        time.sleep(0.2)
        self.send("\x03")

    def ctrl_c_at_prompt(self, pattern: str, timeout: float = 15) -> None:
        """Ctrl-C at the prompt until ``pattern`` shows: CPython's line editor may take a
        Ctrl-C that lands while it is busy only at the next key, however long we wait."""
        deadline = time.monotonic() + timeout
        while True:
            self.ctrl_c()
            try:
                self.expect(pattern, timeout=1)
                return
            except pytest.fail.Exception:
                if time.monotonic() > deadline:
                    raise

    def expect(self, pattern: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.seen):
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} on the terminal; it shows {self.seen[-800:]!r}")
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.fd, 4096).decode(errors="replace")
                except OSError:  # EIO: the terminal was closed
                    pytest.fail(f"the repl exited; the terminal shows {self.seen[-800:]!r}")

    def close(self) -> int:
        self.send("\x04")
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.fd)


SPIN = """\
def spin():
    print("spinning", flush=True)
    while True:
        pass
"""
# Limits far beyond the tests' patience: only the interrupt itself can end spin() in time.
PATIENT = ("--cpu-seconds", "60", "--wall-seconds", "60")
# the traceback says the code was in spin(), shown bare or in the panel of ``tracebox run``
SPIN_INTERRUPTED = r"in spin\W*\n[^\n]*\n\W*KeyboardInterrupt"


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs util-linux setsid")
def test_repl_ctrl_c_on_a_terminal_clears_the_line_and_interrupts_code() -> None:
    term = _Terminal(*PATIENT)
    try:
        term.expect(r">>> $")
        term.send("x = 5\n")
        term.expect(r"x = 5\r\n>>> $")
        term.send("partial input")
        term.expect("partial input")
        term.ctrl_c_at_prompt(r"KeyboardInterrupt\r\n>>> $")  # only the line is dropped
        term.send("x\n")
        term.expect(r"\r\n5\r\n>>> $")
        term.send(SPIN + "\nspin()\n")
        term.expect(r"spinning\r\n")
        term.ctrl_c()  # while code runs: KeyboardInterrupt where that code was, state kept
        term.expect(SPIN_INTERRUPTED + r"\r\n>>> $", timeout=15)
        term.send("more input")
        term.expect("more input")
        # the prompt's own Ctrl-C is back
        term.ctrl_c_at_prompt(
            r"more input\r?\nKeyboardInterrupt\r\n(>>> \r?\nKeyboardInterrupt\r\n)*>>> $"
        )
        term.send("x + 1\n")
        term.expect(r"\r\n6\r\n>>> $")
        assert "new session" not in term.seen
        assert "TimeLimitExceeded" not in term.seen
    finally:
        code = term.close()
    assert code == 0


def test_run_ctrl_c_interrupts_the_program_and_exits_130(tmp_path: Path) -> None:
    path = script(tmp_path, SPIN + "\nspin()\n")
    with subprocess.Popen(
        [*TRACEBOX, "run", path, *PATIENT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    ) as p:
        try:
            assert p.stdout is not None
            assert p.stdout.readline() == "spinning\n"
            os.killpg(p.pid, signal.SIGINT)  # a terminal's Ctrl-C: to the foreground group
            stdout, stderr = p.communicate(timeout=5)
        finally:
            p.kill()
    assert p.returncode == 130, stderr
    assert stdout == ""
    assert re.search(SPIN_INTERRUPTED, stderr), stderr
    assert "TimeLimitExceeded" not in stderr


# -- doctor and demo ------------------------------------------------------------------------


def test_doctor_json_every_layer_active_here() -> None:
    proc = tracebox("doctor", "--json")
    report = Report.model_validate_json(proc.stdout)
    failing = {c.layer: c.detail for c in report.checks if not c.ok}
    assert not failing, f"confinement layers inactive on this machine: {failing}"
    missing = REQUIRED_LAYERS - {c.layer for c in report.checks}
    assert not missing, f"doctor did not check: {missing}"
    assert report.ok
    assert proc.returncode == 0


def test_doctor_table() -> None:
    proc = tracebox("doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every required layer is active" in proc.stdout
    assert "✘" not in proc.stdout
    assert "seccomp" in proc.stdout


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_doctor_reports_a_runtime_that_cannot_start() -> None:
    # In a fresh user namespace we are no longer uid 0, so the runtime refuses to start.
    proc = subprocess.run(
        ["unshare", "--user", *TRACEBOX, "doctor", "--json"],
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=30,
    )
    report = Report.model_validate_json(proc.stdout)
    failing = {c.layer: c.detail for c in report.checks if not c.ok}
    assert "needs root" in failing["runtime"]
    assert "host: root" in failing
    assert not report.ok
    assert proc.returncode == 1


def test_demo_exits_0() -> None:
    proc = tracebox("demo", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checks behaved" in proc.stdout
    assert "✘" not in proc.stdout
