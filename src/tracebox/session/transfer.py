"""Moving Python values across the sandbox boundary.

Into a session: ordinary pickle (protocol 5); the worker trusts the host.
Out of a session: the bytes come from hostile code, and unpickling can run any callable it
names. So the host unpickles with an allow-list of plain value types only; anything else is
refused with a clear error instead of being constructed.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from tracebox.errors import UnpicklableValue, ValueTooLarge

# Protocol 5 writes str, bytes, bytearray, int, float, list, tuple, dict, set and frozenset with
# opcodes of their own; only these other types are rebuilt by calling a global. None of them
# can turn a small pickle into a large object (no int sizes, no lazy ranges to materialise):
# the host's memory stays proportional to the bytes it was sent.
SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("builtins", "complex"), ("builtins", "slice")}
    | {("collections", name) for name in ("OrderedDict", "deque", "Counter")}
    | {("datetime", name) for name in ("date", "time", "datetime", "timedelta", "timezone")}
    | {("decimal", "Decimal"), ("fractions", "Fraction"), ("uuid", "UUID")}
)


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise UnpicklableValue(
            f"refusing to rebuild {module}.{name} from the sandbox: only plain data (numbers, "
            "strings, bytes, list, tuple, dict, set, datetime, Decimal, ...) can be taken out; "
            "convert it inside the session first (e.g. to a dict or a JSON string)"
        )


def dumps(value: object, limit: int) -> bytes:
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception as exc:
        raise UnpicklableValue(
            f"cannot pickle {type(value).__name__} to send it into the session: {exc}"
        ) from exc
    if len(data) > limit:
        raise ValueTooLarge(f"value pickles to {len(data)} bytes; the limit is {limit}")
    return data


def loads_untrusted(data: bytes) -> Any:
    try:
        return _SafeUnpickler(io.BytesIO(data)).load()
    except UnpicklableValue:
        raise
    except Exception as exc:
        raise UnpicklableValue(f"malformed value from the session: {exc!r}") from None
