"""How a journal row is hashed, and the head record that pins the end of the chain.

Each row's ``hash`` is ``H(prev_hash || header || LF || data)`` where ``H`` is SHA-256, or
HMAC-SHA256 under the journal's key when it has one; ``header`` is the compact JSON of
``[format, seq, session, kind, at, sha256(blob) or null]`` (a complete JSON value, so where
it ends is never in doubt) and ``data`` the stored JSON text itself, UTF-8. Row 0 is the
genesis row; its ``prev_hash`` is 32 zero bytes. A row can therefore not be edited, removed
or moved without breaking the chain at that seq, unless every later hash is recomputed too
(which needs the key, if there is one).

A chain alone cannot see rows cut from its end. The head record, a small file beside the
database (``<journal>-head``), holds the seq and hash of the last committed row; it is
rewritten after every commit, so it is never ahead of the database. A journal whose last
row is older than its head has lost its tail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any

FORMAT = 1
ZERO = bytes(32)
GENESIS = "genesis"
_HEAD_MAGIC = "tracebox-journal-head"
_HEAD_LEN = 160  # fixed: a rewrite overwrites the whole record in one small write


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_HEADER = json.JSONEncoder(separators=(",", ":"))


def canonical_json(data: Any) -> str:
    """The one JSON text of ``data``: sorted keys, no spaces, no NaN, UTF-8 as is."""
    return _CANONICAL.encode(data)


def blob_digest(blob: bytes | None) -> str | None:
    return None if blob is None else hashlib.sha256(blob).hexdigest()


Row = tuple[int, str, str, int, str, str | None]
"""What a row's hash covers besides ``prev_hash``: seq, session, kind, at, data, blob digest."""


def row_hash(key: bytes | None, prev_hash: bytes, row: Row) -> bytes:
    """The hash of one row (see the module docstring)."""
    seq, session, kind, at, data, digest = row
    header = _HEADER.encode([FORMAT, seq, session, kind, at, digest])
    h = hashlib.sha256() if key is None else hmac.new(key, digestmod=hashlib.sha256)
    h.update(prev_hash)
    h.update(header.encode())
    h.update(b"\n")
    h.update(data.encode())
    return h.digest()


def key_id(key: bytes) -> str:
    """A public fingerprint of a key, kept in the genesis row: says which key verifies."""
    return hmac.new(key, b"tracebox-journal-key-id", hashlib.sha256).hexdigest()[:16]


# -- the head record ------------------------------------------------------------------------


def head_path(journal: str) -> str:
    return journal + "-head"


@dataclass(frozen=True)
class Head:
    journal_id: str
    seq: int
    hash: bytes


def encode_head(head: Head) -> bytes:
    body = f"{_HEAD_MAGIC} {FORMAT} {head.journal_id} {head.seq:020d} {head.hash.hex()}"
    check = hashlib.sha256(body.encode()).hexdigest()[:16]
    return f"{body} {check}".ljust(_HEAD_LEN - 1).encode() + b"\n"


def decode_head(raw: bytes) -> Head:
    """The head in ``raw``; ``ValueError`` saying what is wrong with it."""
    try:
        parts = raw.decode("ascii").split()
    except UnicodeDecodeError:
        raise ValueError("the head record is not text") from None
    if len(parts) != 6 or parts[0] != _HEAD_MAGIC:
        raise ValueError("the head record is not a tracebox journal head")
    body = " ".join(parts[:5])
    if hashlib.sha256(body.encode()).hexdigest()[:16] != parts[5]:
        raise ValueError("the head record's checksum does not match (torn or edited)")
    if parts[1] != str(FORMAT):
        raise ValueError(f"the head record has format {parts[1]}, this tracebox reads {FORMAT}")
    return Head(parts[2], int(parts[3]), bytes.fromhex(parts[4]))


class HeadFile:
    """The head record of one journal, rewritten in place after every commit."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, head: Head) -> None:
        os.pwrite(self._fd, encode_head(head), 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_head(journal: str) -> Head | None:
    """The head record beside ``journal``, None if there is none; ``ValueError`` if broken."""
    try:
        with open(head_path(journal), "rb") as f:
            raw = f.read(_HEAD_LEN + 1)
    except FileNotFoundError:
        return None
    return decode_head(raw)


def parse_genesis(data: str) -> dict[str, Any]:
    """The genesis row's data; ``ValueError`` if it is not a JSON object."""
    meta = json.loads(data)
    if not isinstance(meta, dict):
        raise ValueError("the genesis row's data is not a JSON object")
    return meta
