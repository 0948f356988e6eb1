"""Framed messages between the host and a worker.

A frame is ``u32 header length | u32 blob length | JSON header | blob``. The header is a JSON
object with an ``op`` key; the blob carries pickled values for put/get and is empty otherwise.

The worker trusts the host and reads blocking. The host does not trust the worker: it reads
through :class:`FrameReader`, which never blocks, bounds every size and rejects malformed
frames. This module is imported inside the sandbox, so it stays dependency-free.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

_PREFIX = struct.Struct("<II")

Message = dict[str, Any]


class FrameError(Exception):
    """The peer broke the framing (bad JSON, oversized frame)."""


def encode(msg: Message, blob: bytes | memoryview = b"") -> list[bytes | memoryview]:
    head = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode()
    parts: list[bytes | memoryview] = [_PREFIX.pack(len(head), len(blob)) + head]
    if blob:
        parts.append(blob)
    return parts


def send(sock: socket.socket, msg: Message, blob: bytes | memoryview = b"") -> None:
    parts = encode(msg, blob)
    if len(parts) == 1:
        sock.sendall(parts[0])
    else:
        sock.sendall(parts[0])
        sock.sendall(parts[1])


def _recv_exactly(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise EOFError("peer closed the channel")
        got += k
    return buf


def recv_blocking(sock: socket.socket) -> tuple[Message, bytes]:
    """Read one frame from a trusted peer (the worker reading the host)."""
    head_len, blob_len = _PREFIX.unpack(_recv_exactly(sock, _PREFIX.size))
    msg = json.loads(_recv_exactly(sock, head_len))
    blob = bytes(_recv_exactly(sock, blob_len)) if blob_len else b""
    return msg, blob


class FrameReader:
    """Incremental, bounded frame parser for bytes from an untrusted peer."""

    def __init__(self, max_header: int, max_blob: int) -> None:
        self._buf = bytearray()
        self._max_header = max_header
        self._max_blob = max_blob

    def feed(self, data: bytes) -> list[tuple[Message, bytes]]:
        self._buf += data
        frames: list[tuple[Message, bytes]] = []
        while len(self._buf) >= _PREFIX.size:
            head_len, blob_len = _PREFIX.unpack_from(self._buf)
            if head_len > self._max_header:
                raise FrameError(f"header of {head_len} bytes exceeds {self._max_header}")
            if blob_len > self._max_blob:
                raise FrameError(f"payload of {blob_len} bytes exceeds {self._max_blob}")
            end = _PREFIX.size + head_len + blob_len
            if len(self._buf) < end:
                break
            try:
                msg = json.loads(self._buf[_PREFIX.size : _PREFIX.size + head_len])
            except (ValueError, UnicodeDecodeError) as exc:
                raise FrameError(f"header is not JSON: {exc}") from None
            if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
                raise FrameError("header is not an object with an 'op'")
            blob = bytes(self._buf[_PREFIX.size + head_len : end])
            del self._buf[:end]
            frames.append((msg, blob))
        return frames
