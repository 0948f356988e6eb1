"""Host-side capture of a run's output: decoding, caps and the truncation marker."""

from __future__ import annotations

import logging

import pytest

from tracebox.session.output import Capture


def test_utf8_split_across_chunks_decodes_whole() -> None:
    cap = Capture("stdout", 100, None)
    data = "é€".encode()
    for i in range(len(data)):
        cap.feed(data[i : i + 1])
    assert cap.text() == "é€"


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    cap = Capture("stdout", 100, None)
    cap.feed(b"ok \xff\xfe end")
    assert cap.text() == "ok \ufffd\ufffd end"


def test_cap_keeps_a_prefix_and_says_how_much_was_cut() -> None:
    cap = Capture("stderr", 10, None)
    cap.feed(b"0123456789abc")
    cap.feed(b"def")
    text = cap.text()
    assert text.startswith("0123456789\n[tracebox: stderr truncated: 6 more bytes not shown")
    assert cap.dropped == 6


def test_streaming_callback_sees_text_in_order() -> None:
    seen: list[tuple[str, str]] = []
    cap = Capture("stdout", 100, lambda stream, text: seen.append((stream, text)))
    cap.feed(b"a")
    cap.feed(b"b\n")
    assert seen == [("stdout", "a"), ("stdout", "b\n")]


def test_a_failing_callback_is_disabled_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def boom(stream: str, text: str) -> None:
        calls.append(text)
        raise RuntimeError("hook failed")

    cap = Capture("stdout", 100, boom)
    with caplog.at_level(logging.ERROR, logger="tracebox"):
        cap.feed(b"a")
        cap.feed(b"b")
    assert calls == ["a"]
    assert cap.text() == "ab"
    assert "on_output callback failed" in caplog.text
