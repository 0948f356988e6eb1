"""Values out of a session are unpickled with an allow-list: hostile pickles build nothing."""

from __future__ import annotations

import collections
import datetime
import decimal
import os
import pickle
import uuid

import pytest

from tracebox.errors import UnpicklableValue, ValueTooLarge
from tracebox.session import transfer


class _RunsCommand:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_plain_data_round_trips() -> None:
    value = {
        "ints": [1, 2**100, -3],
        "floats": (1.5, float("inf")),
        "text": "é",
        "raw": b"\x00",
        "set": {1, 2},
        "frozen": frozenset({3}),
        "ba": bytearray(b"ab"),
        "c": 1 + 2j,
        "od": collections.OrderedDict(a=1),
        "sl": slice(1, None, 2),
        "dq": collections.deque([1, 2]),
        "counter": collections.Counter("aab"),
        "when": datetime.datetime(2026, 11, 22, tzinfo=datetime.UTC),
        "dec": decimal.Decimal("1.10"),
        "id": uuid.UUID(int=5),
        "none": None,
    }
    assert transfer.loads_untrusted(transfer.dumps(value, 1 << 20)) == value


class _Amplifies:
    """A few bytes of pickle asking the host to build gigabytes."""

    def __init__(self, factory: object, arg: object) -> None:
        self.factory, self.arg = factory, arg

    def __reduce__(self) -> tuple[object, tuple[object]]:
        return (self.factory, (self.arg,))


@pytest.mark.parametrize(
    "evil",
    [
        _RunsCommand(),
        pytest.raises,
        os.path.join,
        _Amplifies(bytearray, 4 << 30),
        _Amplifies(bytes, 4 << 30),
        _Amplifies(list, range(10**10)),
        _Amplifies(collections.deque, range(10**10)),
        collections.defaultdict(list),
        range(3),
    ],
)
def test_hostile_or_foreign_globals_are_refused(evil: object) -> None:
    with pytest.raises(UnpicklableValue, match="refusing to rebuild"):
        transfer.loads_untrusted(pickle.dumps(evil))


def test_malformed_bytes_are_a_typed_error() -> None:
    with pytest.raises(UnpicklableValue, match="malformed"):
        transfer.loads_untrusted(b"\x80\x05garbage")


def test_unpicklable_and_oversized_values_fail_before_sending() -> None:
    with pytest.raises(UnpicklableValue, match="cannot pickle function"):
        transfer.dumps(lambda: 1, 1 << 20)
    with pytest.raises(ValueTooLarge, match="limit is 100"):
        transfer.dumps(b"x" * 1000, 100)
