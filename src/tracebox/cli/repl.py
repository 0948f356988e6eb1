"""``tracebox repl``: an interactive prompt whose state persists in one confined session.

Ctrl-C at the prompt drops the line being typed. While code runs it raises KeyboardInterrupt
in that code (see :func:`tracebox.cli.ctrl_c_interrupts`); the session keeps its state.
"""

from __future__ import annotations

import codeop
import contextlib
import sys
import warnings

from rich.text import Text

from tracebox import __version__
from tracebox.cli._common import (
    CpuOption,
    MemoryOption,
    WallOption,
    ctrl_c_interrupts,
    err,
    error_text,
    out,
    parse_limits,
    result_style,
    sandbox_failure,
    stream_output,
)
from tracebox.errors import TraceboxError
from tracebox.session.runtime import Runtime
from tracebox.session.session import Session
from tracebox.types import Limits, RunResult

PS1, PS2 = ">>> ", "... "


class _Lines:
    """Lines typed at a terminal (prompts, line editing) or read from a pipe (no prompts)."""

    def __init__(self) -> None:
        self.tty = sys.stdin.isatty()
        self.eof = False
        if self.tty:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (line editing and history for input())

    def read(self, prompt: str) -> str | None:
        if self.eof:
            return None
        line: str | None
        if self.tty:
            try:
                line = input(prompt)
            except EOFError:
                line = None
        else:
            raw = sys.stdin.readline()
            line = raw.removesuffix("\n") if raw else None
        self.eof = line is None
        return line


def _is_complete(source: str) -> bool:
    """Whether Python's own REPL would run ``source`` now. Compiled here, never executed here;
    invalid code counts as complete so that the session reports the SyntaxError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return codeop.compile_command(source, "<stdin>", "single") is not None
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
            return True


def _read_cell(lines: _Lines) -> str | None:
    """The next complete input, or None at end of input (a pending block still runs)."""
    buffer: list[str] = []
    while (line := lines.read(PS2 if buffer else PS1)) is not None:
        buffer.append(line)
        if _is_complete("\n".join(buffer)):
            return "\n".join(buffer)
    return "\n".join(buffer) if buffer else None


class _Repl:
    def __init__(self, rt: Runtime, limits: Limits) -> None:
        self.rt, self.limits = rt, limits
        self.session: Session = rt.session(limits=limits)

    def loop(self) -> None:
        lines = _Lines()
        if lines.tty:
            err.print(
                f"[bold cyan]tracebox[/] {__version__} · Python "
                f"{self.rt.python_version.split()[0]} in a confined session · "
                f"{self.limits.cpu_seconds:g} s CPU per input · Ctrl-D exits"
            )
        while True:
            try:
                source = _read_cell(lines)
            except KeyboardInterrupt:  # at the prompt: drop what was typed
                err.print("\nKeyboardInterrupt", style="yellow")
                continue
            if source is None:
                if lines.tty:
                    err.print()
                return
            if source.strip():
                self.execute(source)

    def execute(self, source: str) -> None:
        try:
            with ctrl_c_interrupts(self.session):
                result = self.session.run(source, on_output=stream_output)
        except TraceboxError as exc:
            self.restart(f"{type(exc).__name__} {exc}".strip())
            return
        self.show(result)
        if not result.session_alive:
            self.restart("the worker died")

    def show(self, result: RunResult) -> None:
        if result.ok:
            if result.value is not None:
                out.print(result.value, markup=False, highlight=True)
            return
        err.print(Text(error_text(result), style=result_style(result)))

    def restart(self, reason: str) -> None:
        self.session.close()
        self.session = self.rt.session(limits=self.limits)
        err.print(Text(f"{reason}: started a new session; earlier state is lost", style="yellow"))


def repl(
    cpu_seconds: CpuOption = None,
    wall_seconds: WallOption = None,
    memory_mb: MemoryOption = None,
) -> None:
    """An interactive Python prompt whose state persists in one confined session.

    Ctrl-C interrupts the code that runs (its state is kept), or clears the line at the prompt.
    """
    limits = parse_limits(cpu_seconds, wall_seconds, memory_mb)
    try:
        with Runtime(limits=limits, pool_size=1) as rt:
            _Repl(rt, limits).loop()
    except TraceboxError as exc:
        raise sandbox_failure(exc) from None
