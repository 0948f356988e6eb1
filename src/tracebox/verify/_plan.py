"""How a function problem's tests are run: split into units, and the test sandbox's program.

The test code never enters the candidate's sandbox. It runs in a sandbox of its own, where
the candidate's functions are stubs that call the host (``worker.tools``); the host calls
the candidate's sandbox and hands back a copy of the result (plain data only).

Units: in HumanEval's ``def check(candidate):`` the body's top-level statements are units;
in MBPP-style files the module's are. An ``assert`` (other than ``assert <constant>``) or a
statement that uses the candidate (its parameter name or an entry point) is a *test*;
definitions, imports and other statements are *setup*, run in order. Each unit runs in its
own ``try``, so a failing assert never hides the ones after it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
from typing import Literal

from tracebox.verify.problems import FunctionProblem, ProblemError, SelfInvokingProblem

TOOL = "candidate"


@dataclasses.dataclass(frozen=True)
class Unit:
    kind: Literal["setup", "test"]
    source: str
    """The statement, unparsed at module level."""
    line: int
    """Its line in the test code."""
    name: str
    """Its first source line, for people."""
    index: int
    """Test index (tests) or -1 (setup)."""
    in_check: bool = False
    """Part of ``check``'s body: runs inside a function, as it did there."""


@dataclasses.dataclass(frozen=True)
class Plan:
    task_id: str
    prelude: str
    """Trusted dataset code run before the tests (the prompt's helpers and imports)."""
    entry_points: tuple[str, ...]
    alias: str | None
    """``check``'s parameter name, bound to the first entry point."""
    units: tuple[Unit, ...]

    @property
    def tests(self) -> tuple[Unit, ...]:
        return tuple(u for u in self.units if u.kind == "test")


def _uses(node: ast.AST, names: frozenset[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def _is_check_call(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Call)
        and isinstance(stmt.value.func, ast.Name)
        and stmt.value.func.id == "check"
    )


def _classify(stmt: ast.stmt, names: frozenset[str]) -> Literal["setup", "test"]:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return "setup"
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return "setup"
    if isinstance(stmt, ast.Assert):
        return "setup" if isinstance(stmt.test, ast.Constant) else "test"
    return "test" if _uses(stmt, names) else "setup"


def _prelude(source: str) -> str:
    """The prompt if it parses, else only its import lines."""
    try:
        ast.parse(source)
    except SyntaxError:
        keep = [
            line
            for line in source.splitlines()
            if line.startswith(("import ", "from ")) and _parses(line)
        ]
        return "\n".join(keep) + "\n"
    return source


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def plan(problem: FunctionProblem | SelfInvokingProblem) -> Plan:
    """Split the problem's tests into units (cached per problem)."""
    test = problem.test if isinstance(problem, FunctionProblem) else problem.test_code
    entry = problem.entry_points()
    try:
        tree = ast.parse(test)
    except SyntaxError as exc:
        raise ProblemError(f"{problem.task_id}: the test code does not parse: {exc}") from None
    lines = test.splitlines()
    check = next(
        (
            s
            for s in tree.body
            if isinstance(s, ast.FunctionDef) and s.name == "check" and s.args.args
        ),
        None,
    )
    alias = check.args.args[0].arg if check is not None else None
    # the module's statements run first, then check's body (the harness calls check last)
    stmts = [(s, frozenset(entry), False) for s in tree.body if s is not check]
    stmts = [x for x in stmts if not _is_check_call(x[0])]
    if check is not None:
        inner = frozenset({*entry, alias} if alias else entry)
        stmts.extend((b, inner, True) for b in check.body)
    units: list[Unit] = []
    n = 0
    for s, names, in_check in stmts:
        kind = _classify(s, names)
        first = lines[s.lineno - 1].strip() if 0 < s.lineno <= len(lines) else ""
        index = n if kind == "test" else -1
        units.append(Unit(kind, ast.unparse(s), s.lineno, first[:160], index, in_check))
        n += kind == "test"
    result = Plan(problem.task_id, _prelude(problem.trusted_prelude()), entry, alias, tuple(units))
    if not result.tests:
        raise ProblemError(f"{problem.task_id}: the test code has no tests (asserts)")
    try:  # the test program must compile; a dataset bug is reported before anything runs
        ast.parse(harness(result, "0", 0))
    except SyntaxError as exc:
        raise ProblemError(f"{problem.task_id}: cannot run the tests one by one: {exc}") from None
    return result


_HEAD = """\
import builtins as __tb_b
import random as __tb_random
__tb_random.seed(0)  # tests that draw random inputs draw the same ones every time
from tracebox.worker import tools as __tb_tools
def __tb_stub(name, call=__tb_tools.call):
    def candidate(*args, **kwargs):
        return call({tool!r}, __tb_at[0], name, args, kwargs)
    candidate.__name__ = candidate.__qualname__ = name
    return candidate
def __tb_note(i, kind, exc, str=str, type=type):
    try:
        msg = str(exc)[:1000]
    except Exception:
        msg = "<str() of the exception failed>"
    __tb_res.append((i, kind, type(exc).__name__, msg))
__tb_at = [-1]
__tb_res = [{token!r}]
try:
    exec(compile({prelude!r}, "<prompt>", "exec"), globals())
except Exception as __tb_e:
    __tb_note(-1, "prelude", __tb_e)
"""

_UNIT = """\
__tb_at[0] = {i}
try:
{body}
except __tb_b.AssertionError as __tb_e:
    __tb_note({i}, "failed", __tb_e)
except __tb_b.KeyboardInterrupt:
    raise
except __tb_b.BaseException as __tb_e:
    __tb_note({i}, "error", __tb_e)
else:
    __tb_res.append(({i}, "passed", "", ""))
"""

_SETUP = """\
try:
{body}
except __tb_b.KeyboardInterrupt:
    raise
except __tb_b.BaseException as __tb_e:
    __tb_note({line}, "setup", __tb_e)
"""


def _indent(source: str, levels: int = 1) -> str:
    pad = "    " * levels
    return "\n".join(pad + line if line else line for line in source.splitlines())


def _unit(u: Unit) -> str:
    if u.kind == "setup":
        return _SETUP.format(body=_indent(u.source), line=u.line)
    return _UNIT.format(body=_indent(u.source), i=u.index)


def harness(p: Plan, token: str, start: int) -> str:
    """The test sandbox's cell: prelude, stubs, then each unit in its own ``try`` (check's
    body inside a function ``__tb_check(candidate)``, as it was written); tests before
    ``start`` are skipped (setup still runs). Its value is ``[token, *results]``, results
    being ``(test index, status, exception type, message)`` tuples; setup and prelude
    failures are noted with kind ``setup`` (and the line) or ``prelude``."""
    parts = [_HEAD.format(tool=TOOL, prelude=p.prelude, token=token)]
    for name in p.entry_points:
        parts.append(f"globals()[{name!r}] = __tb_stub({name!r})\n")
    run = [u for u in p.units if u.kind == "setup" or u.index >= start]
    parts.extend(_unit(u) for u in run if not u.in_check)
    if p.alias is not None:
        body = [_indent(_unit(u)) for u in run if u.in_check]
        parts.append(f"def __tb_check({p.alias}):\n" + "\n".join(body or ["    pass"]) + "\n")
        parts.append(f"__tb_check(globals()[{p.entry_points[0]!r}])\n")
    parts.append("__tb_res\n")
    return "".join(parts)
