"""Problem formats: function problems (HumanEval, MBPP), self-invoking ones (HumanEval Pro,
MBPP Pro) and stdin/stdout ones (APPS, CodeContests), as validated, frozen models.

``problem_from_record(record)`` recognises a dataset's own row format (by its keys) and
returns the model; ``Problem`` is the tagged union of the three (``kind`` tells them apart).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "FunctionProblem",
    "IOCase",
    "IOProblem",
    "OutputMatch",
    "Problem",
    "ProblemError",
    "SelfInvokingProblem",
    "problem_from_record",
]


class ProblemError(ValueError):
    """A problem record that cannot be verified (missing fields, tests that do not parse)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FunctionProblem(_Frozen):
    """HumanEval / MBPP style: the program is ``prompt + completion``; ``test`` either defines
    ``check(candidate)`` (HumanEval) or holds top-level asserts that call ``entry_point`` by
    name (MBPP). Each assert, and each statement that calls the candidate, is one test."""

    kind: Literal["function"] = "function"
    task_id: str
    prompt: str = ""
    """Code the completion continues (signature and docstring); dataset code, trusted."""
    entry_point: str
    """The function under test."""
    test: str
    canonical_solution: str | None = None
    """A known-good completion, if the dataset has one."""

    def program(self, completion: str) -> str:
        return self.prompt + completion

    def entry_points(self) -> tuple[str, ...]:
        return (self.entry_point,)

    def trusted_prelude(self) -> str:
        """Dataset code the tests may rely on (helpers the prompt defines, its imports)."""
        return self.prompt


class SelfInvokingProblem(_Frozen):
    """HumanEval Pro / MBPP Pro: a base problem and a harder one whose solution should call
    the base one. The program is ``raw_problem + completion`` (the completion solves both);
    ``test_code`` holds top-level asserts on the new function."""

    kind: Literal["self_invoking"] = "self_invoking"
    task_id: str
    raw_problem: str
    new_problem: str
    test_code: str
    raw_solution: str | None = None
    new_solution: str | None = None
    entry_point: str | None = None
    """The new function's name; by default the last ``def`` of ``new_problem``."""

    def program(self, completion: str) -> str:
        return self.raw_problem + completion

    @property
    def canonical_solution(self) -> str | None:
        if self.raw_solution is None or self.new_solution is None:
            return None
        return self.raw_solution + self.new_problem + self.new_solution

    def entry_points(self) -> tuple[str, ...]:
        new = self.entry_point or _last_def(self.new_problem)
        base = _last_def(self.raw_problem)
        if new is None:
            raise ProblemError(f"{self.task_id}: new_problem defines no function")
        return (new,) if base is None or base == new else (new, base)

    def trusted_prelude(self) -> str:
        """The base problem (it parses: a signature and a docstring) and the new problem's
        imports (its ``def`` has no body yet)."""
        imports = "".join(
            line + "\n" for line in self.new_problem.splitlines() if _IMPORT.match(line)
        )
        return self.raw_problem + "\n" + imports


class OutputMatch(_Frozen):
    """How a program's output is compared with the expected output (on the host)."""

    mode: Literal["exact", "lines", "tokens"] = "lines"
    """``exact``: byte for byte. ``lines``: trailing whitespace of each line and trailing
    blank lines ignored (what most judges do). ``tokens``: whitespace-separated tokens."""
    float_tolerance: float | None = Field(None, ge=0)
    """With ``tokens``: tokens that both parse as numbers match if they differ by at most
    this, absolutely or relatively."""


class IOCase(_Frozen):
    input: str
    output: str


class IOProblem(_Frozen):
    """APPS / CodeContests style: the program reads stdin and writes stdout; one test per
    case. The program is ``prompt + completion`` (``prompt`` is usually empty)."""

    kind: Literal["stdio"] = "stdio"
    task_id: str
    cases: tuple[IOCase, ...] = Field(min_length=1)
    prompt: str = ""
    match: OutputMatch = OutputMatch()
    canonical_solution: str | None = None

    def program(self, completion: str) -> str:
        return self.prompt + completion


Problem = Annotated[FunctionProblem | SelfInvokingProblem | IOProblem, Field(discriminator="kind")]
"""One problem of any supported format."""

_IMPORT = re.compile(r"^(import\s+\w|from\s+[\w.]+\s+import\s)")
_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


def _last_def(source: str) -> str | None:
    names = _DEF.findall(source)
    return names[-1] if names else None


def _mbpp_entry_point(tests: list[str]) -> str:
    for test in tests:
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id not in _BUILTIN_CALLS
            ):
                return node.func.id
    raise ProblemError("cannot tell which function the MBPP tests call")


_BUILTIN_CALLS = frozenset(
    {"set", "list", "tuple", "sorted", "abs", "round", "len", "str", "int", "float", "isclose"}
)


