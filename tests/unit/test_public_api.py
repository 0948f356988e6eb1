"""The public surface is curated: __all__ is sorted, complete, and the error tree is as drawn."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import tracebox
from tracebox import errors


def test_all_is_sorted_and_resolvable() -> None:
    assert list(tracebox.__all__) == sorted(tracebox.__all__)
    for name in tracebox.__all__:
        assert hasattr(tracebox, name), name


def test_every_error_is_exported_and_rooted() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]
    assert {c.__name__ for c in classes} == set(errors.__all__)
    for cls in classes:
        assert issubclass(cls, tracebox.TraceboxError), cls
        assert cls.__name__ in tracebox.__all__, cls
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from the tree"


@pytest.mark.parametrize(
    ("leaf", "builtin"),
    [
        (errors.NameNotFound, KeyError),
        (errors.TransferError, ValueError),
        (errors.SandboxError, RuntimeError),
    ],
)
def test_leaves_also_inherit_the_builtin(leaf: type, builtin: type) -> None:
    assert issubclass(leaf, builtin)


def test_name_not_found_message_is_not_quoted_like_a_key_error() -> None:
    assert str(errors.NameNotFound("name 'x' is not defined")) == "name 'x' is not defined"


def test_the_sandbox_side_does_not_load_host_side_modules() -> None:
    """Every worker is a fork of the template: what the template imports, each worker carries."""
    code = (
        "import sys, tracebox.worker.zygote\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'typer', 'rich') or m.startswith('tracebox.session'))\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
