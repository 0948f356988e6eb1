"""Framing between host and worker; the host side must survive anything the worker sends."""

from __future__ import annotations

import socket
import struct

import pytest

from tracebox.worker.protocol import FrameError, FrameReader, encode, recv_blocking, send


def _frame(msg: dict[str, object], blob: bytes = b"") -> bytes:
    return b"".join(encode(msg, blob))


def test_round_trip_over_a_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        send(a, {"op": "put", "name": "é"}, b"\x00" * 10)
        assert recv_blocking(b) == ({"op": "put", "name": "é"}, b"\x00" * 10)


def test_reader_handles_frames_split_at_every_byte() -> None:
    data = _frame({"op": "reply", "v": 1}, b"blob") + _frame({"op": "reply", "v": 2})
    reader = FrameReader(max_header=1024, max_blob=1024)
    frames = [f for i in range(len(data)) for f in reader.feed(data[i : i + 1])]
    assert frames == [({"op": "reply", "v": 1}, b"blob"), ({"op": "reply", "v": 2}, b"")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack("<II", 10**9, 0), "header"),
        (struct.pack("<II", 2, 10**12 % 2**32), "payload"),
        (struct.pack("<II", 3, 0) + b"{x}", "not JSON"),
        (struct.pack("<II", 2, 0) + b"[]", "object"),
        (struct.pack("<II", 4, 0) + b"\xff\xfe{}", "not JSON"),
        (struct.pack("<II", 11, 0) + b'{"op": 123}', "op"),
    ],
)
def test_reader_rejects_malformed_frames(data: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        FrameReader(max_header=1024, max_blob=1024).feed(data)
