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
    head = json.dumps(msg, separators=(",", ":")).encode()  # ASCII: lone surrogates survive
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
    """Incremental, bounded frame parser for bytes from an untrusted peer.

    Chunks are kept as a list and joined once per complete frame, so a 100 MB value costs
    one copy rather than one per received chunk.
    """

    def __init__(self, max_header: int, max_blob: int) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._need: int | None = None  # length of the frame being received, once known
        self._max_header = max_header
        self._max_blob = max_blob

    def _joined(self) -> bytes:
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""

    def feed(self, data: bytes) -> list[tuple[Message, bytes]]:
        if data:
            self._chunks.append(data)
            self._size += len(data)
        frames: list[tuple[Message, bytes]] = []
        while True:
            if self._need is None:
                if self._size < _PREFIX.size:
                    return frames
                head_len, blob_len = _PREFIX.unpack_from(self._joined())
                if head_len > self._max_header:
                    raise FrameError(f"header of {head_len} bytes exceeds {self._max_header}")
                if blob_len > self._max_blob:
                    raise FrameError(f"payload of {blob_len} bytes exceeds {self._max_blob}")
                self._need = _PREFIX.size + head_len + blob_len
            if self._size < self._need:
                return frames
            buf, end = self._joined(), self._need
            body = _PREFIX.size + _PREFIX.unpack_from(buf)[0]
            frames.append((_parse_header(buf[_PREFIX.size : body]), buf[body:end]))
            rest = buf[end:]
            self._chunks, self._size, self._need = ([rest] if rest else []), len(rest), None


def _parse_header(head: bytes) -> Message:
    try:
        msg = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FrameError(f"header is not JSON: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise FrameError("header is not an object with an 'op'")
    return msg
