"""``tracebox journal JOURNAL`` (list and verify) and ``tracebox replay JOURNAL SESSION``."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

from tracebox.cli._common import err, out, sandbox_failure
from tracebox.errors import TraceboxError
from tracebox.journal.errors import JournalError
from tracebox.journal.model import SessionSummary, VerifyReport
from tracebox.journal.store import Journal

JournalArg = Annotated[
    Path,
    typer.Argument(
        exists=True, dir_okay=False, metavar="JOURNAL", help="The journal's SQLite file."
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        exists=True,
        dir_okay=False,
        help="File holding the key of a keyed (HMAC) journal, as raw bytes.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON only.")]
_STATUS_STYLE = {"closed": "green", "open": "yellow", "dead": "red"}
_OUTCOME = {
    "match": ("✔ match", "green"),
    "mismatch": ("✘ mismatch", "red"),
    "skipped": ("- skipped", "yellow"),
    "failed": ("✘ failed", "bold red"),
}


def _open(path: Path, key_file: Path | None) -> Journal:
    key = key_file.read_bytes() if key_file is not None else None
    try:
        return Journal(path, key=key, readonly=True)
    except JournalError as exc:
        raise typer.BadParameter(str(exc)) from None


def _when(t: datetime.datetime | None) -> str:
    return "" if t is None else t.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _sessions_table(sessions: list[SessionSummary]) -> Table:
    table = Table(title="sessions", title_style="bold")
    columns: list[tuple[str, JustifyMethod]] = [
        ("session", "left"),
        ("parent", "left"),
        ("events", "right"),
        ("runs", "right"),
        ("failed", "right"),
        ("created", "left"),
        ("closed", "left"),
        ("status", "left"),
    ]
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    for s in sessions:
        table.add_row(
            s.id,
            s.parent or "",
            str(s.events),
            str(s.runs),
            str(s.failed_runs) if s.failed_runs else "",
            _when(s.created),
            _when(s.closed),
            Text(s.status, style=_STATUS_STYLE[s.status]),
        )
    return table


def _print_verdict(report: VerifyReport) -> None:
    if report.ok:
        unpinned = f" ({report.unpinned} after the head record)" if report.unpinned else ""
        out.print(f"[bold green]✔ {report.describe()}[/]{unpinned}")
        return
    err.print(f"[bold red]✘ {report.describe()}[/]")
    for p in report.problems[1:]:
        where = f"seq {p.seq}: " if p.seq is not None else ""
        err.print(f"  also: {where}{p.what}")


def journal(
    path: JournalArg, *, key_file: KeyFileOption = None, json_output: JsonOption = False
) -> None:
    """List the sessions in JOURNAL and verify its hash chain.

    Verification covers SQLite's own integrity check, every row's hash and link to the row
    before, and the head record beside the file (which shows a cut tail).

    Exit code: 0 if the journal verifies, 1 if it does not (the first bad seq is named).
    """
    j = _open(path, key_file)
    report = j.verify()
    sessions: list[SessionSummary] = []
    unreadable = None
    try:
        sessions = j.sessions()
    except JournalError as exc:
        unreadable = str(exc)
    if json_output:
        data = {
            "sessions": [s.model_dump(mode="json") for s in sessions],
            "verify": {**report.model_dump(mode="json"), "first_bad_seq": report.first_bad_seq},
        }
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
    else:
        if unreadable is not None:
            err.print(f"[red]cannot list the sessions:[/] {unreadable}")
        elif sessions:
            out.print(_sessions_table(sessions), soft_wrap=False)
        else:
            out.print("no sessions")
        _print_verdict(report)
    raise typer.Exit(0 if report.ok else 1)


def _session_id(j: Journal, wanted: str) -> str:
    """``wanted``, or the one session whose id starts with it."""
    try:
        ids = [s.id for s in j.sessions()]
    except JournalError as exc:
        err.print(f"[red]✘ {exc}[/]")
        raise typer.Exit(1) from None
    if wanted in ids:
        return wanted
    hits = [i for i in ids if i.startswith(wanted)]
    if len(hits) == 1:
        return hits[0]
    what = "matches several sessions" if hits else "is not a session of this journal"
    raise typer.BadParameter(f"{wanted!r} {what} (`tracebox journal {j.path}` lists them)")


def _details(
    diffs: list[tuple[str, str | None, str | None]], suspects: list[str], *, matched: bool
) -> Text:
    text = Text()
    for field, a, b in diffs:
        text.append(f"{field}: ", style="bold")
        text.append(f"{_short(a)} → {_short(b)}\n")
    if suspects:
        text.append("reproduced, though it uses: " if matched else "likely: ", style="bold")
        text.append("; ".join(suspects))
    return text


def _short(value: str | None, limit: int = 60) -> str:
    if value is None:
        return "None"
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def replay(
    path: JournalArg,
    session_id: Annotated[
        str, typer.Argument(metavar="SESSION_ID", help="The session (or a unique prefix).")
    ],
    *,
    key_file: KeyFileOption = None,
    trust_pickles: Annotated[
        bool,
        typer.Option(
            "--trust-pickles",
            help="Unpickle call arguments that are not plain data (runs what they name).",
        ),
    ] = False,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Replay even if the journal does not verify.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Re-execute a session of JOURNAL in a fresh sandbox and compare it step by step.

    Each run and call is compared on status, stdout, stderr, value and error type (and the
    trace, when it was traced); a step that differs is shown with its likely source of
    nondeterminism (time, random, uuid, os.urandom, id(), set order, files, environment).

    Exit code: 0 if every step matches (or was skipped for a stated reason), 1 if any step
    differs or could not be replayed, or the journal does not verify; 3 if the sandbox failed.
    """
    from tracebox.journal.replay import replay as run_replay

    j = _open(path, key_file)
    verified = j.verify()
    if not verified.ok:
        _print_verdict(verified)
        if not no_verify:
            err.print("refusing to replay a journal that does not verify (see --no-verify)")
            raise typer.Exit(1)
    sid = _session_id(j, session_id)
    try:
        report = run_replay(j, sid, trust_pickles=trust_pickles)
    except JournalError as exc:  # a journal that cannot be read or replayed as it is
        err.print(f"[red]✘ {exc}[/]")
        raise typer.Exit(1) from None
    except TraceboxError as exc:
        raise sandbox_failure(exc) from None
    if json_output:
        sys.stdout.write(report.model_dump_json(indent=1) + "\n")
        raise typer.Exit(0 if report.ok and verified.ok else 1)
    table = Table(title=f"replay of {sid}", title_style="bold")
    for name in ("seq", "kind", "what", "result", "details"):
        table.add_column(name, no_wrap=name != "details", overflow="fold")
    for step in report.steps:
        label, style = _OUTCOME[step.outcome]
        kind = step.kind if step.session == sid else f"{step.kind} ({step.session[:6]})"
        suspects = [
            f"{s.source} ({s.evidence}{'' if s.seq in (None, step.seq) else f', seq {s.seq}'})"
            for s in step.suspects
        ]
        diffs = [(d.field, d.recorded, d.replayed) for d in step.diffs]
        details = _details(diffs, suspects, matched=step.outcome == "match")
        if step.note:
            details.append(("\n" if details else "") + step.note, style="dim")
        table.add_row(str(step.seq), kind, step.what, Text(label, style=style), details)
    out.print(table, soft_wrap=False)
    counts = ", ".join(
        f"{report.count(o)} {o}"
        for o in ("match", "mismatch", "skipped", "failed")
        if report.count(o)
    )
    style = "bold green" if report.ok else "bold red"
    out.print(f"[{style}]{'✔' if report.ok else '✘'} {counts}[/]")
    raise typer.Exit(0 if report.ok and verified.ok else 1)
