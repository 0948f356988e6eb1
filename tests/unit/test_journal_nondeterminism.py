"""Reading code and outputs for sources of nondeterminism (what replay blames a mismatch on)."""

from __future__ import annotations

import textwrap

import pytest

from tracebox.journal.nondeterminism import find_suspects, output_suspects, used_names


def _sources(code: str) -> list[str]:
    return [s.source for s in find_suspects(textwrap.dedent(code))]


@pytest.mark.parametrize(
    ("code", "source"),
    [
        ("import time\nt = time.time()", "time"),
        ("import time as clock\nclock.perf_counter_ns()", "time"),
        ("from time import monotonic\nmonotonic()", "time"),
        ("import datetime\ndatetime.datetime.now()", "time"),
        ("from datetime import datetime\ndatetime.utcnow()", "time"),
        ("from datetime import date\ndate.today()", "time"),
        ("import random\nrandom.random()", "random"),
        ("from random import choice\nchoice([1, 2])", "random"),
        ("import numpy as np\nnp.random.rand(3)", "random"),
        ("import secrets\nsecrets.token_hex()", "random"),
        ("import random\nrandom.Random().random()", "random"),
        ("import uuid\nuuid.uuid4()", "uuid"),
        ("import os\nos.urandom(8)", "urandom"),
        ("x = object()\nid(x)", "identity"),
        ("print({'a', 'b'})", "order"),
        ("s = {c for c in 'abc'}", "order"),
        ("print(open('f').read())", "filesystem"),
        ("import os\nos.listdir('.')", "filesystem"),
        ("from pathlib import Path\nPath('.').iterdir()", "filesystem"),
        ("import os\nos.environ['HOME']", "environment"),
        ("import os\nos.getpid()", "environment"),
        ("import threading\nthreading.Thread(target=print).start()", "concurrency"),
    ],
)
def test_sources_are_found(code: str, source: str) -> None:
    assert source in _sources(code)


@pytest.mark.parametrize(
    "code",
    [
        "x = 1 + 1\nprint(x)",
        "import uuid\nuuid.uuid5(uuid.NAMESPACE_DNS, 'a')",
        "import random\nrandom.seed(42)\nrandom.random()",
        "import random\nr = random.Random(7)\nr.random()",
        "import numpy as np\nnp.random.seed(0)\nnp.random.rand()",
        "def f(:",  # does not parse: nothing to say
    ],
)
def test_deterministic_code_has_no_suspects(code: str) -> None:
    assert _sources(code) == []


def test_suspects_carry_line_and_step() -> None:
    (s,) = find_suspects("x = 1\nimport time\ny = time.time()", seq=7)
    assert (s.source, s.seq) == ("time", 7)
    assert s.evidence == "line 3: time.time()"


def test_feeding_keeps_what_binds_the_names_read_later() -> None:
    code = "import time, random\nt = time.time()\nr = random.random()\ndef f():\n    return id(1)"
    assert [s.source for s in find_suspects(code, feeding=frozenset({"t"}))] == ["time"]
    assert [s.source for s in find_suspects(code, feeding=frozenset({"r"}))] == ["random"]
    assert [s.source for s in find_suspects(code, feeding=frozenset({"f"}))] == ["identity"]
    assert used_names("print(t + r)") == {"print", "t", "r"}


@pytest.mark.parametrize(
    ("a", "b", "source"),
    [
        (
            "id 3f2b8a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
            "id 9e8d7c6b-5a49-4382-b1a0-f9e8d7c6b5a4",
            "uuid",
        ),
        ("<Foo object at 0x7f3a2c1b0d90>", "<Foo object at 0x7f3a2c1b1e40>", "identity"),
        ("started 1795316311.125", "started 1795316312.5", "time"),
        ("at 2026-11-22 03:02:52.1", "at 2026-11-22 03:02:53.4", "time"),
        ("{'b', 'a', 'c'}", "{'a', 'c', 'b'}", "order"),
    ],
)
def test_outputs_say_how_they_differ(a: str, b: str, source: str) -> None:
    assert source in [s.source for s in output_suspects(a, b)]


def test_equal_or_unrelated_outputs_blame_nothing() -> None:
    assert output_suspects("same", "same") == []
    assert output_suspects("1\n", "2\n") == []
    assert output_suspects(None, "x") == []
