"""What a session tells its journal, and the one interface a journal offers it.

The journal itself (``tracebox.journal``) lives on the host, outside every sandbox; a
session appends one event per operation and acknowledges the operation only once
``append`` has returned, that is once the entry is durable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["JournalSink", "digest"]


class JournalSink(Protocol):
    def append(
        self, session: str, kind: str, data: Mapping[str, Any], blob: bytes | None = None
    ) -> int:
        """Append one event; return its sequence number once it is durable."""
        ...

    def close(self) -> None: ...


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
