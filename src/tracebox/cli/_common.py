"""What the ``tracebox`` commands share: consoles, exit codes, limit options, result display."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from tracebox.errors import TraceboxError
from tracebox.session.session import Session
from tracebox.types import ErrorInfo, Limits, RunResult, RunStatus

# Output written by user code or taken from it is never parsed as markup or emoji codes.
out = Console(highlight=False, emoji=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)

EXIT_CODES: dict[RunStatus, int] = {
    "ok": 0,
    "error": 1,
    "timeout": 2,
    "memory": 2,
    "killed": 2,
    "sandbox_error": 3,
}
EXIT_INTERRUPTED = 130  # what shells report for a program that Ctrl-C (SIGINT) ended
STATUS_STYLE: dict[RunStatus, str] = {
    "ok": "green",
    "error": "red",
    "timeout": "yellow",
    "memory": "yellow",
    "killed": "red",
    "sandbox_error": "bold red",
}
_DEFAULTS = Limits()
CpuOption = Annotated[
    float | None,
    typer.Option(
        "--cpu-seconds", help=f"CPU seconds per run \\[default: {_DEFAULTS.cpu_seconds:g}]"
    ),
]
WallOption = Annotated[
    float | None,
    typer.Option(
        "--wall-seconds", help=f"Wall-clock seconds per run \\[default: {_DEFAULTS.wall_seconds:g}]"
    ),
]
MemoryOption = Annotated[
    int | None,
    typer.Option(
        "--memory-mb", help=f"Memory of the session in MB \\[default: {_DEFAULTS.memory_mb}]"
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON only.")]


def parse_limits(cpu: float | None, wall: float | None, memory: int | None) -> Limits:
    """The limits given on the command line, the defaults for the rest."""
    given = {"cpu_seconds": cpu, "wall_seconds": wall, "memory_mb": memory}
    try:
        return Limits(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        raise typer.BadParameter(problems) from None


def read_source(path: Path) -> str:
    """A program's text, or a clear usage error."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise typer.BadParameter(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from None


def sandbox_failure(exc: TraceboxError) -> typer.Exit:
    """Show why the runtime failed (not the program); the caller raises the exit."""
    title = f"[red]{type(exc).__name__}[/]"
    err.print(Panel(Text(str(exc)), title=title, border_style="red"), soft_wrap=False)
    return typer.Exit(EXIT_CODES["sandbox_error"])


def stream_output(stream: str, text: str) -> None:
    """Pass the sandbox's output through as it arrives."""
    target = sys.stdout if stream == "stdout" else sys.stderr
    target.write(text)
    target.flush()


def interrupted(result: RunResult) -> bool:
    """Whether the run ended in KeyboardInterrupt: Ctrl-C, or code that raised it itself."""
    error = result.error
    return result.status == "error" and error is not None and error.type == "KeyboardInterrupt"


def result_style(result: RunResult) -> str:
    return "yellow" if interrupted(result) else STATUS_STYLE[result.status]


def error_text(result: RunResult) -> str:
    error = result.error or ErrorInfo(type=result.status, message="")
    if result.status == "error":
        return error.traceback.rstrip() or f"{error.type}: {error.message}"
    # a limit or a crash: say which first, then where the code was, if known
    return "\n\n".join(filter(None, [f"{error.type}: {error.message}", error.traceback.rstrip()]))


@contextlib.contextmanager
def ctrl_c_interrupts(session: Session) -> Iterator[None]:
    """While the block runs, Ctrl-C raises KeyboardInterrupt in the code running in ``session``.

    The sandbox has a session of its own, so a terminal's SIGINT reaches only us: the handler
    passes it on and raises nothing here, where the request must be watched to its end.
    """
    previous = signal.signal(signal.SIGINT, lambda signum, frame: session.interrupt())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
