"""Comparing a program's output with the expected one (stdin/stdout problems), on the host."""

from __future__ import annotations

import pytest

from tracebox.verify import OutputMatch, outputs_match

EXACT = OutputMatch(mode="exact")
LINES = OutputMatch(mode="lines")
TOKENS = OutputMatch(mode="tokens")


def test_exact_is_byte_for_byte() -> None:
    assert outputs_match("1 2\n", "1 2\n", EXACT)
    assert not outputs_match("1 2 \n", "1 2\n", EXACT)
    assert not outputs_match("1 2", "1 2\n", EXACT)


@pytest.mark.parametrize(
    "actual", ["1 2\n3\n", "1 2   \n3\n", "1 2\n3", "1 2\n3\n\n\n", "1 2\r\n3\r\n"]
)
def test_lines_ignore_trailing_whitespace_and_blank_lines(actual: str) -> None:
    assert outputs_match(actual, "1 2\n3\n", LINES)
    assert outputs_match(actual, "1 2\n3\n")  # the default


@pytest.mark.parametrize("actual", ["1  2\n3\n", " 1 2\n3\n", "1 2 3\n", "1 2\n\n3\n"])
def test_lines_keep_everything_else(actual: str) -> None:
    assert not outputs_match(actual, "1 2\n3\n", LINES)


def test_tokens_ignore_all_whitespace_but_not_token_boundaries() -> None:
    assert outputs_match("1\n2   3", "1 2 3\n", TOKENS)
    assert not outputs_match("12 3", "1 2 3", TOKENS)
    assert not outputs_match("1 2", "1 2 3", TOKENS)


def test_float_tolerance_compares_numbers_token_by_token() -> None:
    tol = OutputMatch(mode="tokens", float_tolerance=1e-6)
    assert outputs_match("0.3333333\n", "0.33333333333\n", tol)
    assert outputs_match("YES 1e6\n", "YES 1000000.0000001", tol)
    assert not outputs_match("0.3334\n", "0.3333\n", tol)
    assert not outputs_match("yes 1\n", "YES 1\n", tol)
    assert not outputs_match("nan\n", "nan\n".upper(), tol)
    assert outputs_match("inf\n", "inf\n", tol)  # the same token is always equal


def test_float_tolerance_works_with_lines_mode_too() -> None:
    assert outputs_match("1.0000001\n", "1.0\n", OutputMatch(mode="lines", float_tolerance=1e-3))
