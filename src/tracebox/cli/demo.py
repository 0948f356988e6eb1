"""``tracebox demo``: a short tour of one session: persistent state, limits, blocked escapes."""

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
            for part in (_demo_state, _demo_timeout, _demo_escapes, _demo_memory):
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
        f"memory bomb were contained, every escape was blocked ({took:.1f} s)"
    )
