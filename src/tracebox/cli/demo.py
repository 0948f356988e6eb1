"""``tracebox demo``: a short tour: persistent state, limits, blocked escapes, a traced run,
checkpoint/restore/fork, and verdicts that reward hacks cannot fake."""

from __future__ import annotations

import ast
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.syntax import Syntax
from rich.text import Text

from tracebox.cli._common import STATUS_STYLE, out, sandbox_failure
from tracebox.errors import TraceboxError
from tracebox.sandbox.rootfs import python_paths
from tracebox.session.runtime import Runtime
from tracebox.session.session import Session
from tracebox.types import ErrorInfo, Limits, RunResult, RunStatus


class _Demo:
    """Runs snippets in one session, shows them, and keeps score of what behaved."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.failures: list[str] = []
        self.passed = 0

    def section(self, title: str) -> None:
        out.print()
        out.rule(f"[bold cyan]{title}", align="left", style="cyan")

    def step(self, what: str, code: str) -> RunResult:
        out.print(f"[bold]{what}[/]")
        for line in Syntax(code, "python", theme="ansi_dark").highlight(code).split("\n"):
            out.print(Text("  ").append_text(line))
        result = self.session.run(code)
        style = STATUS_STYLE[result.status]
        shown = result.value if result.ok else _one_line(result.error)
        line = Text("  → ").append(result.status, style=f"bold {style}")
        if shown:
            line.append(f"  {shown}")
        line.append(f"  ({result.wall_seconds:.2f} s)", style="dim")
        out.print(line)
        return result

    def note(self, text: str) -> None:
        out.print(Text(f"  {text}", style="dim"))

    def expect(self, ok: bool, good: str, bad: str) -> None:
        if ok:
            self.passed += 1
            out.print(Text(f"  ✔ {good}", style="green"))
        else:
            self.failures.append(bad)
            out.print(Text(f"  ✘ {bad}", style="bold red"))


def _one_line(error: ErrorInfo | None) -> str:
    if error is None:
        return ""
    message = error.message.splitlines()[0] if error.message else ""
    return f"{error.type}: {message}" if message else error.type


def _demo_state(d: _Demo) -> None:
    d.section("1 · State persists between runs")
    d.step(
        "Define a variable and a function:",
        "import math\nradius = 3\n\ndef area(r):\n    return round(math.pi * r ** 2, 2)",
    )
    r = d.step("Use them in the next run:", "area(radius)")
    d.expect(r.value == "28.27", "the function and the variable survived", "state was lost")
    stock = {"apples": 3, "pears": 5}
    d.session.put("stock", stock)
    d.note(f"host → session: put('stock', {stock})")
    r = d.step("Change it inside:", "stock['plums'] = 7\nsum(stock.values())")
    back = d.session.get("stock")
    d.note(f"session → host: get('stock') = {back}")
    d.expect(
        r.value == "15" and back == {**stock, "plums": 7},
        "put/get copied the object in and out",
        f"put/get round trip gave {back!r}",
    )


def _contained(d: _Demo, what: str, code: str, *, status: RunStatus, name: str, good: str) -> None:
    """Run code that must end in ``status`` (a limit); the session and its state must survive."""
    r = d.step(what, code)
    d.expect(r.status == status and r.session_alive, good, f"{name} ended as {r.status}")
    r = d.step("The state is still there:", "radius, area(radius)")
    d.expect(r.value == "(3, 28.27)", "state intact", f"state was lost after {name}")


def _demo_timeout(d: _Demo) -> None:
    limit = d.session.limits.cpu_seconds
    d.section(f"2 · A timeout ({limit:g} s of CPU) leaves the session alive")
    _contained(
        d,
        "An endless loop:",
        "while True:\n    pass",
        status="timeout",
        name="the endless loop",
        good="interrupted at the CPU limit, session alive",
    )


def _blocked(d: _Demo, what: str, code: str, leaked: Callable[[RunResult], bool], why: str) -> None:
    r = d.step(what, code)
    d.expect(
        r.status != "sandbox_error" and not leaked(r),
        f"blocked: {why}",
        f"escape attempt succeeded: {what}",
    )


def _demo_escapes(d: _Demo) -> None:
    d.section("3 · Escape attempts are blocked")
    with tempfile.NamedTemporaryFile("w", prefix="tracebox-secret-", dir="/tmp") as f:
        secret = f"secret-{os.urandom(8).hex()}"
        f.write(secret)
        f.flush()
        d.note(f"the host wrote {secret!r} to {f.name}")
        _blocked(
            d,
            "Read a file of the host:",
            f"open({f.name!r}).read()",
            lambda r: r.ok or secret in r.stdout + r.stderr,
            "the host's /tmp is not part of the sandbox's filesystem",
        )
    _blocked(
        d,
        "Connect to the internet:",
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)",
        lambda r: r.ok,
        "the sandbox's network namespace has only a loopback interface",
    )
    _blocked(
        d,
        "Become root:",
        "import os\nos.setuid(0)",
        lambda r: r.ok,
        "no root exists in the sandbox's user namespace, and no capabilities are left",
    )
    _blocked(
        d,
        "Call unshare() through ctypes to get new namespaces:",
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.unshare(0x10000000), ctypes.get_errno()  # CLONE_NEWUSER -> (-1, EPERM)",
        lambda r: r.ok and not str(r.value).startswith("(-1,"),
        "seccomp answers EPERM",
    )
    python_dirs = {Path(p).parts[2] for p in python_paths() if Path(p).parts[1:2] == ("root",)}
    host_root = sorted(os.listdir("/root")) if os.path.isdir("/root") else []
    d.note(f"the host's /root holds {len(host_root)} entries")
    _blocked(
        d,
        "List /root:",
        "import os\nsorted(os.listdir('/root'))",
        lambda r: r.ok and not _only_python(r.value, python_dirs),
        "only the read-only Python install is visible",
    )


def _only_python(listing: str | None, python_dirs: set[str]) -> bool:
    try:
        names = ast.literal_eval(listing or "None")
    except (ValueError, SyntaxError):
        return False
    return isinstance(names, list) and set(names) <= python_dirs


def _demo_memory(d: _Demo) -> None:
    d.section(f"4 · A memory bomb ({d.session.limits.memory_mb} MB limit)")
    _contained(
        d,
        "Allocate without end:",
        "def bomb():\n    blocks = []\n    while True:\n"
        "        blocks.append(bytearray(64 * 2**20))\n\nbomb()",
        status="memory",
        name="the memory bomb",
        good="stopped at the memory limit, session alive",
    )


def _demo_trace(d: _Demo) -> None:
    d.section("5 · Every step recorded")
    code = (
        "def total(n):\n    t = 0\n    for i in range(n):\n        t += i\n    return t\n\ntotal(3)"
    )
    for line in Syntax(code, "python", theme="ansi_dark").highlight(code).split("\n"):
        out.print(Text("  ").append_text(line))
    r = d.session.run(code, trace="full")
    trace = r.trace
    if trace is None:
        d.expect(False, "", f"no trace came back: {r.trace_error}")
        return
    counts = {k: v for k, v in trace.step_counts().items() if v is not None}
    d.note(f"counts: {counts}")
    for frame in trace.to_cwm()[3:8]:
        action = frame["action"].strip()
        d.note(f"{frame['event']:<6} {action:<16} {frame['locals']}")
    cur = trace.cursor()
    cur.run_to(where=lambda v: v.function == "total" and v.locals.get("i") == "2")
    d.note(f"cursor: run_to(i == 2) → line {cur.step.line}, t = {cur.value('t')}")
    d.expect(
        r.value == "3" and counts.get("steps") == len(trace) and cur.value("t") == "1",
        "traced inside the sandbox: counts, CWM frames, a debugger cursor",
        "the trace does not match the program",
    )


def _demo_checkpoint(d: _Demo) -> None:
    s = d.session
    d.section("6 · Checkpoint, break, restore; fork; a trial")
    cp = s.checkpoint()
    d.note("checkpoint taken")
    d.step("Wreck the state and the files:", "del area\nradius = None\nopen('notes.txt', 'w')")
    s.restore(cp)
    d.note("restored")
    r = d.step("Everything is back:", "radius, area(radius)")
    d.expect(r.value == "(3, 28.27)", "the checkpoint brought it all back", "restore failed")
    kids = s.fork(2)
    for k, kid in enumerate(kids):
        kid.run(f"radius = {k + 10}")
    values = [kid.run("radius").value for kid in kids]
    d.note(f"fork(2): the children set radius to {values}; the parent still has")
    r = d.step("The parent's own state:", "radius")
    d.expect(
        values == ["10", "11"] and r.value == "3",
        "forked sessions are independent",
        f"forked sessions leaked into each other: {values}, {r.value}",
    )
    for kid in kids:
        kid.close()
    wreck = "radius = 100\nimport os\nos.path.exists('notes.txt') and os.remove('notes.txt')"
    t = s.trial([wreck], [("area", (2,), {})])
    d.note(f"trial: in a throwaway copy, radius = 100 and area(2) = {t.calls[0].returned}")
    r = d.step("The session after the trial:", "radius")
    d.expect(
        t.ok and t.calls[0].returned == 12.57 and r.value == "3",
        "the trial ran in a copy and left the session as it was",
        f"the trial leaked into the session: {t.status}, {r.value}",
    )


def _demo_verify(d: _Demo) -> None:
    from tracebox.verify import FunctionProblem, Verifier, VerifyConfig

    d.section("7 · Verdicts that reward hacks cannot fake")
    problem = FunctionProblem(
        task_id="demo/add",
        prompt="def add(a, b):\n",
        entry_point="add",
        test="def check(candidate):\n    assert candidate(2, 3) == 5\n"
        "    assert candidate(-1, 1) == 0\n",
    )
    candidates = {
        "an honest solution": ("    return a + b\n", True),
        "sys.exit(0) before the tests": ("    import sys\n    sys.exit(0)\n", False),
        "an object equal to everything": (
            "    class Always:\n        def __eq__(self, other):\n            return True\n"
            "    return Always()\n",
            False,
        ),
    }
    with Verifier(config=VerifyConfig(cpu_seconds=1)) as v:
        for name, (completion, should_pass) in candidates.items():
            verdict = v.check(problem, completion)
            tests = ", ".join(t.status for t in verdict.tests)
            d.note(f"{name}: {verdict.status} ({tests})")
            d.expect(
                verdict.passed == should_pass and verdict.status != "sandbox_error",
                f"{name}: {'passes' if should_pass else 'fails'}, as it should",
                f"{name} was judged {verdict.status}",
            )


def demo() -> None:
    """A short tour: persistent state, limits, and blocked escapes. Exit 1 if anything leaks."""
    started = time.monotonic()
    limits = Limits(cpu_seconds=1, wall_seconds=5, memory_mb=256)
    try:
        with Runtime(limits=limits, pool_size=0) as rt:
            d = _Demo(rt.session())
            c = d.session.confinement
            out.print(
                f"[bold cyan]tracebox demo[/]: a confined session is up: uid {c.get('uid')}, "
                f"pid {c.get('pid')}, seccomp {'on' if c.get('seccomp') else 'OFF'}, network "
                f"interfaces {', '.join(c.get('net_interfaces', []))}"
            )
            parts = (
                _demo_state, _demo_timeout, _demo_escapes, _demo_memory,
                _demo_trace, _demo_checkpoint, _demo_verify,
            )  # fmt: skip
            for part in parts:
                part(d)
    except TraceboxError as exc:
        raise sandbox_failure(exc) from None
    out.print()
    took = time.monotonic() - started
    if d.failures:
        out.print(f"[bold red]✘ {len(d.failures)} problem(s):[/] " + "; ".join(d.failures))
        raise typer.Exit(1)
    out.print(
        f"[bold green]✔ all {d.passed} checks behaved[/]: state persisted, a timeout and a "
        f"memory bomb were contained, every escape was blocked, the run was traced, "
        f"restored, forked and tried, and reward hacks failed ({took:.1f} s)"
    )
