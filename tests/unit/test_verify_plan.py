"""How tests are split into units, and the program the test sandbox runs (no sandbox here)."""

from __future__ import annotations

import ast

import pytest

from tracebox.verify import FunctionProblem, ProblemError, SelfInvokingProblem
from tracebox.verify._plan import harness, plan

HUMANEVAL_TEST = """\
METADATA = {"author": "x"}


def check(candidate):
    import math
    assert candidate(1) == 2
    assert True, "constant asserts test nothing"
    xs = [candidate(i) for i in range(3)]
    assert xs == [2, 3, 4], "message"
    for i in range(3):
        assert candidate(i) > i
    helper = lambda v: v + 1
    assert math.isclose(helper(1), 2)
"""


def _problem(test: str, entry: str = "inc", prompt: str = "") -> FunctionProblem:
    return FunctionProblem(task_id="T", prompt=prompt, entry_point=entry, test=test)


def test_check_body_is_split_into_setup_and_tests() -> None:
    p = plan(_problem(HUMANEVAL_TEST))
    kinds = [(u.kind, u.name) for u in p.units]
    assert kinds == [
        ("setup", 'METADATA = {"author": "x"}'),
        ("setup", "import math"),
        ("test", "assert candidate(1) == 2"),
        ("setup", 'assert True, "constant asserts test nothing"'),
        ("test", "xs = [candidate(i) for i in range(3)]"),
        ("test", 'assert xs == [2, 3, 4], "message"'),
        ("test", "for i in range(3):"),
        ("setup", "helper = lambda v: v + 1"),
        ("test", "assert math.isclose(helper(1), 2)"),
    ]
    assert [u.index for u in p.tests] == [0, 1, 2, 3, 4]
    assert p.alias == "candidate" and p.entry_points == ("inc",)
    assert [u.in_check for u in p.units] == [False] + [True] * 8


def test_module_level_asserts_call_the_entry_point_by_name() -> None:
    test = "import math\nassert inc(1) == 2\nx = inc(5)\nassert x == 6\nprint('done')\n"
    p = plan(_problem(test))
    assert [u.kind for u in p.units] == ["setup", "test", "test", "test", "setup"]
    assert p.alias is None


def test_a_harness_call_of_check_is_dropped() -> None:
    p = plan(_problem("def check(f):\n    assert f(1) == 2\n\ncheck(inc)\n"))
    assert [u.name for u in p.units] == ["assert f(1) == 2"] and p.alias == "f"


def test_the_program_runs_each_unit_in_its_own_try_and_ends_with_the_token() -> None:
    p = plan(_problem(HUMANEVAL_TEST, prompt="def inc(x):\n    '''doc'''\n"))
    code = harness(p, "TOKEN", 0)
    tree = ast.parse(code)
    last = tree.body[-1]
    assert isinstance(last, ast.Expr) and ast.unparse(last) == "__tb_res"
    assert "__tb_res = ['TOKEN']" in code
    assert code.count("__tb_note(") == 1 + 1 + 5 * 2 + 4  # def, prelude, tests, setups
    assert "def __tb_check(candidate):" in code


def test_a_restart_skips_earlier_tests_but_keeps_setup() -> None:
    p = plan(_problem(HUMANEVAL_TEST))
    code = harness(p, "T", 3)
    assert "__tb_at[0] = 2" not in code and "__tb_at[0] = 3" in code
    assert "METADATA" in code and "import math" in code and "helper = " in code


def test_prompts_that_do_not_parse_keep_only_their_imports() -> None:
    pro = SelfInvokingProblem(
        task_id="P",
        raw_problem="def base(x):\n    '''doc'''\n",
        new_problem="import math\nfrom typing import List\ndef top(xs: List[int]) -> int:\n",
        test_code="assert top([1]) == 1\n",
    )
    p = plan(pro)
    assert p.entry_points == ("top", "base")
    assert "import math" in p.prelude and "def base" in p.prelude
    broken = _problem("assert inc(1) == 2\n", prompt="import os\ndef inc(x:\n")
    assert plan(broken).prelude == "import os\n"


@pytest.mark.parametrize(
    ("test", "message"),
    [("def check(candidate):\n    x = 1\n", "no tests"), ("assert (\n", "does not parse")],
)
def test_tests_that_cannot_be_run_are_refused(test: str, message: str) -> None:
    with pytest.raises(ProblemError, match=message):
        plan(_problem(test))
