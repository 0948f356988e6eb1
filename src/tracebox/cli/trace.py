"""``tracebox trace FILE``: run a file in a fresh session, recorded, and export the trace."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from tracebox.cli._common import (
    EXIT_CODES,
    EXIT_INTERRUPTED,
    CpuOption,
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
    sandbox_failure,
)
from tracebox.errors import TraceboxError
from tracebox.session.runtime import Runtime
from tracebox.trace.config import TraceConfig
from tracebox.trace.model import Trace


class Format(enum.StrEnum):
    summary = "summary"
    cwm = "cwm"
    tutor = "tutor"
    blocks = "blocks"
    jsonl = "jsonl"
    parquet = "parquet"
    raw = "raw"


def _to_stderr(stream: str, text: str) -> None:
    """The program's output goes to stderr: stdout is the trace's."""
    sys.stderr.write(text)
    sys.stderr.flush()


def _summary(trace: Trace) -> Table:
    table = Table(title="trace", title_style="bold", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value")
    table.add_row("mode", f"{trace.mode} ({trace.backend}, Python {trace.python})")
    for unit, n in trace.step_counts().items():
        table.add_row(unit.replace("_", " "), "not measured" if n is None else str(n))
    if trace.truncation is not None:
        t = trace.truncation
        table.add_row("truncated", Text(f"at step {t.step} ({t.reason}): {t.dropped}", "yellow"))
    if trace.coverage is not None:
        for file, lines in trace.coverage.lines.items():
            arcs = len(trace.coverage.arcs.get(file, ()))
            table.add_row(f"lines run in {file}", f"{len(lines)}: {_ranges(lines)}; {arcs} arcs")
    if trace.error is not None:
        table.add_row("ended by", Text(trace.error.repr, "red"))
    return table


def _ranges(lines: tuple[int, ...]) -> str:
    """``1-4, 7, 9-10``"""
    spans: list[list[int]] = []
    for n in lines:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _write(trace: Trace, fmt: Format, output: Path | None) -> None:
    if fmt is Format.summary:
        out.print(_summary(trace), soft_wrap=False)
        return
    if fmt in (Format.jsonl, Format.parquet):
        if output is None and fmt is Format.parquet:
            raise typer.BadParameter("--format parquet needs --output FILE")
        target = str(output) if output is not None else "/dev/stdout"
        written = trace.to_jsonl(target) if fmt is Format.jsonl else trace.to_parquet(target)
        if output is not None:
            err.print(f"wrote {written} rows to {output}")
        return
    data: Any
    if fmt is Format.cwm:
        data = trace.to_cwm()
    elif fmt is Format.tutor:
        data = trace.to_tutor()
    elif fmt is Format.blocks:
        data = trace.to_ldb_blocks()
    else:
        data = trace.to_wire()
    indent = None if fmt is Format.raw else 1  # raw is for programs: one line
    text = json.dumps(data, ensure_ascii=False, indent=indent) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {fmt.value} trace to {output}")


def trace(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, metavar="FILE", help="Python file to run."),
    ],
    *,
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="What to print or write.")
    ] = Format.summary,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="Write here instead of stdout."),
    ] = None,
    max_steps: Annotated[
        int, typer.Option("--max-steps", min=1, help="Steps recorded before the trace is cut.")
    ] = 1_000_000,
    libraries: Annotated[
        bool, typer.Option("--libraries", help="Record inside library code too.")
    ] = False,
    cpu_seconds: CpuOption = None,
    wall_seconds: WallOption = None,
    memory_mb: MemoryOption = None,
) -> None:
    """Run FILE in a fresh confined session, record every step, and print or write the trace.

    The program's own output goes to stderr. Formats: summary (counts, coverage), cwm (Meta
    CWM frames), tutor (Python Tutor), blocks (LDB basic blocks), jsonl and parquet (a row
    per step), raw (tracebox's wire JSON). The file runs as cell ``<cell-1>``.

    Exit code: that of ``tracebox run`` for the program's outcome.
    """
    code = read_source(file)
    limits = parse_limits(cpu_seconds, wall_seconds, memory_mb)
    config = TraceConfig(mode="full", max_steps=max_steps, trace_libraries=libraries)
    try:
        with Runtime(limits=limits, pool_size=0) as rt:
            session = rt.session()
            with ctrl_c_interrupts(session):
                result = session.run(code, on_output=_to_stderr, trace=config)
    except TraceboxError as exc:
        raise sandbox_failure(exc) from None
    if not result.ok:
        err.print(Text(error_text(result), style=result_style(result)))
    if result.trace is None:
        err.print(f"[red]no trace:[/] {result.trace_error or 'the session died before sending it'}")
    else:
        _write(result.trace, fmt, output)
    raise typer.Exit(EXIT_INTERRUPTED if interrupted(result) else EXIT_CODES[result.status])
