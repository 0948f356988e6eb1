"""How a function problem's tests are run: split into units, and the test sandbox's program.

The test code never enters the candidate's sandbox. It runs in a sandbox of its own, where
the candidate's functions are stubs that call the host (``worker.tools``); the host calls
the candidate's sandbox and hands back a copy of the result (plain data only).

Units: in HumanEval's ``def check(candidate):`` the body's top-level statements are units;
in MBPP-style files the module's are. An ``assert`` (other than ``assert <constant>``) or a
statement that uses the candidate (its parameter name or an entry point) is a *test*;
definitions, imports and other statements are *setup*, run in order. Each unit runs in its
own ``try``, so a failing assert never hides the ones after it.

Literal tests: a test that is one call of the candidate with literal arguments checked
against a literal (``assert candidate(1, [2]) == 3``, ``assert 3 == candidate(...)``,
``assert candidate(...)``, ``assert not candidate(...)``, ``assert candidate(...) is None``,
with at most a literal message) needs no test code at all: the host makes the call and
checks the value itself, with the same ``==`` on the same plain data. Only when nothing in
the test code can rebind the called name (no assignment, definition, import or parameter of
that name, no ``import *``, no ``globals``/``exec``/``sys``...). ``Plan.host_tests``: the
leading run of literal tests (the calls keep the test code's order; the test sandbox runs
the tests after it).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
from typing import Any, Literal

from tracebox.verify.problems import FunctionProblem, ProblemError, SelfInvokingProblem

TOOL = "candidate"


Form = Literal["eq", "req", "is", "truthy", "falsy"]


@dataclasses.dataclass(frozen=True)
class LiteralCall:
    """A test the host can run itself: ``function(*args, **kwargs)`` checked by ``form``.

    Its values are shared by every candidate of the problem: never hand them to anything but
    ``Session.call`` (which pickles copies) and ``==`` on plain data.
    """

    function: str
    """The entry point called (``check``'s parameter stands for the first one)."""
    args: tuple[Any, ...] = dataclasses.field(compare=False)
    kwargs: dict[str, Any] = dataclasses.field(compare=False)
    form: Form
    """``eq``: ``value == expected``; ``req``: ``expected == value``; ``is``: ``value is
    expected`` (True, False or None); ``truthy``/``falsy``: ``assert value``/``not value``."""
    expected: Any = dataclasses.field(compare=False)
    message: tuple[Any, ...] = dataclasses.field(compare=False)
    """``(msg,)`` for ``assert ..., msg``, else ``()``: the ``AssertionError``'s args."""

    def holds(self, value: Any) -> bool:
        """The assertion on ``value`` (plain data from ``transfer.loads_untrusted``), as
        the test code evaluates it; may raise what that evaluation raises."""
        if self.form == "eq":
            return bool(value == self.expected)
        if self.form == "req":
            return bool(self.expected == value)
        if self.form == "is":
            return value is self.expected
        return bool(value) if self.form == "truthy" else not value


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
    literal: LiteralCall | None = dataclasses.field(default=None, compare=False)
    """Set for a literal test (see the module's doc)."""


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

    @functools.cached_property
    def host_tests(self) -> tuple[Unit, ...]:
        """The leading literal tests: the host runs them, the test sandbox the rest."""
        out = []
        for u in self.tests:
            if u.literal is None:
                break
            out.append(u)
        return tuple(out)


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


# Names whose presence in the test code means a called name could be rebound where a look at
# assignments cannot see it.
_DYNAMIC = frozenset(
    {"globals", "locals", "vars", "exec", "eval", "compile", "setattr", "delattr",
     "__import__", "__builtins__", "builtins", "sys", "importlib"}
)  # fmt: skip


def _rebindable(tree: ast.Module, check: ast.FunctionDef | None) -> frozenset[str] | None:
    """Names the test code binds anywhere (None: it might bind any name). ``check``'s own
    parameter is not counted: it is bound to the first entry point's stub."""
    own = check.args.args[0] if check is not None else None
    names: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            if n.id in _DYNAMIC:
                return None
            if not isinstance(n.ctx, ast.Load):
                names.add(n.id)
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(n.name)
        elif isinstance(n, ast.Import | ast.ImportFrom):
            for a in n.names:
                if a.name == "*" or a.name.split(".")[0] in _DYNAMIC:
                    return None
                names.add(a.asname or a.name.split(".")[0])
        elif isinstance(n, ast.arg) and n is not own:
            names.add(n.arg)
        elif isinstance(n, ast.Global | ast.Nonlocal):
            names.update(n.names)
        elif isinstance(n, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and n.name:
            names.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            names.add(n.rest)
        elif isinstance(n, ast.Attribute) and n.attr in _DYNAMIC:
            return None
    return frozenset(names)


_NOT_LITERAL = object()


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return _NOT_LITERAL
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


def _literal_call(stmt: ast.stmt, callees: dict[str, str]) -> LiteralCall | None:
    """The test as a ``LiteralCall`` if it has that shape; ``callees``: name -> entry point."""
    if not isinstance(stmt, ast.Assert):
        return None
    message: tuple[Any, ...] = ()
    if stmt.msg is not None:
        msg = _literal(stmt.msg)
        if msg is _NOT_LITERAL:
            return None
        message = (msg,)
    test = stmt.test
    form: Form
    expected: Any = None
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        op, left, right = test.ops[0], test.left, test.comparators[0]
        if isinstance(op, ast.Eq):
            if isinstance(left, ast.Call):
                form, call, expected = "eq", left, _literal(right)
            elif isinstance(right, ast.Call):
                form, call, expected = "req", right, _literal(left)
            else:
                return None
        elif isinstance(op, ast.Is) and isinstance(left, ast.Call):
            expected = _literal(right)
            if not (isinstance(right, ast.Constant) and expected in (True, False, None)):
                return None
            form, call = "is", left
        else:
            return None
        if expected is _NOT_LITERAL:
            return None
    elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        if not isinstance(test.operand, ast.Call):
            return None
        form, call = "falsy", test.operand
    elif isinstance(test, ast.Call):
        form, call = "truthy", test
    else:
        return None
    if not isinstance(call.func, ast.Name) or call.func.id not in callees:
        return None
    args = []
    for a in call.args:
        value = _literal(a) if not isinstance(a, ast.Starred) else _NOT_LITERAL
        if value is _NOT_LITERAL:
            return None
        args.append(value)
    kwargs = {}
    for k in call.keywords:
        value = _literal(k.value)
        if k.arg is None or value is _NOT_LITERAL:
            return None
        kwargs[k.arg] = value
    return LiteralCall(callees[call.func.id], tuple(args), kwargs, form, expected, message)


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
    bound = _rebindable(tree, check)
    module_callees = {e: e for e in entry if bound is not None and e not in bound}
    check_callees = dict(module_callees)
    if alias is not None and bound is not None and alias not in bound:
        check_callees[alias] = entry[0]
    units: list[Unit] = []
    n = 0
    for s, names, in_check in stmts:
        kind = _classify(s, names)
        first = lines[s.lineno - 1].strip() if 0 < s.lineno <= len(lines) else ""
        index = n if kind == "test" else -1
        literal = None
        if kind == "test":
            literal = _literal_call(s, check_callees if in_check else module_callees)
        units.append(Unit(kind, ast.unparse(s), s.lineno, first[:160], index, in_check, literal))
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
