"""Verification: run candidates against tests, get verdicts that load cannot change and
reward hacks cannot fake, with cost figures and process rewards from traces.

``check(problem, completion)`` verifies one candidate; ``run_batch(problems, samples,
workers=N)`` many, on threads over one runtime; a ``Verifier`` keeps its runtime and test
sandboxes for repeated use. ``tracebox eval PROBLEMS SAMPLES`` is the command-line face.
How a verdict is reached is told in ``tracebox.verify.engine``.
"""

from __future__ import annotations

from tracebox.verify.engine import Verifier, check, run_batch
from tracebox.verify.files import (
    BadInputFile,
    read_problems,
    read_samples,
    write_results,
)
from tracebox.verify.passk import estimate_pass_at_k, pass_at_k
from tracebox.verify.problems import (
    FunctionProblem,
    IOCase,
    IOProblem,
    OutputMatch,
    Problem,
    ProblemError,
    SelfInvokingProblem,
    problem_from_record,
)
from tracebox.verify.process import (
    LineLabel,
    Question,
    grade,
    line_labels,
    questions,
)
from tracebox.verify.results import Sample, TestResult, TestStatus, Verdict, VerifyConfig
from tracebox.verify.stdio import outputs_match

__all__ = [
    "BadInputFile",
    "FunctionProblem",
    "IOCase",
    "IOProblem",
    "LineLabel",
    "OutputMatch",
    "Problem",
    "ProblemError",
    "Question",
    "Sample",
    "SelfInvokingProblem",
    "TestResult",
    "TestStatus",
    "Verdict",
    "Verifier",
    "VerifyConfig",
    "check",
    "estimate_pass_at_k",
    "grade",
    "line_labels",
    "outputs_match",
    "pass_at_k",
    "problem_from_record",
    "questions",
    "read_problems",
    "read_samples",
    "run_batch",
    "write_results",
]