def _id(value: object) -> str:
    """Task ids may be numbers (MBPP, APPS); they are strings here."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ProblemError(f"the task id must be a string or a number, not {value!r}")
    return value


def _as_str(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise ProblemError(f"field {key!r} must be a string, not {type(value).__name__}")
    return value


def _text(value: object) -> object:
    """APPS sometimes stores a case as a list of lines."""
    return "\n".join(map(str, value)) + "\n" if isinstance(value, list) else value


def _cases(inputs: Any, outputs: Any, where: str) -> tuple[IOCase, ...]:
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise ProblemError(f"{where}: inputs and outputs must be lists")
    if len(inputs) != len(outputs):
        raise ProblemError(f"{where}: {len(inputs)} inputs but {len(outputs)} outputs")
    cases = []
    for i, (raw_in, raw_out) in enumerate(zip(inputs, outputs, strict=True)):
        inp, out = _text(raw_in), _text(raw_out)
        if not isinstance(inp, str) or not isinstance(out, str):
            raise ProblemError(f"{where}: case {i} is not text")
        cases.append(IOCase(input=inp, output=out))
    return tuple(cases)


def problem_from_record(
    record: Mapping[str, Any],
) -> FunctionProblem | SelfInvokingProblem | IOProblem:
    """Recognise a dataset row and build its problem. Accepted shapes (by their keys):

    - ours: any model's fields with ``kind``;
    - HumanEval: ``task_id, prompt, entry_point, test`` (+ ``canonical_solution``);
    - MBPP: ``task_id, text, code, test_list`` (+ ``test_setup_code``); the program is the
      completion alone;
    - HumanEval Pro / MBPP Pro: ``raw_problem, new_problem, test_code`` (+ ``id``,
      ``raw_solution``, ``new_solution``);
    - APPS: ``input_output`` (a JSON string with ``inputs``/``outputs``; call-based
      problems with ``fn_name`` are not supported) and ``problem_id``;
    - CodeContests: ``name`` and ``public_tests``/``private_tests``/``generated_tests``
      (each ``{"input": [...], "output": [...]}``);
    - plain stdin/stdout: ``task_id`` and ``inputs``/``outputs`` lists.

    Raises ``ProblemError`` saying what is missing or malformed.
    """
    if not isinstance(record, Mapping):
        raise ProblemError(f"a problem must be a JSON object, not {type(record).__name__}")
    try:
        return _from_record(record)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ProblemError(f"{loc}: {first['msg']}") from None


def _from_record(r: Mapping[str, Any]) -> FunctionProblem | SelfInvokingProblem | IOProblem:
    kind = r.get("kind")
    if kind == "function":
        return FunctionProblem.model_validate(r)
    if kind == "self_invoking":
        return SelfInvokingProblem.model_validate(r)
    if kind == "stdio":
        return IOProblem.model_validate(r)
    if kind is not None:
        raise ProblemError(f"unknown problem kind {kind!r}")
    if {"raw_problem", "new_problem", "test_code"} <= r.keys():
        tid = r.get("task_id", r.get("id"))
        return SelfInvokingProblem(
            task_id=_id(tid),
            raw_problem=_as_str(r, "raw_problem"),
            new_problem=_as_str(r, "new_problem"),
            test_code=_as_str(r, "test_code"),
            raw_solution=r.get("raw_solution"),
            new_solution=r.get("new_solution"),
            entry_point=r.get("entry_point"),
        )
    if {"prompt", "entry_point", "test"} <= r.keys():
        return FunctionProblem(
            task_id=_id(r.get("task_id")),
            prompt=_as_str(r, "prompt"),
            entry_point=_as_str(r, "entry_point"),
            test=_as_str(r, "test"),
            canonical_solution=r.get("canonical_solution"),
        )
    if "test_list" in r:
        tests = r["test_list"]
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise ProblemError("field 'test_list' must be a list of strings")
        setup = r.get("test_setup_code") or ""
        imports = r.get("test_imports") or []
        head = "".join(f"{line}\n" for line in imports) + (setup + "\n" if setup else "")
        return FunctionProblem(
            task_id=_id(r.get("task_id")),
            entry_point=r.get("entry_point") or _mbpp_entry_point(tests),
            test=head + "\n".join(tests) + "\n",
            canonical_solution=r.get("code"),
        )
    if "input_output" in r:
        raw = r["input_output"]
        try:
            io = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise ProblemError(f"field 'input_output' is not valid JSON: {exc}") from None
        if not isinstance(io, dict):
            raise ProblemError("field 'input_output' must hold an object")
        if io.get("fn_name"):
            raise ProblemError("call-based APPS problems (fn_name) are not supported")
        tid = r.get("task_id", r.get("problem_id"))
        solutions = r.get("solutions")
        if isinstance(solutions, str):
            try:
                solutions = json.loads(solutions)
            except ValueError:
                solutions = None
        return IOProblem(
            task_id=_id(tid),
            cases=_cases(io.get("inputs"), io.get("outputs"), "input_output"),
            prompt=r.get("starter_code") or "",
            canonical_solution=solutions[0] if isinstance(solutions, list) and solutions else None,
        )
    groups = [g for g in ("public_tests", "private_tests", "generated_tests") if g in r]
    if groups:
        cases: list[IOCase] = []
        for g in groups:
            tests = r[g] or {}
            if not isinstance(tests, dict):
                raise ProblemError(f"field {g!r} must be an object with input and output lists")
            cases.extend(_cases(tests.get("input", []), tests.get("output", []), g))
        return IOProblem(task_id=_id(r.get("task_id", r.get("name"))), cases=tuple(cases))
    if {"inputs", "outputs"} <= r.keys():
        return IOProblem(
            task_id=_id(r.get("task_id")),
            cases=_cases(r["inputs"], r["outputs"], "inputs/outputs"),
            prompt=r.get("prompt") or "",
            canonical_solution=r.get("canonical_solution"),
        )
    raise ProblemError(
        "unrecognised problem: expected HumanEval (prompt, entry_point, test), MBPP "
        "(test_list), HumanEval Pro (raw_problem, new_problem, test_code), APPS "
        "(input_output), CodeContests (public_tests ...) or stdio (inputs, outputs) fields; "
        f"got {sorted(r)[:12]}"
    )
