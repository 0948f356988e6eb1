"""Traces as data: JSON round trips, strict validation of untrusted input, same bytes."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from trace_corpus import PROGRAMS, compile_program

from tracebox.errors import ProtocolError
from tracebox.trace import Settings, Trace, TraceConfig, record

HERE = Path(__file__).parent


def full_trace(name: str = "classes") -> Trace:
    return record(compile_program(name), TraceConfig(mode="full"))


@pytest.mark.parametrize("mode", ["full", "steps", "coverage"])
def test_a_trace_survives_the_wire(mode: str) -> None:
    trace = record(compile_program("exceptions_caught"), TraceConfig(mode=mode))  # type: ignore[arg-type]
    raw = trace.to_json()
    assert Trace.from_json(raw) == trace
    assert Trace.from_wire(json.loads(raw)) == trace
    assert Trace.from_json(raw).to_json() == raw


def test_truncated_and_failed_traces_survive_the_wire() -> None:
    trace = record("x = 1\ny = 2\nz = 1 / 0\n", TraceConfig(mode="full", max_steps=3))
    assert trace.truncation is not None and trace.error is not None
    assert Trace.from_json(trace.to_json()) == trace


def _break(wire: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(wire)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("format",), "tracebox.trace/2"),
        (("mode",), "everything"),
        (("python",), "3.13; rm -rf /"),
        (("steps", 0, 0), "jump"),
        (("steps", 0, 1), 999),  # no such frame
        (("steps", 0, 2), -1),
        (("steps", 0, 3), True),  # a bool is not a line
        (("steps", 1, 5), {"x": ["1", "int", 0, False]}),  # ids start at 1
        (("steps", 1, 5), {"x": ["1", "int"]}),
        (("steps", 1, 8), [1, 2, 3]),
        (("frames", 0), ["<module>", "<cell-1>"]),
        (("counts", "calls"), "7"),
        (("truncation",), {"step": 0, "reason": "max_steps", "limit": 1, "dropped": "x"}),
        (("surprise",), 1),
    ],
)
def test_malformed_traces_are_protocol_errors(path: tuple[Any, ...], value: Any) -> None:
    wire = json.loads(full_trace().to_json())  # what a host receives: parsed JSON
    with pytest.raises(ProtocolError):
        Trace.from_wire(_break(wire, path, value))


def test_garbage_is_a_protocol_error() -> None:
    for raw in (b"", b"[]", b"{", b'{"format": "tracebox.trace/1"}', b"\xff"):
        with pytest.raises(ProtocolError):
            Trace.from_json(raw)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_the_same_program_gives_the_same_bytes_twice_in_process(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = full_trace(name).to_json()
    assert full_trace(name).to_json() == first


def test_the_same_program_gives_the_same_bytes_in_two_processes() -> None:
    script = (
        "import hashlib, sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from trace_corpus import PROGRAMS, compile_program\n"
        "from tracebox.trace import TraceConfig, record\n"
        "for name in sorted(PROGRAMS):\n"
        "    raw = record(compile_program(name), TraceConfig(mode='full')).to_json()\n"
        "    print('DIGEST', name, hashlib.sha256(raw).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    digests = {
        line.split()[1]: line.split()[2]
        for line in runs[0].splitlines()
        if line.startswith("DIGEST ")
    }
    assert set(digests) == set(PROGRAMS)
    here = hashlib.sha256(full_trace("recursion").to_json()).hexdigest()
    assert digests["recursion"] == here  # and the same as in this process


def test_the_worker_side_needs_no_pydantic() -> None:
    script = (
        "import sys\n"
        "from tracebox.trace.recorder import record\n"
        "t = record('x = [1]\\n', {'mode': 'full', 'max_steps': 100})\n"
        "raw = t.to_json()\n"
        "print(len(t), 'pydantic' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["3", "False"]


def test_a_config_crosses_to_the_worker_as_plain_settings() -> None:
    config = TraceConfig(mode="steps", max_steps=5, include=("*.py",), files=("a.py",))
    settings = Settings.from_wire(json.loads(json.dumps(config.to_wire())))
    assert settings == config.settings()
    assert (settings.mode, settings.max_steps, settings.include) == ("steps", 5, ("*.py",))
    assert settings.is_user_file("x.py") and settings.is_user_file("a.py")
    assert not settings.is_user_file("<cell-1>")


@pytest.mark.parametrize(
    "bad",
    [{"mode": "all"}, {"max_steps": 0}, {"max_steps": True}, {"include": "x"}, {"surprise": 1}],
)
def test_bad_settings_are_refused_on_both_sides(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"trace setting|mode|positive"):
        Settings.from_wire(bad)
    with pytest.raises(ValidationError):
        TraceConfig(**bad)


def test_trace_config_is_frozen() -> None:
    config = TraceConfig()
    with pytest.raises(ValidationError):
        config.mode = "steps"  # type: ignore[misc]
