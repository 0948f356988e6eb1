"""The ``tracebox`` command: run a file, a REPL, a health check and a demo, over the library.

This module holds the Typer ``app``, ``main()`` and the ``run`` and ``doctor`` commands;
``repl`` and ``demo`` live in modules of their own, shared helpers in ``_common``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tracebox import __version__
from tracebox.cli import demo, eval, journal, repl, trace
from tracebox.cli._common import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    CpuOption,
    JsonOption,
    MemoryOption,
    WallOption,
    ctrl_c_interrupts,
    err,
    error_text,
    interrupted,
    out,
    parse_limits,
    read_source,
    result_style,
    stream_output,
)
from tracebox.errors import TraceboxError
from tracebox.sandbox.doctor import Report, diagnose
from tracebox.session.runtime import Runtime
from tracebox.types import ErrorInfo, RunResult

app = typer.Typer(
    name="tracebox",
    help="Run untrusted Python in confined, persistent sessions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        out.print(f"tracebox {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Run untrusted Python in confined, persistent sessions."""


# -- run ------------------------------------------------------------------------------------


def _failure_panel(result: RunResult) -> Panel:
    style = result_style(result)
    facts = f"cpu {result.cpu_seconds:.2f} s · wall {result.wall_seconds:.2f} s"
    if result.peak_memory_mb is not None:
        facts += f" · peak {result.peak_memory_mb:.1f} MB"
    text = Text(error_text(result), style=style)
    return Panel(
        text,
        title=f"[{style}]{result.status}[/]",
        subtitle=facts,
        border_style=style,
        width=max(err.measure(text).maximum + 4, len(facts) + 6),  # the facts fit too
    )


def run(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, metavar="FILE", help="Python file to run."),
    ],
    cpu_seconds: CpuOption = None,
    wall_seconds: WallOption = None,
    memory_mb: MemoryOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run FILE in a fresh confined session.

    Ctrl-C raises KeyboardInterrupt in the program, which then ends with status "error".

    Exit code: 0 ok, 1 error, 2 timeout / memory / killed, 3 sandbox error, 130 interrupted
    (the program ended in KeyboardInterrupt, as after Ctrl-C).
    """
    code = read_source(file)
    limits = parse_limits(cpu_seconds, wall_seconds, memory_mb)
    try:
        with Runtime(limits=limits, pool_size=0) as rt:
            session = rt.session()
            with ctrl_c_interrupts(session):
                result = session.run(code, on_output=None if json_output else stream_output)
    except TraceboxError as exc:
        result = RunResult(
            status="sandbox_error",
            session_alive=False,
            error=ErrorInfo(type=type(exc).__name__, message=str(exc)),
        )
    if json_output:
        sys.stdout.write(result.model_dump_json() + "\n")
    elif not result.ok:
        err.print(_failure_panel(result), soft_wrap=False)
    raise typer.Exit(EXIT_INTERRUPTED if interrupted(result) else EXIT_CODES[result.status])


# -- doctor ---------------------------------------------------------------------------------


def _doctor_table(report: Report) -> Table:
    table = Table(title="tracebox doctor", title_style="bold", show_lines=False)
    table.add_column("", no_wrap=True)
    table.add_column("layer", style="bold", no_wrap=True)
    table.add_column("detail")
    for check in report.checks:
        if check.ok:
            mark = Text("✔", style="green")
        else:
            mark = Text("✘", style="red" if check.required else "yellow")
        layer = Text(check.layer + ("" if check.required or check.ok else " (optional)"))
        table.add_row(mark, layer, Text(check.detail))
    return table


def doctor(json_output: JsonOption = False) -> None:
    """Report which confinement layers are active here, measured inside a real session.

    Exit code: 0 if every required layer is active, 1 otherwise.
    """
    report = diagnose()
    if json_output:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        out.print(_doctor_table(report), soft_wrap=False)
        failing = [c.layer for c in report.checks if c.required and not c.ok]
        if failing:
            out.print(f"[bold red]✘ not confined here:[/] {', '.join(failing)}")
        else:
            out.print("[bold green]✔ every required layer is active[/]")
    raise typer.Exit(0 if report.ok else 1)


# -- the commands, in the order --help lists them --------------------------------------------

for _command in (
    run,
    trace.trace,
    eval.eval,
    journal.journal,
    journal.replay,
    repl.repl,
    doctor,
    demo.demo,
):
    app.command()(_command)


def main() -> None:
    app()
